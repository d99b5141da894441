"""Loader benchmark: MAViL pre-training samples/s per loader worker, store vs. the official way.

    uv run python -m store.bench [--store PATH] [--media DIR] [--samples 100] [--workers 2]

Both sides produce the same sample - audio [1, 1024, 128] (R: random roll, normalised) and
video [8, 3, 224, 224] (random 4-s window, multi-scale random crop, flip) - in one process
with one torch thread, i.e. what one DataLoader worker does:

- store: our StreamingDataset + "mavil_pretrain" view over a store (stored float16 fbank,
  8 of 20 JPEG frames decoded with libjpeg-turbo, crop+resize on uint8 tensors). Measured
  twice: with ``pixels="uint8"`` (what the trainer uses: the worker stops at uint8 pixels
  and ``SampleView.to_device`` normalises them on the device - the same float32 values)
  and with ``pixels="float"`` (normalised float32 out of the worker);
- baseline (AudioMAE / CAV-MAE style): per clip a 16 kHz wav file and one JPEG file per
  frame on disk; the wav is read (scipy; torchaudio.load needs torchcodec here), Kaldi fbank
  is computed on the fly with torchaudio, frames are opened with PIL and transformed with
  torchvision's RandomResizedCrop / flip / ToTensor / Normalize per frame.

Then the DataLoader-level figure: the uint8 store view behind the loader the trainer uses
(store.batch_ring.RingLoader: ``--workers`` worker processes collating into reused
shared-memory slots, ``pin_memory`` active only where an accelerator exists), against
``workers`` x the per-worker rate (target >= 0.9x), and in the same run a plain torch
DataLoader (the project's collate, fresh shared memory per batch) as the baseline, and
``workers`` independent one-worker loops at once with no DataLoader: what the machine gives
that many processes of this work (store/bench_dataloader.py).

Without --store, a small store (and the baseline files) is built in a temp dir from the
shared media (earth.mp4, bigbuckbunny.mp4; 8 time-shifted 10-s windows, repeated to a
multiple of workers x batch size so that every DataLoader worker gets an equal share of
each epoch: StreamingDataset deals an epoch's batches round-robin). The baseline files
always come from the store's own clips, so both sides read the same content. Prints the
rates, the ratios (target >= 2.5x) and the CPU time per sample.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from store.bench_dataloader import loader_rate, parallel_rate
from store.sample_store import av_plan, build_sample_store, decode_media, default_media_dir


def build_baseline(clips: list[Any], out: Path, media_dir: Path) -> list[dict]:
    """The official on-disk layout for the same clips: <out>/<id>.wav (16 kHz mono int16) and
    <out>/frame_<k>/<id>.jpg (CAV-MAE's layout, the store's own JPEG bytes).

    The wav is the store's waveform when it kept one, else 16 kHz audio of the clip's length
    from the shared media, or noise where ffmpeg is missing (the store holds fbanks, not audio;
    the baseline cost depends on the length, not the content)."""
    filler = None
    try:
        filler = decode_media(media_dir / "speech_two_speakers.wav").waveform
    except (ImportError, OSError):  # no ffmpeg here: the cost does not depend on content
        pass
    if filler is None:
        filler = np.random.default_rng(0).uniform(-0.3, 0.3, 160_000).astype(np.float32)
    items = []
    for clip in clips:
        if clip.waveform is not None:
            pcm = clip.waveform.numpy().astype(np.int16)
        else:
            n = int(round(min(max(clip.duration, 1.0), 10.0) * 16000))
            pcm = (np.clip(filler[:n], -1, 1) * 32767).astype(np.int16)
        wav_path = out / f"{clip.clip_id}.wav"
        with wave.open(str(wav_path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm.tobytes())
        for i, data in enumerate(clip.frames):
            (out / f"frame_{i}").mkdir(exist_ok=True)
            (out / f"frame_{i}" / f"{clip.clip_id}.jpg").write_bytes(data)
        items.append({"wav": str(wav_path), "id": clip.clip_id, "n": len(clip.frames)})
    return items


class OfficialStyleSampler:
    """The baseline: what AudioMAE / CAV-MAE-style loaders do per sample, from files."""

    def __init__(self, items: list[dict], root: Path, mean: float, std: float) -> None:
        import torchvision.transforms as T

        self.items, self.root, self.mean, self.std = items, root, mean, std
        self.to_tensor = T.ToTensor()
        self.normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])

    def __call__(self, k: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        import torchvision.transforms as T
        import torchvision.transforms.functional as F
        from PIL import Image
        from scipy.io import wavfile
        from torchaudio.compliance import kaldi

        item = self.items[k % len(self.items)]
        sr, pcm = wavfile.read(item["wav"])
        wav = torch.from_numpy(pcm.astype(np.float32) / 32768.0).unsqueeze(0)
        wav = wav - wav.mean()
        fb = kaldi.fbank(
            wav,
            htk_compat=True,
            sample_frequency=sr,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=128,
            dither=0.0,
            frame_shift=10,
        )
        n = fb.shape[0]
        fb = torch.nn.functional.pad(fb, (0, 0, 0, 1024 - n)) if n < 1024 else fb[:1024]
        fb[:n] = torch.roll(fb[:n], int(rng.integers(0, max(n, 1))), 0)
        audio = ((fb - self.mean) / self.std).unsqueeze(0)
        start = int(rng.integers(0, item["n"]))
        imgs = [
            Image.open(
                self.root / f"frame_{(start + i) % item['n']}" / f"{item['id']}.jpg"
            ).convert("RGB")
            for i in range(8)
        ]
        box = T.RandomResizedCrop.get_params(imgs[0], scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
        flip = rng.random() < 0.5
        frames = []
        for img in imgs:
            img = F.resized_crop(img, *box, [224, 224])
            if flip:
                img = F.hflip(img)
            frames.append(self.normalize(self.to_tensor(img)))
        return {"audio": audio, "video": torch.stack(frames)}


def _timed(step: Callable[[int], Any], n: int) -> tuple[float, float]:
    """(wall s, process CPU s) for n calls of step(i)."""
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        step(i)
    return time.perf_counter() - w0, time.process_time() - c0


def _streamed(ds: Any, n: int) -> tuple[float, float]:
    """(wall s, CPU s) for n samples of a StreamingDataset in this process (epochs in turn)."""
    done = 0
    w0, c0 = time.perf_counter(), time.process_time()
    while done < n:
        for _ in ds:
            done += 1
            if done >= n:
                break
        ds.set_epoch(ds.epoch + 1)
    return time.perf_counter() - w0, time.process_time() - c0


def run_bench(
    store: str | None = None,
    media_dir: Path | None = None,
    samples: int = 100,
    rounds: int = 3,
    threads: int = 1,
    log: Callable[[str], Any] = print,
    decode: str = "cpu",
    workers: int = 2,
    batch_size: int = 4,
) -> dict[str, float]:
    """Measure both loaders (interleaved rounds, best round each) and the DataLoader with
    ``workers`` processes (0: skip it), and return the figures.

    ``decode="gpu"`` measures the loader side of the GPU decode path (JPEG bytes + crop plan
    per sample; decoding happens later on the GPU, see store.jpeg.finish_video_on_gpu)."""
    from store.datasets import StreamingDataset
    from store.reader import open_store
    from store.views import make_view

    torch.set_num_threads(threads)
    media_dir = media_dir or default_media_dir()
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        if store is None:
            plan = av_plan(max(1, workers) * batch_size)
            log(f"building a {len(plan)}-clip store from {media_dir} ...")
            store = build_sample_store(Path(tmp) / "store", media_dir, "zarr", plan, shards=2)
        st = open_store(store)
        # the store's own stats when it has them (speed does not depend on the values)
        norm = "store" if st.spec.stats.get("fbank_std") else "audiomae"

        def dataset(pixels: str) -> StreamingDataset:
            view = make_view("mavil_pretrain", norm=norm, decode=decode, pixels=pixels)
            return StreamingDataset(st, view, require=("audio", "video"), seed=0)

        sides = {"store": dataset("uint8"), "store_float": dataset("float")}
        ds = sides["store"]
        anorm = ds.view.audio.norm  # the store's own stats, as the view uses them
        order = ds.epoch_order()
        clips = ds.read([int(i) for i in order[: min(len(order), 64)]])
        base_dir = Path(tmp) / "baseline"
        base_dir.mkdir()
        baseline = OfficialStyleSampler(
            build_baseline(clips, base_dir, media_dir), base_dir, anorm.mean,
            anorm.scale * anorm.std,
        )
        rng = np.random.default_rng(0)
        runs: dict[str, Callable[[int], tuple[float, float]]] = {
            name: (lambda n, d=d: _streamed(d, n)) for name, d in sides.items()
        }
        runs["baseline"] = lambda n: _timed(lambda i: baseline(i, rng), n)
        for run in runs.values():
            run(5)  # warm-up: imports, caches
        best = {name: (np.inf, np.inf) for name in runs}
        paired = []
        for r in range(rounds):
            got = {name: run(samples) for name, run in runs.items()}
            best = {name: min(best[name], got[name]) for name in runs}
            paired.append(got["baseline"][0] / got["store"][0])
            log(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{name} {samples / got[name][0]:.1f}/s" for name in runs))
        res: dict[str, float] = {}
        for name in runs:
            res[f"{name}_samples_per_s"] = samples / best[name][0]
            res[f"{name}_cpu_ms"] = 1000 * best[name][1] / samples
        if workers > 0:
            variants = {"loader": ("uint8", "ring"), "loader_plain": ("uint8", "plain"),
                        "loader_floor": ("uint8", "floor"), "loader_float": ("float", "ring"),
                        "parallel": ("uint8", "parallel"), "single": ("uint8", "single")}

            def measure(pixels: str, kind: str) -> dict[str, float]:
                if kind == "single":  # the one-worker loop again, beside this round's loaders
                    wall, cpu = _streamed(sides["store"], samples)
                    return {"samples_per_s": samples / wall, "cpu_ms": 1000 * cpu / samples}
                if kind == "parallel":
                    return parallel_rate(dataset(pixels), workers, samples, _streamed)
                return loader_rate(dataset(pixels), workers, batch_size, 4 * samples, kind)

            got: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
            for r in range(rounds):  # interleaved: best of each, and paired per round
                for name, (pixels, kind) in variants.items():
                    got[name].append(measure(pixels, kind))
                log(f"loader round {r + 1}/{rounds}: " + ", ".join(
                    f"{name} {got[name][-1]['samples_per_s']:.1f}/s" for name in variants))
            for name in ("loader", "loader_floor"):
                res[f"{name}_efficiency_paired_median"] = float(np.median([
                    x["samples_per_s"] / (workers * one["samples_per_s"])
                    for x, one in zip(got[name], got["single"], strict=True)]))
            for name in variants:
                top = max(got[name], key=lambda x: x["samples_per_s"])
                res.update({f"{name}_{k}": v for k, v in top.items()})
            res["loader_workers"] = workers
            for name in ("loader", "loader_plain", "loader_floor"):
                res[f"{name}_efficiency"] = res[f"{name}_samples_per_s"] / (
                    workers * res["store_samples_per_s"])
                res[f"{name}_of_parallel"] = (res[f"{name}_samples_per_s"]
                                              / res["parallel_samples_per_s"])
            res["parallel_scaling"] = res["parallel_samples_per_s"] / res["store_samples_per_s"]
    res["ratio"] = res["store_samples_per_s"] / res["baseline_samples_per_s"]
    res["ratio_float"] = res["store_float_samples_per_s"] / res["baseline_samples_per_s"]
    res["ratio_paired_median"] = float(np.median(paired))
    res["cpu_ratio"] = res["baseline_cpu_ms"] / res["store_cpu_ms"]
    _report(res, log, decode, threads, samples, rounds, batch_size)
    return res


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _report(res: dict[str, float], log: Callable[[str], Any], decode: str, threads: int,
            samples: int, rounds: int, batch_size: int) -> None:
    side = "" if decode == "cpu" else " [store: loader side of the GPU decode path]"
    log(f"MAViL pre-training view (audio 1x1024x128 + video 8x3x224x224){side}, 1 worker, "
        f"{threads} thread(s), {samples} samples x {rounds} rounds (best):")
    rows = [("store", "store", "uint8 video out, normalised on the device"),
            ("store f32", "store_float", "float32 video out, normalised in the worker"),
            ("baseline", "baseline", "wav + JPEG files, fbank on the fly, PIL")]
    for label, name, what in rows:
        log(f"  {label:9s}: {res[f'{name}_samples_per_s']:8.1f} samples/s  "
            f"CPU {res[f'{name}_cpu_ms']:6.1f} ms/sample  ({what})")
    log(f"  ratio    : {res['ratio']:.2f}x samples/s (target >= 2.5x; float32 out "
        f"{res['ratio_float']:.2f}x); per-round median {res['ratio_paired_median']:.2f}x; "
        f"CPU per sample {res['cpu_ratio']:.2f}x less")
    if "loader_samples_per_s" in res:
        n = int(res["loader_workers"])
        pinned = "pinned" if res["loader_pinned"] else "pin_memory inactive (no accelerator)"
        log(f"  loader   : {res['loader_samples_per_s']:8.1f} samples/s, the trainer's loader "
            f"(batch ring) with {n} workers, batch {batch_size}, {pinned}; {n} x per-worker "
            f"= {n * res['store_samples_per_s']:.1f}/s -> {res['loader_efficiency']:.2f}x "
            f"(target >= 0.9x; per-round median against that round's one-worker loop "
            f"{res['loader_efficiency_paired_median']:.2f}x); "
            f"{int(res['loader_slots_mapped'])} slots mapped in all")
        log(f"  plain    : {res['loader_plain_samples_per_s']:8.1f} samples/s, a plain torch "
            f"DataLoader (fresh shared memory per batch) -> {res['loader_plain_efficiency']:.2f}"
            f"x; the ring is {res['loader_samples_per_s'] / res['loader_plain_samples_per_s']:.2f}"
            "x faster")
        if res["loader_cpu_ms"] > 0:
            for label, name in (("ring", "loader"), ("plain", "loader_plain")):
                main = res[f"{name}_main_cpu_ms"]
                ceiling = f"{1000 / main:.0f}/s" if main > 0 else "-"
                log(f"             CPU {label:5s} {res[f'{name}_cpu_ms']:5.1f} ms/sample, workers "
                    f"+ main process (main alone {main:.2f}: at most {ceiling} with any "
                    f"number of workers; 1 worker alone: {res['store_cpu_ms']:.1f})")
        log(f"  floor    : {res['loader_floor_samples_per_s']:8.1f} samples/s, a torch DataLoader"
            f" whose workers hand over no data (CPU {res['loader_floor_cpu_ms']:.1f} ms/sample,"
            f" main {res['loader_floor_main_cpu_ms']:.2f}) -> {res['loader_floor_efficiency']:.2f}"
            f"x (per-round median {res['loader_floor_efficiency_paired_median']:.2f}x): the "
            "DataLoader machinery alone; the ring is "
            f"{res['loader_samples_per_s'] / res['loader_floor_samples_per_s']:.2f}x of it")
        log(f"  parallel : {res['parallel_samples_per_s']:8.1f} samples/s, {n} independent "
            f"one-worker loops at once (no DataLoader; CPU {res['parallel_cpu_ms']:.1f} ms/"
            f"sample): {res['parallel_scaling']:.2f}x one worker, what this machine gives {n} "
            f"processes of this work -> the ring {res['loader_of_parallel']:.2f}x of it, the "
            f"plain DataLoader {res['loader_plain_of_parallel']:.2f}x")
        f32 = res["loader_float_samples_per_s"]
        log(f"  loader32 : {f32:8.1f} samples/s, the ring with float32 video out (uint8 is "
            f"{res['loader_samples_per_s'] / f32:.2f}x; CPU {res['loader_float_cpu_ms']:.1f} "
            "ms/sample)")
        cores = usable_cores()
        if n + 1 > cores:
            log(f"  note     : {n} workers + the main process on {cores} cores: the workers "
                "share cores with the main process, so N x per-worker is out of reach; "
                "compare with the floor")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m store.bench", description=__doc__.split("\n")[0])
    p.add_argument("--store", help="store path or URL (default: build one from the media)")
    p.add_argument("--media", type=Path, default=None, help="shared media dir")
    p.add_argument("--samples", type=int, default=100, help="samples per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = one worker)")
    p.add_argument(
        "--decode",
        choices=("cpu", "gpu"),
        default="cpu",
        help="gpu: time the loader side of the nvJPEG path (bytes + crop plan)",
    )
    p.add_argument("--workers", type=int, default=2,
                   help="DataLoader workers for the loader-level figure (0: skip it)")
    p.add_argument("--batch-size", type=int, default=4, help="DataLoader batch size")
    a = p.parse_args(argv)
    run_bench(a.store, a.media, a.samples, a.rounds, a.threads, decode=a.decode,
              workers=max(0, a.workers), batch_size=max(1, a.batch_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
