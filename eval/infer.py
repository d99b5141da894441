"""`evaluate run`: score every clip of a split once, in resumable parts, on 1..N processes.

Work plan (a pure function of the store, split and missing-modality policy):

1. the split's clips with features, in index order; with ``missing="skip"`` clips lacking a
   modality the model takes are left out (counted), with ``"zero"`` they are scored with
   that input all zeros (the view's policy, store/views/sample.py; counted);
2. cut into parts of ``part_size`` clips; under torchrun rank r scores parts r, r + W, ...
   - every clip exactly once, no padding with duplicates and no dropped tail, whatever the
   world size; batches never cross a part, so a clip's score does not depend on W;
3. each part is written to ``DIR/parts/part-NNNNN.parquet`` atomically (temp file, fsync,
   rename); a re-run skips the parts on disk (checked against the plan) - a killed run
   resumes where it stopped;
4. rank 0 joins the parts in plan order into ``DIR/predictions.parquet`` (atomic) with
   ``clip_id`` string, ``labels`` list<int32>, ``scores`` list<float32> (one per class:
   the mean over the clip's views of sigmoid / softmax outputs, see eval/forward.py),
   ``num_clips`` int32 (views averaged).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Subset
from tqdm import tqdm

from eval.checks import (
    EvalError,
    audio_norm,
    check_vocabulary,
    head_classes,
    input_sizes,
    load_model,
)
from eval.forward import score_batch
from eval.metrics import is_single_label
from eval.views import inference_setup
from store.atomic import atomic_write, atomic_write_text
from store.batch_ring import RingLoader
from store.datasets import ClipDataset, select_clips
from store.reader import Store, open_store

PREDICTIONS = "predictions.parquet"
PARTS = "parts"
PLAN = "plan.json"
SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("labels", pa.list_(pa.int32())),
    ("scores", pa.list_(pa.float32())),
    ("num_clips", pa.int32()),
])


@dataclass
class RunOptions:
    ckpt: str
    store: str
    out: str
    split: str = "eval"
    clips: int = 10
    batch_size: int = 8
    missing: str = "zero"  # "zero" | "skip"
    part_size: int = 256
    num_workers: int = 0
    device: str | None = None
    fresh: bool = False
    progress: bool = True


def atomic_write_table(table: pa.Table, path: Path) -> None:
    atomic_write(path, lambda fh: pq.write_table(table, fh))


def predictions_table(clip_ids: list[str], labels: list[list[int]], scores: np.ndarray,
                      num_clips: int) -> pa.Table:
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    n, c = scores.shape
    offsets = pa.array(np.arange(0, (n + 1) * c, c, dtype=np.int32))
    return pa.table({
        "clip_id": pa.array(clip_ids, pa.string()),
        "labels": pa.array(labels, pa.list_(pa.int32())),
        "scores": pa.ListArray.from_arrays(offsets, pa.array(scores.reshape(-1))),
        "num_clips": pa.array(np.full(n, num_clips, dtype=np.int32)),
    }, schema=SCHEMA)


def dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: torch.device) -> None:
    """Join the torchrun group (gloo on CPU, NCCL on GPU) when launched by torchrun."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def plan_clips(store: Store, split: str, modalities: tuple[str, ...], missing: str
               ) -> tuple[pa.Table, dict[str, int]]:
    """The clips to score and the policy's counts (see the module docstring)."""
    if missing not in ("zero", "skip"):
        raise EvalError(f"--missing takes 'zero' or 'skip', not {missing!r}")
    table = select_clips(store, split)
    if table.num_rows == 0:
        splits = sorted(set(store.filter()["split"].to_pylist()))
        raise EvalError(f"split {split!r} of store {store.path} has no clips with features "
                        f"(splits with clips: {', '.join(splits) or 'none'})")
    counts = {"clips_in_split": table.num_rows, "clips_skipped": 0}
    for m in modalities:
        lacking = int((~table[f"has_{m}"].to_numpy(zero_copy_only=False)).sum())
        counts[f"clips_without_{m}"] = lacking
    if missing == "skip":
        kept = select_clips(store, split, require=modalities)
        counts["clips_skipped"] = table.num_rows - kept.num_rows
        table = kept
        if table.num_rows == 0:
            raise EvalError(f"every clip of split {split!r} lacks one of {modalities}; "
                            "nothing to score with --missing skip")
    else:
        counts["clips_zero_filled"] = int(sum(counts[f"clips_without_{m}"] for m in modalities))
    counts["clips_scored"] = table.num_rows
    return table, counts


def fingerprint(ckpt: Path, opts: RunOptions, clip_ids: list[str]) -> dict[str, Any]:
    st = ckpt.stat()
    ids = hashlib.blake2b("\n".join(clip_ids).encode(), digest_size=16).hexdigest()
    return {"checkpoint": str(ckpt.resolve()), "checkpoint_bytes": st.st_size,
            "checkpoint_mtime_ns": st.st_mtime_ns, "store": str(opts.store),
            "split": opts.split, "clips": opts.clips, "missing": opts.missing,
            "part_size": opts.part_size, "num_clips": len(clip_ids), "clip_ids": ids}


def prepare_parts(out: Path, plan: dict[str, Any], fresh: bool, rank: int) -> Path:
    """DIR/parts with its plan.json; refuses a DIR holding another evaluation's parts."""
    parts = out / PARTS
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
        plan_file = parts / PLAN
        if plan_file.exists() and not fresh:
            old = json.loads(plan_file.read_text())
            if old != plan:
                diff = sorted(k for k in plan if old.get(k) != plan[k])
                raise EvalError(f"{out} holds the parts of another evaluation (differs in "
                                f"{', '.join(diff)}); pass a new --out, or --fresh to redo it")
        if fresh:
            for f in parts.glob("part-*.parquet"):
                f.unlink()
            (out / PREDICTIONS).unlink(missing_ok=True)
        for f in parts.glob(".part-*.tmp-*"):  # debris of a killed write
            f.unlink()
        atomic_write_text(plan_file, json.dumps(plan, indent=2, sort_keys=True))
    barrier()
    return parts


def part_done(path: Path, want_ids: list[str]) -> bool:
    """A part on disk counts only if it reads back whole with exactly the planned clips."""
    if not path.exists():
        return False
    try:
        got = pq.read_table(path, columns=["clip_id"])["clip_id"].to_pylist()
    except Exception:
        return False
    return got == want_ids


def run_inference(opts: RunOptions) -> dict[str, Any]:
    """Score the split; returns the run summary (counts, protocol, paths)."""
    device = pick_device(opts.device)
    init_distributed(device)
    rank, world = dist_info()
    model, config, ckpt = load_model(opts.ckpt, "finetune")
    try:
        store = open_store(str(opts.store))
    except Exception as exc:
        raise EvalError(f"cannot open store {opts.store}: {exc}") from exc
    check_vocabulary(config, store, head_classes(model))
    name = config["model"]["name"]
    setup = inference_setup(name, model, opts.clips, audio_norm(config, store),
                            decode="gpu" if device.type == "cuda" else "cpu",
                            pixels="uint8", **input_sizes(config))
    table, counts = plan_clips(store, opts.split, setup.modalities, opts.missing)
    clip_ids = table["clip_id"].to_pylist()
    labels = [list(x) for x in table["labels"].to_pylist()]
    multi = config.get("data", {}).get("multi_label")
    single = (not multi) if multi is not None else is_single_label(labels)
    out = Path(opts.out)
    parts_dir = prepare_parts(out, fingerprint(ckpt, opts, clip_ids), opts.fresh, rank)
    require = setup.modalities if opts.missing == "skip" else ()
    dataset = ClipDataset(store, setup.view, split=opts.split, require=require)
    if dataset.positions.tolist() != table["index"].to_pylist():
        raise EvalError("the store changed while planning; re-run")
    model.to(device)
    n_parts = -(-len(clip_ids) // opts.part_size)
    mine = list(range(rank, n_parts, world))
    todo = [k for k in mine if not part_done(parts_dir / f"part-{k:05d}.parquet",
                                             clip_ids[k * opts.part_size:(k + 1) * opts.part_size])]
    done_before = len(mine) - len(todo)
    todo_clips = sum(len(clip_ids[k * opts.part_size:(k + 1) * opts.part_size]) for k in todo)
    bar = tqdm(total=todo_clips, unit="clip", desc=f"evaluate {opts.clips}-clip",
               disable=not opts.progress or rank != 0, dynamic_ncols=True)
    for k in todo:
        items = list(range(k * opts.part_size, min((k + 1) * opts.part_size, len(clip_ids))))
        loader = RingLoader(Subset(dataset, items), batch_size=opts.batch_size, shuffle=False,
                            num_workers=opts.num_workers)  # reused shared-memory slots
        scores = []
        for batch in loader:
            batch = setup.view.to_device(batch, device)  # GPU decode / uint8 normalisation
            audio = batch["audio"] if "audio" in setup.modalities else None
            video = batch["video"] if "video" in setup.modalities else None
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                probs = score_batch(model, setup.family, audio, video, single)
            scores.append(probs.float().cpu().numpy())
            bar.update(len(batch["clip_id"]))
        part = predictions_table([clip_ids[i] for i in items], [labels[i] for i in items],
                                 np.concatenate(scores), setup.num_views)
        atomic_write_table(part, parts_dir / f"part-{k:05d}.parquet")
    bar.close()
    barrier()
    summary = {
        "protocol": {"clips": opts.clips, "view": setup.view_name, "views_per_clip":
                     setup.num_views, "family": setup.family, "modalities":
                     list(setup.modalities), "averaged": "softmax" if single else "sigmoid",
                     "missing": opts.missing, "split": opts.split, "world_size": world},
        "checkpoint": str(ckpt), "model": name, "store": str(opts.store),
        "single_label": single, "parts": n_parts, "parts_done_before": done_before, **counts,
    }
    if rank == 0:
        tables = [pq.read_table(parts_dir / f"part-{k:05d}.parquet") for k in range(n_parts)]
        atomic_write_table(pa.concat_tables(tables).cast(SCHEMA), out / PREDICTIONS)
        atomic_write_text(out / "run.json",
                          json.dumps({**summary, "options": asdict(opts)}, indent=2))
    barrier()
    return summary


def read_predictions(path: str | Path) -> tuple[list[str], list[list[int]], np.ndarray, np.ndarray]:
    """(clip_ids, labels, scores [N, C] float32, num_clips [N]) from a predictions.parquet
    (or the DIR holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / PREDICTIONS
    t = pq.read_table(p)
    scores = t["scores"].combine_chunks()
    n = t.num_rows
    flat = scores.flatten().to_numpy(zero_copy_only=False)
    arr = flat.reshape(n, -1) if n else np.zeros((0, 0), np.float32)
    return (t["clip_id"].to_pylist(), [list(x) for x in t["labels"].to_pylist()], arr,
            t["num_clips"].to_numpy())
