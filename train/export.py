"""Weights out of a run: ``train export`` (encoder only) and ``train average`` (epoch mean).

    train export RUN_OR_CKPT --out ENCODER.pt
    train average RUN --epochs A:B --out CKPT

Both write one file atomically (temp file + fsync + rename) holding tensors and plain
containers only, so ``torch.load(path, weights_only=True)`` reads it:
``{"format_version", "model": state dict, "config": the run's config (plain dict), "step",
"epoch"}``, with ``config["export"]`` / ``config["average"]`` saying what was done.

* ``export`` keeps what fine-tuning keeps (MAE / AudioMAE ``main_finetune.py`` load the
  encoder and drop the decoder), as :func:`train.checkpoints.encoder_state_dict` decides:
  for MAViL the audio and video encoders and the fusion encoder, without ``*_decoder.*``
  and mask tokens; a model that lists its encoder (CAV-MAE ``encoder_keys()``) decides
  itself. Optimizer and loader state are left
  out. ``config["stage"]`` stays ``stage1`` / ``stage2``, so the file is a valid
  ``train run finetune --init`` (``MAViLClassifier.load_pretrained`` loads every encoder
  key from it) and a stage-2 teacher; other projects read ``["model"]``
  (``train.checkpoints.read_public_state_dict`` unwraps it).
* ``average`` is CAV-MAE / AST weight averaging (``wa_model`` in their fine-tuning
  scripts): the uniform mean of the model weights saved at the end of epochs A..B, both
  ends included, epochs counted from 1 as the files ``RUN/checkpoints/epoch_NNNN.pt`` are
  (CAV-MAE's AS-20K script averages epochs 3..15 of 15). Floating tensors are averaged in
  float64 and stored in their own dtype; integer buffers must agree and are copied. The
  result loads with :func:`train.trained.load_trained`; it has no optimizer state, so it is
  a result, not a point to resume from (it may not be written into ``RUN/checkpoints``).
"""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from train.checkpoints import CheckpointError, atomic_save, encoder_state_dict
from train.trained import resolve_checkpoint

FORMAT_VERSION = 1
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


# --------------------------------------------------------------------------- files
def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint (file or RUN dir) read with ``weights_only=True`` and memory-mapped, so
    the optimizer state of a large run is not read into memory; errors name the file."""
    p = resolve_checkpoint(path)
    try:  # legacy (non-zip) torch files cannot be memory-mapped
        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(p))
    except Exception as exc:  # noqa: BLE001 - truncated, pickled object, not a torch file
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text:
            raise CheckpointError(f"{p}: refused: it holds a pickled Python object that could "
                                  "run code when loaded; only tensors and plain containers "
                                  "are accepted") from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(f"{p}: truncated or damaged ({first[:200]})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) \
            or not isinstance(ckpt.get("config"), dict):
        raise CheckpointError(f"{p}: not a training checkpoint of this project "
                              "(expected a dict with 'model' and 'config')")
    return ckpt


def _payload(model: dict[str, torch.Tensor], ckpt: dict[str, Any], **config_note: Any
             ) -> dict[str, Any]:
    config = {**ckpt["config"], **config_note}
    return {"format_version": FORMAT_VERSION,
            "model": {k: v.detach().clone().contiguous() for k, v in model.items()},
            "config": config, "step": int(ckpt.get("step", 0)),
            "epoch": int(ckpt.get("epoch", 0))}


# --------------------------------------------------------------------------- export
def encoder_weights(state: dict[str, torch.Tensor], config: dict[str, Any], source: Path
                    ) -> dict[str, torch.Tensor]:
    """The tensors fine-tuning keeps, chosen by :func:`train.checkpoints.encoder_state_dict`
    on the run's model (built on the meta device from the config, the weights assigned
    without copying, so a checkpoint that does not fit the model is refused)."""
    from train.models import build_model

    spec = config.get("model", {})
    try:
        with torch.device("meta"):
            model = build_model(spec["name"], spec.get("size", "base"),
                                **dict(spec.get("kwargs", {})))
        model.load_state_dict(state, strict=True, assign=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: its weights do not fit the model its config names "
                              f"({spec.get('name')}/{spec.get('size')}): {first[:200]}") from None
    return encoder_state_dict(model)


def export_encoder(source: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the encoder-only weights of a pre-training checkpoint; returns a report."""
    ckpt = read_checkpoint(source)
    src = resolve_checkpoint(source)
    stage = ckpt["config"].get("stage")
    if stage not in ("stage1", "stage2"):
        raise CheckpointError(f"{src}: a {stage} checkpoint; export takes a pre-training "
                              "(stage1 / stage2) checkpoint (a fine-tuned one is the result: "
                              "use it as it is)")
    state = ckpt["model"]
    encoder = encoder_weights(state, ckpt["config"], src)
    dropped = [k for k in state if k not in encoder]
    note = {"encoder_only": True, "source": str(src), "dropped": _groups(dropped)}
    atomic_save(out, _payload(encoder, ckpt, export=note))
    return {"source": str(src), "out": str(out), "kept": len(encoder), "dropped": len(dropped),
            "kept_params": sum(v.numel() for v in encoder.values()),
            "dropped_groups": note["dropped"]}


def _groups(keys: Sequence[str]) -> dict[str, int]:
    groups: dict[str, int] = {}
    for k in keys:
        groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + 1
    return groups


# --------------------------------------------------------------------------- average
def parse_epochs(text: str) -> tuple[int, int]:
    """``"A:B"`` -> (A, B), both included, 1 <= A <= B."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise ValueError(f"--epochs {text!r}: expected A:B with 1 <= A <= B (epochs count "
                         "from 1, both ends included), e.g. 3:15")
    return int(m[1]), int(m[2])


def epoch_files(run: str | Path) -> dict[int, Path]:
    """The run's ``checkpoints/epoch_NNNN.pt`` files by epoch number."""
    folder = Path(run) / "checkpoints"
    if not folder.is_dir():
        raise CheckpointError(f"{run}: not a run directory (no checkpoints/ folder)")
    return {int(m[1]): p for p in folder.iterdir() if (m := EPOCH_FILE.match(p.name))}


def mean_state_dicts(states: Sequence[dict[str, torch.Tensor]], names: Sequence[str]
                     ) -> dict[str, torch.Tensor]:
    """The uniform mean of state dicts with one set of keys and shapes (float64 sums)."""
    first, name0 = states[0], names[0]
    sums: dict[str, torch.Tensor] = {}
    for state, name in zip(states, names, strict=True):
        if set(state) != set(first):
            extra = sorted(set(state) ^ set(first))[:3]
            raise CheckpointError(f"{name}: its weights differ in keys from {name0} "
                                  f"(e.g. {extra}); not one model")
        for k, v in state.items():
            if v.shape != first[k].shape:
                raise CheckpointError(f"{name}: {k} is {tuple(v.shape)}, in {name0} "
                                      f"{tuple(first[k].shape)}; not one model")
            if v.is_floating_point():
                sums[k] = v.double() if k not in sums else sums[k] + v.double()
            elif not torch.equal(v, first[k]):
                raise CheckpointError(f"{name}: integer buffer {k} differs from {name0}")
    return {k: (sums[k] / len(states)).to(v.dtype) if k in sums else v.clone()
            for k, v in first.items()}


def average_epochs(run: str | Path, epochs: tuple[int, int], out: str | Path
                   ) -> dict[str, Any]:
    """Average the model weights of epochs A..B of ``run`` into ``out``; returns a report."""
    run, out = Path(run), Path(out)
    first, last = epochs
    if out.resolve().parent == (run / "checkpoints").resolve():
        raise CheckpointError(f"{out}: averaged weights are not a resume point; write them "
                              f"outside {run / 'checkpoints'}")
    files = epoch_files(run)
    wanted = list(range(first, last + 1))
    missing = [e for e in wanted if e not in files]
    if missing:
        have = f"{min(files)}..{max(files)}" if files else "none"
        raise CheckpointError(f"{run}: no checkpoint for epoch(s) {missing[:5]} "
                              f"(epoch files present: {have})")
    ckpts = [read_checkpoint(files[e]) for e in wanted]
    models = {c["config"].get("model", {}).get("name") for c in ckpts}
    if len(models) > 1:
        raise CheckpointError(f"{run}: epochs {first}..{last} hold different models {models}")
    averaged = mean_state_dicts([c["model"] for c in ckpts], [str(files[e]) for e in wanted])
    note = {"epochs": wanted, "sources": [str(files[e]) for e in wanted],
            "method": "uniform mean (CAV-MAE / AST wa)"}
    atomic_save(out, _payload(averaged, ckpts[-1], average=note))
    return {"out": str(out), "epochs": wanted, "tensors": len(averaged)}


# --------------------------------------------------------------------------- commands
def add_export_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("source", metavar="RUN_OR_CKPT",
                        help="a pre-training checkpoint, or a RUN dir (its last checkpoint)")
    parser.add_argument("--out", required=True, type=Path, help="the encoder file to write")
    return parser


def add_average_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("run", type=Path, metavar="RUN", help="the run directory")
    parser.add_argument("--epochs", required=True, metavar="A:B",
                        help="epochs to average, counted from 1, both ends included")
    parser.add_argument("--out", required=True, type=Path, help="the checkpoint to write")
    return parser


def _args(argv: Sequence[str] | argparse.Namespace | None, prog: str, adder: Any,
          doc: str) -> argparse.Namespace:
    if isinstance(argv, argparse.Namespace):
        return argv
    return adder(argparse.ArgumentParser(prog=prog, description=doc)).parse_args(argv)


def main_export(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """``train export RUN_OR_CKPT --out ENCODER.pt``: encoder-only weights for fine-tuning."""
    args = _args(argv, "train export", add_export_args, main_export.__doc__)
    try:
        r = export_encoder(args.source, args.out)
    except CheckpointError as exc:
        print(f"train export: error: {exc}", file=sys.stderr)
        return 2
    dropped = ", ".join(f"{k} ({n})" for k, n in r["dropped_groups"].items()) or "nothing"
    print(f"exported {r['kept']} encoder tensors ({r['kept_params'] / 1e6:.2f} M parameters) "
          f"from {r['source']} to {r['out']}; left out: {dropped}")
    return 0


def main_average(argv: Sequence[str] | argparse.Namespace | None = None) -> int:
    """``train average RUN --epochs A:B --out CKPT``: mean weights of epochs A..B."""
    args = _args(argv, "train average", add_average_args, main_average.__doc__)
    try:
        r = average_epochs(args.run, parse_epochs(args.epochs), args.out)
    except (CheckpointError, ValueError) as exc:
        print(f"train average: error: {exc}", file=sys.stderr)
        return 2
    print(f"averaged {len(r['epochs'])} epochs ({r['epochs'][0]}..{r['epochs'][-1]}, "
          f"{r['tensors']} tensors) of {args.run} into {r['out']}")
    return 0
