"""Named audio normalisation presets: ``x_norm = (x - mean) / (scale * std)`` on raw log-mel.

Each preset is a mean, a std and a scale (the extra factor on the std). The official code
the recipes follow divides differently, so the scale is part of the preset:

| name         | formula                            | source                                   |
| ------------ | ---------------------------------- | ---------------------------------------- |
| audiomae     | (x + 4.2677393) / (2 * 4.5689974)  | AudioSet: AudioMAE dataset.py / AST;     |
|              |                                    | MAViL Table 10 "AS" (-4.268 / 4.569)     |
| cavmae       | (x + 5.081) / 4.4849               | CAV-MAE dataloader.py, AS and VGGSound   |
| vggsound     | (x + 5.189) / (2 * 3.260)          | MAViL Table 10 "VGGSound"                |
| esc          | (x + 6.627) / (2 * 5.359)          | MAViL Table 10 "ESC" (AudioMAE code:     |
|              |                                    | -6.6268077 / 5.358466)                   |
| spc          | (x + 6.702) / (2 * 5.448)          | MAViL Table 10 "SPC"                     |
| spc_audiomae | (x + 6.845978) / (2 * 5.5654526)   | AudioMAE / AST code "speechcommands"     |
| store        | (x - fbank_mean) / (s * fbank_std) | the store's own ``pipeline stats``; s is |
|              |                                    | the view family's scale                  |

The MAViL presets use scale 2 because MAViL's code was never released and its authors built
on AudioMAE, whose ``dataset.py`` (like AST's) divides by ``2 * std``; CAV-MAE's own dataloader
divides by ``std`` alone. ``store`` takes the mean and std from the store the dataset reads
(resolved when the dataset opens it) and the scale of the view family (2 for MAViL / AudioMAE
views, 1 for CAV-MAE views). A padded frame (raw 0.0) becomes ``-mean / (scale * std)``:
0.467 with ``audiomae``, 1.133 with ``cavmae``.

A preset round-trips through a plain dict (``to_dict`` / :func:`audio_norm`), which is what a
run's config saves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class AudioNorm:
    """``(x - mean) / (scale * std)``; ``mean`` / ``std`` None only for an unresolved "store"."""

    name: str
    mean: float | None
    std: float | None
    scale: float = 1.0

    @property
    def resolved(self) -> bool:
        return self.mean is not None and self.std is not None

    def __call__(self, fbank: torch.Tensor) -> torch.Tensor:
        if not self.resolved:
            raise ValueError(
                f"normalisation {self.name!r} has no mean/std yet: build the dataset over the "
                "store (it fills them from store.json), or call resolve(stats)"
            )
        return (fbank - self.mean) / (self.scale * self.std)

    def resolve(self, stats: Mapping[str, Any] | None) -> AudioNorm:
        """The "store" preset with the store's ``fbank_mean`` / ``fbank_std`` filled in."""
        if self.resolved:
            return self
        stats = stats or {}
        if "fbank_mean" not in stats or "fbank_std" not in stats:
            raise ValueError(
                "norm 'store' needs the store's fbank stats, but store.json has none; run "
                "`pipeline stats STORE` or pick a preset such as 'audiomae'"
            )
        return AudioNorm(self.name, float(stats["fbank_mean"]), float(stats["fbank_std"]),
                         self.scale)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a run config: {"name", "mean", "std", "scale"}."""
        return asdict(self)

    def formula(self) -> str:
        """The exact formula, e.g. ``(x + 4.2677393) / (2 * 4.5689974)``."""
        if not self.resolved:
            return f"(x - store mean) / ({self.scale:g} * store std)"
        shift = f"x + {-self.mean!r}" if self.mean < 0 else f"x - {self.mean!r}"
        div = repr(self.std) if self.scale == 1 else f"({self.scale:g} * {self.std!r})"
        return f"({shift}) / {div}"

    def __repr__(self) -> str:
        return f"AudioNorm({self.name!r}: {self.formula()})"


PRESETS: dict[str, AudioNorm] = {
    "audiomae": AudioNorm("audiomae", -4.2677393, 4.5689974, 2.0),
    "cavmae": AudioNorm("cavmae", -5.081, 4.4849, 1.0),
    "vggsound": AudioNorm("vggsound", -5.189, 3.260, 2.0),
    "esc": AudioNorm("esc", -6.627, 5.359, 2.0),
    "spc": AudioNorm("spc", -6.702, 5.448, 2.0),
    "spc_audiomae": AudioNorm("spc_audiomae", -6.845978, 5.5654526, 2.0),
}
NORM_NAMES = (*PRESETS, "store")


def audio_norm(spec: str | Mapping[str, Any] | AudioNorm, scale: float | None = None
               ) -> AudioNorm:
    """A preset by name, a saved ``to_dict()`` (or any {"mean", "std", "scale"}), or itself.

    ``scale`` sets the factor of the "store" preset (the view family's; default 2)."""
    if isinstance(spec, AudioNorm):
        return spec
    if isinstance(spec, str):
        if spec == "store":
            return AudioNorm("store", None, None, 2.0 if scale is None else float(scale))
        if spec not in PRESETS:
            raise ValueError(f"unknown audio normalisation {spec!r}; choose one of "
                             f"{', '.join(NORM_NAMES)} or pass {{'mean', 'std', 'scale'}}")
        return PRESETS[spec]
    if isinstance(spec, Mapping):
        missing = {"mean", "std"} - set(spec)
        if missing:
            raise ValueError(f"audio normalisation dict lacks {sorted(missing)}: {dict(spec)}")
        name = str(spec.get("name", "custom"))
        if spec["mean"] is None and name == "store":
            return audio_norm("store", spec.get("scale", scale))
        return AudioNorm(name, float(spec["mean"]), float(spec["std"]),
                         float(spec.get("scale", 1.0)))
    raise TypeError(f"audio normalisation must be a name, a dict or an AudioNorm, not {spec!r}")
