"""`evaluate retrieval`: audio <-> video retrieval with pre-trained encoders (CAV-MAE Sec. 5).

Protocol (CAV-MAE Sec. 5, Table 3 / Table 7): self-supervised pre-trained, not fine-tuned,
encoders; a subset of the eval split (CAV-MAE: 1,725 AudioSet / 1,545 VGGSound clips, ~10 %);
audio and video go through two independent forward passes; the mean-pooled uni-modal
encoder outputs are the representations, L2-normalised, compared by cosine similarity;
recall at 1, 5 and 10 and the median rank, both directions.

Our subset: up to ``per_class`` clips per class (classes in index order; each draws, with a
seeded generator, among the clips with audio and video carrying that label and not drawn
yet), or a given list of clip ids. Representations per family:

* MAViL (stage 1, stage-2 student): complete-view ``f_a(a)`` / ``f_v(v)`` (encoder with its
  final LayerNorm, no masking, no fusion), mean over patch tokens; video is the centre 4-s
  window (``mavil_eval``).
* CAV-MAE: modality-specific layers, then the joint layer with the audio / visual stream
  LayerNorms (the official ``forward_feat``), mean over tokens; the middle frame.
* Audiovisual-MAE: the modality-specific stack (``separate`` / ``mid``) or the shared /
  early encoder on one modality alone, mean over tokens; the centre 4-s window.

Ranks: for query i, rank_i = #{j : sim[i, j] > sim[i, i]} (0 = its own pair first). A tie
with another item counts in the query's favour, once: CAV-MAE's ``retrieval.py``
(``compute_metrics``) finds the pair by value in the sorted row, which puts it at the first
tied position (and adds one entry per tied item to its averages, which we do not). Silent
clips, for one, have identical audio embeddings. Subset as CAV-MAE's
``audioset_eval_5_per_class_for_retrieval`` file: 5 per class; its frame is the middle one.
R@k = mean(rank < k); median rank = median(rank) + 1 (1-based, as the retrieval literature).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from eval.checks import EvalError, audio_norm, input_sizes, load_model
from eval.infer import pick_device
from store.atomic import atomic_write_text
from store.datasets import ClipDataset, select_clips
from store.jpeg import collate, finish_video_on_gpu
from store.reader import open_store
from store.views import make_view

RECALL_AT = (1, 5, 10)


@dataclass
class RetrievalOptions:
    ckpt: str
    store: str
    out: str
    split: str = "eval"
    per_class: int = 5
    seed: int = 0
    ids: str | None = None
    direction: str = "both"
    batch_size: int = 8
    device: str | None = None


def draw_subset(labels: list[list[int]], num_classes: int, per_class: int, seed: int
                ) -> list[int]:
    """Row numbers of up to ``per_class`` clips per class (see the module docstring)."""
    rng = np.random.default_rng(seed)
    by_class: list[list[int]] = [[] for _ in range(num_classes)]
    for i, ls in enumerate(labels):
        for c in ls:
            by_class[c].append(i)
    chosen: set[int] = set()
    for members in by_class:
        free = [i for i in members if i not in chosen]
        for j in rng.permutation(len(free))[:per_class]:
            chosen.add(free[j])
    return sorted(chosen)


def retrieval_metrics(sim: np.ndarray) -> dict[str, float]:
    """R@1/5/10 and median rank of the diagonal pairs of a query x gallery similarity."""
    own = np.diag(sim)[:, None]
    rank = (sim > own).sum(axis=1)
    out = {f"R@{k}": float((rank < k).mean()) for k in RECALL_AT}
    out["median_rank"] = float(np.median(rank) + 1)
    out["mean_rank"] = float(rank.mean() + 1)
    return out


def _core(model: nn.Module) -> nn.Module:
    return getattr(model, "student", model)  # a stage-2 MAViL: the student's encoders


def embed(model: nn.Module, family: str, audio: torch.Tensor, video: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled uni-modal representations [B, D] of audio and video (module docstring)."""
    m = _core(model)
    if family == "mavil":
        return m.audio_encoder(audio)[:, 1:].mean(1), m.video_encoder(video)[:, 1:].mean(1)
    if family == "cav_mae":
        a = m.joint(m.encode_audio(m.embed_audio(audio)), "a").mean(1)
        v = m.joint(m.encode_video(m.embed_video(video)), "v").mean(1)
        return a, v
    a, v = m.embed(audio, video)
    if m.encoder_kind in ("early", "shared"):
        return m.encoder(a).mean(1), m.encoder(v).mean(1)
    return m.encoder_a(a).mean(1), m.encoder_v(v).mean(1)


FAMILY = {"mavil": "mavil", "mavil_stage2": "mavil", "cav_mae": "cav_mae", "av_mae": "av_mae"}


def run_retrieval(opts: RetrievalOptions) -> dict[str, Any]:
    device = pick_device(opts.device)
    model, config, ckpt = load_model(opts.ckpt, "pretrain")
    name = config["model"]["name"]
    if name not in FAMILY:
        raise EvalError(f"{ckpt}: {name!r} has one modality; retrieval needs audio and video "
                        "encoders (mavil, mavil_stage2, cav_mae, av_mae)")
    family = FAMILY[name]
    if opts.direction not in ("both", "a2v", "v2a"):
        raise EvalError(f"--direction takes both, a2v or v2a, not {opts.direction!r}")
    store = open_store(str(opts.store))
    table = select_clips(store, opts.split, require=("audio", "video"))
    if table.num_rows == 0:
        raise EvalError(f"split {opts.split!r} of store {opts.store} has no clips with both "
                        "audio and video")
    ids = table["clip_id"].to_pylist()
    if opts.ids:
        wanted = [ln.strip() for ln in Path(opts.ids).read_text().splitlines() if ln.strip()]
        where = {c: i for i, c in enumerate(ids)}
        unknown = [c for c in wanted if c not in where]
        if unknown:
            raise EvalError(f"{opts.ids}: {len(unknown)} ids not among the split's audio+video "
                            f"clips (first: {unknown[0]!r})")
        rows = [where[c] for c in wanted]
    else:
        rows = draw_subset(table["labels"].to_pylist(), store.vocabulary.num_rows,
                           opts.per_class, opts.seed)
    if len(rows) < 2:
        raise EvalError(f"retrieval needs at least 2 clips, the subset has {len(rows)}")
    sizes = input_sizes(config)
    view_name = "cavmae_eval" if family == "cav_mae" else "mavil_eval"
    decode = "gpu" if device.type == "cuda" else "cpu"
    video_kw = {} if family == "cav_mae" else {"num_frames": sizes["num_frames"]}
    view = make_view(view_name, decode=decode, size=sizes["size"], **video_kw,
                     **audio_norm(config, store))
    view = dataclasses.replace(view, audio=dataclasses.replace(
        view.audio, target_frames=sizes["audio_frames"]))
    dataset = ClipDataset(store, view, split=opts.split, require=("audio", "video"))
    loader = DataLoader(Subset(dataset, rows), batch_size=opts.batch_size, shuffle=False,
                        collate_fn=collate)
    model.to(device)
    embs_a, embs_v = [], []
    with torch.no_grad():
        for batch in tqdm(loader, desc="retrieval embeddings", unit="batch"):
            if "jpeg" in batch:
                batch = finish_video_on_gpu(batch, device)
            a, v = embed(model, family, batch["audio"].to(device), batch["video"].to(device))
            embs_a.append(F.normalize(a.float(), dim=-1).cpu())
            embs_v.append(F.normalize(v.float(), dim=-1).cpu())
    a_n, v_n = torch.cat(embs_a).numpy(), torch.cat(embs_v).numpy()
    sim = a_n @ v_n.T  # cosine: rows audio queries, columns videos
    res: dict[str, Any] = {"num_clips": len(rows), "checkpoint": str(ckpt), "model": name,
                           "store": str(opts.store), "split": opts.split,
                           "per_class": None if opts.ids else opts.per_class,
                           "seed": None if opts.ids else opts.seed, "view": view_name}
    if opts.direction in ("both", "a2v"):
        res["a2v"] = retrieval_metrics(sim)
    if opts.direction in ("both", "v2a"):
        res["v2a"] = retrieval_metrics(sim.T)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "retrieval_ids.txt", "\n".join(ids[r] for r in rows) + "\n")
    np.savez(out / "embeddings.npz", audio=a_n, video=v_n)
    atomic_write_text(out / "retrieval.json", json.dumps(res, indent=2) + "\n")
    return res
