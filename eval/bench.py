"""`evaluate bench`: eval throughput of an audio+video model, 1 vs 10 clips, in one run.

Measures, on the same clips of a store and the same (randomly initialised) MAViL A+V
classifier:

* clips/s end to end (store read + JPEG decode + render + model), 1-clip and 10-clip;
* model time per batch of B clips: 1-clip and 10-clip scoring (eval/forward.py), and the
  10-clip path's parts at the shapes it runs them - one audio-encoder pass over B clips,
  the video encoder over the 10 x B windows, fusion + pooling + head over the 10 x B
  windows (ten video and ten fusion passes, batched as the path batches them);
* the 10-clip model time against the cost predicted from its parts,
  ``audio + 10 video + 10 fusion``; the target is a ratio within 10 % of 1 (the path adds
  no work beyond its parts: the audio is encoded once, not ten times). The same parts at
  1-clip shapes (B windows) are printed too: on a CPU ten separate B-window passes cost
  more than one 10B-window pass, so the 1-clip parts x 10 over-predict.

Each timing is the median of ``repeats`` runs after a warm-up; ratios come from this run only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from eval.forward import score_batch
from store.datasets import ClipDataset, select_clips
from store.jpeg import collate
from store.reader import open_store
from store.views import make_view
from train.models import build_model


def _timer(device: torch.device) -> Callable[[Callable[[], Any], int], float]:
    def run(fn: Callable[[], Any], repeats: int) -> float:
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)
    return run


def run_bench(store: str, size: str = "tiny", split: str | None = None, n_clips: int = 8,
              batch_size: int = 4, repeats: int = 3, device: str | None = None,
              img_size: int = 224) -> dict[str, float]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    st = open_store(store)
    table = select_clips(st, split, require=("audio", "video"))
    if table.num_rows == 0:
        raise SystemExit(f"evaluate bench: {store} has no clips with audio and video")
    n = min(n_clips, table.num_rows)
    b = min(batch_size, n)
    torch.manual_seed(0)
    model = build_model("mavil_av_ft", size, num_classes=st.vocabulary.num_rows,
                        img_size=img_size).eval().to(dev)
    norm = {"norm": "store" if st.spec.stats else "audiomae"}
    timed = _timer(dev)
    amp = torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda")
    res: dict[str, float] = {}

    def loader(view_name: str) -> DataLoader:
        view = make_view(view_name, size=img_size, **norm)
        ds = ClipDataset(st, view, split=split, require=("audio", "video"))
        return DataLoader(Subset(ds, range(n)), batch_size=b, collate_fn=collate)

    batches = {}
    for clips, view_name in ((1, "mavil_eval"), (10, "mavil_eval10")):
        def end_to_end(v: str = view_name) -> None:
            for batch in loader(v):
                with torch.no_grad(), amp:
                    score_batch(model, "mavil", batch["audio"].to(dev), batch["video"].to(dev),
                                False)
        res[f"clips_per_s_{clips}"] = n / timed(end_to_end, repeats)
        batches[clips] = next(iter(loader(view_name)))
    a = batches[10]["audio"].to(dev)
    v10 = batches[10]["video"].to(dev)
    v1 = batches[1]["video"].to(dev)
    enc_a, enc_v = model.audio_encoder, model.video_encoder
    v10_flat = v10.flatten(0, 1)
    with torch.no_grad(), amp:
        tok_a = enc_a.forward_tokens(enc_a.embed(a))
        tok_v1 = enc_v.forward_tokens(enc_v.embed(v1))
        tok_v10 = enc_v.forward_tokens(enc_v.embed(v10_flat))
        tok_a10 = tok_a.repeat_interleave(10, dim=0)

        def fusion(ta: torch.Tensor, tv: torch.Tensor) -> torch.Tensor:
            fa, fv = model.fusion(ta, tv)
            pooled = torch.cat([fa[:, 1:].mean(1), fv[:, 1:].mean(1)], dim=-1)
            return model.head(model.fc_norm(pooled))

        res["audio_s"] = timed(lambda: enc_a.forward_tokens(enc_a.embed(a)), repeats)
        res["video10_s"] = timed(lambda: enc_v.forward_tokens(enc_v.embed(v10_flat)), repeats)
        res["fusion10_s"] = timed(lambda: fusion(tok_a10, tok_v10), repeats)
        res["video1_s"] = timed(lambda: enc_v.forward_tokens(enc_v.embed(v1)), repeats)
        res["fusion1_s"] = timed(lambda: fusion(tok_a, tok_v1), repeats)
        res["model_1clip_s"] = timed(lambda: score_batch(model, "mavil", a, v1, False), repeats)
        res["model_10clip_s"] = timed(lambda: score_batch(model, "mavil", a, v10, False),
                                      repeats)
    res["predicted_10clip_s"] = res["audio_s"] + res["video10_s"] + res["fusion10_s"]
    res["ratio_10clip_vs_parts"] = res["model_10clip_s"] / res["predicted_10clip_s"]
    res["ratio_10clip_vs_1clip"] = res["model_10clip_s"] / res["model_1clip_s"]
    res["predicted_from_1clip_parts_s"] = res["audio_s"] + 10 * (res["video1_s"]
                                                                 + res["fusion1_s"])
    # ten full forwards, the audio re-encoded each time (what the audio-once path saves)
    res["naive_10clip_s"] = 10 * res["audio_s"] + res["video10_s"] + res["fusion10_s"]
    print(f"evaluate bench: MAViL A+V ({size}, {img_size} px) on {dev}, {n} clips of "
          f"{store}, batch {b}, median of {repeats}")
    print(f"  end to end: {res['clips_per_s_1']:.2f} clips/s 1-clip, "
          f"{res['clips_per_s_10']:.2f} clips/s 10-clip")
    ms = {k: 1e3 * v for k, v in res.items() if k.endswith("_s")}
    print(f"  parts per batch: audio {ms['audio_s']:.1f} ms; video 10B windows "
          f"{ms['video10_s']:.1f} ms (B windows {ms['video1_s']:.1f}); fusion+head 10B "
          f"{ms['fusion10_s']:.1f} ms (B {ms['fusion1_s']:.1f})")
    print(f"  model: 1-clip {ms['model_1clip_s']:.1f} ms, 10-clip {ms['model_10clip_s']:.1f} "
          f"ms ({res['ratio_10clip_vs_1clip']:.2f}x); predicted audio + 10 video + 10 fusion "
          f"{ms['predicted_10clip_s']:.1f} ms -> measured/predicted "
          f"{res['ratio_10clip_vs_parts']:.3f} (target 0.90-1.10)")
    print(f"  from 1-clip-shaped parts: {ms['predicted_from_1clip_parts_s']:.1f} ms; ten full "
          f"forwards (audio each time): {ms['naive_10clip_s']:.1f} ms "
          f"({res['naive_10clip_s'] / res['model_10clip_s']:.2f}x the 10-clip path)")
    return res
