"""Checkpoints: our own plain-state-dict files, encoder export, and public-checkpoint import.

Our files are ``torch.save({"model": state_dict, "meta": {...plain types...}})`` written
atomically, and every load uses ``torch.load(..., weights_only=True)``.

Public checkpoints are mapped onto our models by key and shape, never loaded blindly:

* ``image_mae``  - facebookresearch/mae ``mae_pretrain_vit_*.pth`` (``cls_token``,
  ``pos_embed`` [1,197,768], ``patch_embed.proj.weight`` [768,3,16,16], ``blocks.N.*``,
  ``norm.*`` and, in the ``_full`` files, ``decoder_*`` / ``mask_token``);
* ``audio_mae``  - facebookresearch/AudioMAE ``pretrained.pth`` (same ViT names with
  ``patch_embed.proj.weight`` [768,1,16,16], ``pos_embed`` [1,513,768]; its decoder is a
  Swin decoder by default, which we do not have);
* ``cav_mae``    - YuanGongND/cav-mae (``module.`` prefix; ``patch_embed_a/v``,
  ``blocks_a/v/u``, ``norm_a/v``, ``norm``, ``modality_a/v``, ``pos_embed_a/v``,
  ``decoder_*``, ``mlp_head.*`` in fine-tuned files).

Every mapping returns a :class:`MappingReport`: which target keys were filled from which
source key (and how), which source keys were ignored and why, and which target keys stayed
unfilled. The mapping tables live in :mod:`train.checkpoint_maps`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from store.atomic import atomic_write

FORMAT_VERSION = 1
LAYOUTS = ("image_mae", "audio_mae", "cav_mae")


class CheckpointError(Exception):
    """A checkpoint file is unreadable or does not fit the model; the message names the file."""


# --------------------------------------------------------------------------- our own files
def strip_prefixes(state: Mapping[str, torch.Tensor], prefixes: Iterable[str] = ("module.",)
                   ) -> dict[str, torch.Tensor]:
    """Keys without wrapper prefixes, removed in the given order: DistributedDataParallel /
    DataParallel ``module.``, and ``student.`` of a MAViL stage-2 model."""
    prefixes = tuple(prefixes)
    out = {}
    for key, value in state.items():
        for prefix in prefixes:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / DataParallel (no ``module.`` keys)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def _plain(meta: Mapping[str, Any], path: Path) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(meta)))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: meta must hold plain types only ({exc})") from exc


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module | Mapping[str, torch.Tensor],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``{"model": state_dict, "meta": meta}`` atomically (temp file + rename)."""
    path = Path(path)
    state = _unwrap(model).state_dict() if isinstance(model, nn.Module) else dict(model)
    state = {k: v.detach().cpu() for k, v in state.items()}
    payload = {"model": state, "meta": {"format_version": FORMAT_VERSION,
                                        **_plain(meta or {}, path)}}
    return atomic_save(path, payload)


def atomic_save(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """``torch.save`` whole or not at all (``store.atomic``): a kill never leaves a half file."""
    return atomic_write(path, lambda fh: torch.save(dict(payload), fh))


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:  # training scripts (MAE, AudioMAE) also pickle their argparse Namespace: allow it
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc


def _check_tensors(state: Any, path: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path}: {what} is not a non-empty dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{path}: {what} holds non-tensor entries, e.g. {bad[:3]}")
    return dict(state)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read one of our checkpoints; returns ``(state_dict, meta)``."""
    path = Path(path)
    obj = _torch_load(path)
    if not isinstance(obj, Mapping) or "model" not in obj:
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict")
    meta = obj.get("meta", {})
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{path}: 'meta' is not a dict")
    if int(meta.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer version "
                              f"(format {meta['format_version']} > {FORMAT_VERSION})")
    return _check_tensors(obj["model"], path, "'model'"), dict(meta)


def load_into(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> dict[str, Any]:
    """Load one of our checkpoints into ``model``; shape/key problems name the file."""
    state, meta = load_checkpoint(path)
    model = _unwrap(model)
    own = model.state_dict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
             if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state] if strict else []
    unexpected = [k for k in state if k not in own] if strict else []
    if wrong or missing or unexpected:
        raise CheckpointError(
            f"{path}: does not fit {type(model).__name__}: {len(wrong)} shape mismatches "
            f"(e.g. {wrong[:3]}), {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    result = model.load_state_dict(state, strict=strict)
    meta["missing_keys"] = list(result.missing_keys)
    meta["unexpected_keys"] = list(result.unexpected_keys)
    return meta


def encoder_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The encoder part of a pre-training model (what fine-tuning keeps).

    A model may define ``encoder_keys()``; otherwise every entry with a ``decoder*``,
    ``*_decoder`` (MAViL's ``audio_decoder``) or ``mask_token*`` path component is dropped.
    """
    model = _unwrap(model)
    state = model.state_dict()
    if hasattr(model, "encoder_keys"):
        keep = set(model.encoder_keys())
        return {k: v for k, v in state.items() if k in keep}

    def is_decoder(key: str) -> bool:
        return any(part.startswith(("decoder", "mask_token")) or part.endswith("_decoder")
                   for part in key.split("."))

    return {k: v for k, v in state.items() if not is_decoder(k)}


# --------------------------------------------------------------------------- public files
@dataclass
class MappingReport:
    """What a public-checkpoint mapping did, key by key."""

    source: str
    layout: str
    loaded: dict[str, str] = field(default_factory=dict)   # target key -> "src key (how)"
    ignored: dict[str, str] = field(default_factory=dict)  # source key -> reason
    missing: list[str] = field(default_factory=list)       # target keys left as they were

    def summary(self) -> str:
        return (f"{self.source} [{self.layout}]: {len(self.loaded)} target tensors filled, "
                f"{len(self.ignored)} source tensors ignored, {len(self.missing)} target "
                f"tensors not in the checkpoint")


def read_public_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a public checkpoint with ``weights_only=True`` and unwrap it.

    Accepts a bare state dict or one under ``model`` / ``state_dict``, and strips the
    ``module.`` prefix that DataParallel leaves (CAV-MAE files have it).
    """
    path = Path(path)
    obj = _torch_load(path)
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    return strip_prefixes(_check_tensors(obj, path, "checkpoint"))


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """Tell the three public layouts apart by their characteristic keys."""
    if "patch_embed_a.proj.weight" in state or "blocks_u.0.attn.qkv.weight" in state:
        return "cav_mae"
    w = state.get("patch_embed.proj.weight")
    if w is not None and w.dim() == 4:
        return "audio_mae" if w.shape[1] == 1 else "image_mae"
    raise CheckpointError("unknown checkpoint layout: no patch_embed(_a).proj.weight key")


def map_public_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module, layout: str | None = None,
    source: str = "<state dict>", with_decoder: bool = False,
) -> tuple[dict[str, torch.Tensor], MappingReport]:
    """Translate a public state dict into ``model``'s key names and shapes.

    ``with_decoder`` also maps an image-MAE / AudioMAE decoder (CAV-MAE's initialisation);
    a CAV-MAE file always maps whatever of it the model has.
    """
    from train import checkpoint_maps

    state = strip_prefixes(state)
    try:
        layout = layout or detect_layout(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    if layout not in LAYOUTS:
        raise CheckpointError(f"{source}: unknown layout {layout!r}; expected one of {LAYOUTS}")
    target = model.state_dict()
    report = MappingReport(source=source, layout=layout)
    if layout == "cav_mae":
        plan = checkpoint_maps.plan_cav_mae(state, target, model)
    else:
        plan = checkpoint_maps.plan_vit(state, target, model, layout, with_decoder)
    mapped: dict[str, torch.Tensor] = {}
    for src_key in state:
        steps = plan.get(src_key)
        if isinstance(steps, str) or not steps:
            report.ignored[src_key] = steps or "no counterpart in this model"
            continue
        for tgt_key, fn, how in steps:
            value = fn(state[src_key])
            if tuple(value.shape) != tuple(target[tgt_key].shape):
                raise CheckpointError(
                    f"{source}: {src_key} {tuple(state[src_key].shape)} -> {tgt_key} gives "
                    f"{tuple(value.shape)} but the model needs {tuple(target[tgt_key].shape)}")
            mapped[tgt_key] = value.to(target[tgt_key].dtype)
            report.loaded[tgt_key] = f"{src_key} ({how})" if how else src_key
    report.missing = [k for k in target if k not in mapped]
    return mapped, report


def load_public_checkpoint(model: nn.Module, path: str | os.PathLike,
                           layout: str | None = None, require: Iterable[str] = (),
                           with_decoder: bool = False) -> MappingReport:
    """Map a public checkpoint file onto ``model`` in place and report what happened.

    ``require`` lists target-key prefixes that must be filled (e.g. ``["blocks_v."]``);
    a checkpoint that leaves any of them empty is rejected naming the file.
    """
    path, model = Path(path), _unwrap(model)
    state = read_public_state_dict(path)
    try:
        mapped, report = map_public_state_dict(state, model, layout, str(path), with_decoder)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - surface mapping failures with the file name
        raise CheckpointError(f"{path}: cannot map onto {type(model).__name__}: {exc}") from exc
    unfilled = [k for k in report.missing for p in require if k.startswith(p)]
    if unfilled:
        raise CheckpointError(f"{path}: leaves required weights unfilled, e.g. {unfilled[:5]}")
    model.load_state_dict(mapped, strict=False)
    return report


def _grouped(keys: Iterable[str]) -> dict[str, int]:
    """Collapse ``blocks.3.attn...`` style keys to ``blocks.*`` counts for a readable summary."""
    groups: dict[str, int] = {}
    for k in keys:
        name = f"{k.split('.')[0]}.*" if "." in k else k
        groups[name] = groups.get(name, 0) + 1
    return groups


def main(argv: list[str] | None = None) -> int:
    """``python -m train.checkpoints FILE --model NAME``: show how a public file would map."""
    import argparse as ap

    from train.models import build_model

    parser = ap.ArgumentParser(prog="python -m train.checkpoints", description=main.__doc__)
    parser.add_argument("path")
    parser.add_argument("--model", required=True, help="registered model name, e.g. cav_mae")
    parser.add_argument("--size", default="base")
    parser.add_argument("--layout", choices=LAYOUTS, default=None)
    parser.add_argument("--with-decoder", action="store_true")
    args = parser.parse_args(argv)
    with torch.device("meta"):
        model = build_model(args.model, args.size)
    model = model.to_empty(device="cpu")
    try:
        state = read_public_state_dict(args.path)
        _, report = map_public_state_dict(state, model, args.layout, args.path,
                                          args.with_decoder)
    except CheckpointError as exc:
        print(f"error: {exc}")
        return 1
    print(report.summary())
    reasons: dict[str, list[str]] = {}
    for key, why in report.ignored.items():
        reasons.setdefault(why, []).append(key)
    for why, keys in reasons.items():
        print(f"  ignored {_grouped(keys)}: {why}")
    print(f"  not in the checkpoint (kept as initialised): {_grouped(report.missing)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
