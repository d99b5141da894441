"""A labelled audio-video set made from ffmpeg's built-in sources, on which a tiny model
can be seen to learn on a CPU (``pipeline make-synthetic``).

Every clip is one *scene* (what the picture is), an optional *moving box* on top of it,
and one *sound*; the labels are the names of the parts that are present:

    scene  red | bars | checker | fractal | plain (no label)     decided by the video
    box    moving_box | none                                      decided by the video
    sound  tone_low | tone_high | chirp | noise | quiet (no label) decided by the audio

so a clip has 1-3 labels and 9 classes in all. The three parts are drawn independently
(balanced: each scene and sound on ~1/5 of the clips, the box on ~1/2), so neither
modality alone can name all of a clip's labels. Nuisance parameters (shades, bar
standard, cell size, box colour/size/speed, tone frequency within its band, sweep range
and period, noise colour, loudness 0.2-0.5) vary per clip. All sound rides on a quiet
white-noise floor (amplitude 0.002, -54 dBFS), so no clip is digital silence.

Writes ``OUT/media/<id>.mp4`` (h264 + AAC 16 kHz mono, 320x240 at 10 fps),
``OUT/labels.csv`` (``index,mid,display_name``), ``OUT/manifest.csv`` (the generic
manifest: ``id,uri,start,end,labels,split``; written last, so its presence means the set
is complete), ``OUT/synthetic.json`` (parameters, per-clip plan, label prior and the
chance mAP) and ``OUT/README.md``. The plan is a deterministic function of the seed, the
clip count and the duration range; the media bytes are too, for a given ffmpeg binary.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline.ffmpeg_bin import ffmpeg_exe
from store.atomic import atomic_write_text

SCENES = ("red", "bars", "checker", "fractal", "plain")
SOUNDS = ("tone_low", "tone_high", "chirp", "noise", "quiet")
CLASSES = ("red", "bars", "checker", "fractal", "moving_box",
           "tone_low", "tone_high", "chirp", "noise")
MODALITY = {c: "video" for c in CLASSES[:5]} | {c: "audio" for c in CLASSES[5:]}
DESCRIPTION = {
    "red": "solid red picture (R 190-255, G/B 0-60)",
    "bars": "colour bars (smptebars, smptehdbars, pal75bars or pal100bars)",
    "checker": "grey checkerboard, cells 16/20/40 px",
    "fractal": "zooming Mandelbrot set (ffmpeg mandelbrot source)",
    "moving_box": "a 48-96 px box of a bright colour bouncing over the scene",
    "tone_low": "a sine tone at 150-500 Hz",
    "tone_high": "a sine tone at 2.5-5 kHz",
    "chirp": "linear sweeps 300-600 Hz <-> 4.5-6.5 kHz (up or down), restarted every 1-3 s",
    "noise": "white, pink or brown noise",
}
WIDTH, HEIGHT, FPS, SAMPLE_RATE = 320, 240, 10, 16000
FLOOR_AMPLITUDE = 0.002  # the noise floor under every clip (-54 dBFS)
FORMAT_VERSION = 1


@dataclass
class ClipPlan:
    clip_id: str
    duration: float
    scene: str
    box: bool
    sound: str
    split: str = "train"
    params: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        names = [self.scene] if self.scene != "plain" else []
        names += ["moving_box"] if self.box else []
        names += [self.sound] if self.sound != "quiet" else []
        return names


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n draws from range(k), each value ceil(n/k) or floor(n/k) times, shuffled."""
    return rng.permutation(np.tile(np.arange(k), math.ceil(n / k))[:n])


def _clip_params(rng: np.random.Generator, scene: str, box: bool, sound: str) -> dict:
    p: dict = {"floor_seed": int(rng.integers(1, 2**31 - 1))}
    if scene == "red":
        p["colour"] = [int(rng.integers(190, 256)), int(rng.integers(0, 61)),
                       int(rng.integers(0, 61))]
    elif scene == "plain":  # never red: a grey, a blue or a green
        kind = int(rng.integers(3))
        v = int(rng.integers(60, 171))
        p["colour"] = [[v, v, v], [int(rng.integers(0, 50)), int(rng.integers(30, 100)),
                                   int(rng.integers(140, 230))],
                       [int(rng.integers(0, 50)), int(rng.integers(120, 200)),
                        int(rng.integers(20, 80))]][kind]
    elif scene == "bars":
        p["source"] = str(rng.choice(["smptebars", "smptehdbars", "pal75bars", "pal100bars"]))
    elif scene == "checker":
        p["cell"] = int(rng.choice([16, 20, 40]))
        p["dark"], p["light"] = int(rng.integers(0, 60)), int(rng.integers(180, 256))
    elif scene == "fractal":
        p["start_scale"] = float(round(rng.uniform(2.0, 3.5), 2))
        p["end_scale"] = float(round(rng.uniform(0.05, 0.3), 2))
    if box:
        p["box_size"] = int(rng.integers(48, 97))
        p["box_colour"] = str(rng.choice(["0xffff00", "0x00ffff", "0xff00ff", "0xffffff",
                                          "0xff8000"]))
        p["box_speed"] = [float(round(rng.uniform(40, 140), 1)),
                          float(round(rng.uniform(20, 90), 1))]
        p["box_phase"] = [int(rng.integers(0, 200)), int(rng.integers(0, 150))]
    p["amplitude"] = float(round(rng.uniform(0.2, 0.5), 3))
    if sound == "tone_low":
        p["freq"] = float(round(rng.uniform(150, 500), 1))
    elif sound == "tone_high":
        p["freq"] = float(round(rng.uniform(2500, 5000), 1))
    elif sound == "chirp":
        f0, f1 = float(round(rng.uniform(300, 600), 1)), float(round(rng.uniform(4500, 6500), 1))
        p["sweep"] = [f0, f1] if rng.random() < 0.5 else [f1, f0]
        p["period"] = float(round(rng.uniform(1.0, 3.0), 2))
    elif sound == "noise":
        p["noise_colour"] = str(rng.choice(["white", "pink", "brown"]))
        p["seed"] = int(rng.integers(1, 2**31 - 1))
    return p


def stratified_split(plans: list[ClipPlan], eval_fraction: float,
                     rng: np.random.Generator) -> list[str]:
    """round(n * eval_fraction) eval clips chosen greedily so that each part (every scene,
    sound, box yes/no; the labelled parts are the classes) is in eval in proportion: each
    pick is the clip bringing the eval counts closest to eval_fraction * the totals."""
    parts = np.zeros((len(plans), len(SCENES) + len(SOUNDS) + 2))
    for i, p in enumerate(plans):
        parts[i, SCENES.index(p.scene)] = 1
        parts[i, len(SCENES) + SOUNDS.index(p.sound)] = 1
        parts[i, -1 - int(p.box)] = 1
    target, have = parts.sum(0) * eval_fraction, np.zeros(parts.shape[1])
    free = list(rng.permutation(len(plans)))
    split = ["train"] * len(plans)
    for _ in range(round(len(plans) * eval_fraction)):
        cost = [float(((have + parts[i] - target) ** 2).sum()) for i in free]
        i = free.pop(int(np.argmin(cost)))
        have += parts[i]
        split[i] = "eval"
    return split


def plan_clips(clips: int = 160, seed: int = 0, duration_range: tuple[float, float] = (4, 10),
               eval_fraction: float = 0.2) -> list[ClipPlan]:
    """The deterministic plan of a synthetic set (no ffmpeg)."""
    lo, hi = duration_range
    if clips < 1 or not 0 < lo <= hi or not 0 <= eval_fraction < 1:
        raise ValueError(f"need clips >= 1, 0 < duration min <= max, 0 <= eval fraction < 1; "
                         f"got {clips}, {lo}-{hi}, {eval_fraction}")
    rng = np.random.default_rng([seed, FORMAT_VERSION])
    scenes, sounds = _balanced(rng, clips, len(SCENES)), _balanced(rng, clips, len(SOUNDS))
    boxes = _balanced(rng, clips, 2)
    plans = []
    for i in range(clips):
        scene, sound, box = SCENES[scenes[i]], SOUNDS[sounds[i]], bool(boxes[i])
        if scene == "plain" and sound == "quiet" and not box:
            box = True  # every clip has at least one label
        crng = np.random.default_rng([seed, FORMAT_VERSION, i])
        duration = float(round(crng.uniform(lo, hi), 1))
        plans.append(ClipPlan(f"syn{seed}_{i:04d}", duration, scene, box, sound,
                              params=_clip_params(crng, scene, box, sound)))
    for p, s in zip(plans, stratified_split(plans, eval_fraction, rng), strict=True):
        p.split = s
    return plans


def _hex(rgb: list[int]) -> str:
    return "0x" + "".join(f"{v:02x}" for v in rgb)


def _video_graph(p: ClipPlan) -> str:
    size, q = f"s={WIDTH}x{HEIGHT}:r={FPS}", p.params
    if p.scene in ("red", "plain"):
        graph = f"color=c={_hex(q['colour'])}:{size}"
    elif p.scene == "bars":
        graph = f"{q['source']}={size}"
    elif p.scene == "checker":
        c = q["cell"]
        graph = (f"nullsrc=s={WIDTH // c}x{HEIGHT // c}:r={FPS},format=gray,"
                 f"geq=lum='if(mod(X+Y,2),{q['light']},{q['dark']})',"
                 f"scale={WIDTH}:{HEIGHT}:flags=neighbor")
    else:
        graph = (f"mandelbrot={size}:maxiter=256:start_scale={q['start_scale']}:"
                 f"end_scale={q['end_scale']}:end_pts={int(p.duration * FPS)}")
    graph += ",format=yuv420p"
    if not p.box:
        return graph + "[v]"
    s, (vx, vy), (x0, y0) = q["box_size"], q["box_speed"], q["box_phase"]
    return (f"{graph}[bg];color=c={q['box_colour']}:s={s}x{s}:r={FPS}[box];"
            f"[bg][box]overlay=x='abs(mod(t*{vx}+{x0},2*(W-w))-(W-w))':"
            f"y='abs(mod(t*{vy}+{y0},2*(H-h))-(H-h))':shortest=1[v]")


def _audio_graph(p: ClipPlan) -> str:
    q, a, sr = p.params, p.params["amplitude"], SAMPLE_RATE
    floor = f"anoisesrc=c=white:a={FLOOR_AMPLITUDE}:r={sr}:seed={q['floor_seed']}"
    if p.sound == "quiet":
        return floor + "[a]"
    if p.sound in ("tone_low", "tone_high"):
        src = f"aevalsrc='{a}*sin(2*PI*{q['freq']}*t)':s={sr}"
    elif p.sound == "chirp":  # phase of a linear sweep, restarted every period
        (f0, f1), period = q["sweep"], q["period"]
        k = (f1 - f0) / period
        src = (f"aevalsrc='{a}*sin(2*PI*({f0}*mod(t,{period})"
               f"+{k / 2:.4f}*mod(t,{period})^2))':s={sr}")
    else:
        src = f"anoisesrc=c={q['noise_colour']}:a={a}:r={sr}:seed={q['seed']}"
    return f"{src}[s];{floor}[n];[s][n]amix=inputs=2:duration=first:normalize=0[a]"


@lru_cache(maxsize=4)
def _video_codec(ffmpeg: str) -> list[str]:
    encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True,
                              text=True, timeout=30).stdout
    if " libx264 " in encoders:
        return ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23"]
    return ["-c:v", "mpeg4", "-q:v", "4"]


def ffmpeg_args(p: ClipPlan, out: str | Path, ffmpeg: str) -> list[str]:
    """One ffmpeg run (an argument list) that writes clip ``p`` as MP4 to ``out``."""
    graph = f"{_video_graph(p)};{_audio_graph(p)}"
    return [ffmpeg, "-nostdin", "-v", "error", "-y", "-filter_complex", graph,
            "-map", "[v]", "-map", "[a]", "-t", f"{p.duration}", *_video_codec(ffmpeg),
            "-pix_fmt", "yuv420p", "-g", str(2 * FPS), "-c:a", "aac", "-b:a", "48k",
            "-ar", str(SAMPLE_RATE), "-ac", "1", "-threads", "1", "-fflags", "+bitexact",
            "-map_metadata", "-1", "-f", "mp4", str(out)]


def label_prior(plans: list[ClipPlan]) -> dict:
    """Per class and split: positives and prevalence; ``chance_mAP_eval`` is the mean eval
    prevalence, the expected mAP of scores that ignore the clip (random or constant)."""
    out: dict = {"classes": {}}
    by_split = {s: [p for p in plans if p.split == s] for s in ("train", "eval")}
    for c in CLASSES:
        row = {"modality": MODALITY[c]}
        for s, ps in by_split.items():
            n_pos = sum(c in p.labels for p in ps)
            row[f"{s}_positives"] = n_pos
            row[f"{s}_prevalence"] = round(n_pos / len(ps), 4) if ps else 0.0
        out["classes"][c] = row
    for s, ps in by_split.items():
        out[f"{s}_clips"] = len(ps)
        out[f"mean_labels_per_clip_{s}"] = (round(sum(len(p.labels) for p in ps) / len(ps), 3)
                                            if ps else 0.0)
    prev = [r["eval_prevalence"] for r in out["classes"].values()]
    out["chance_mAP_eval"] = round(float(np.mean(prev)), 4)
    return out


def _render_clip(p: ClipPlan, media: Path, ffmpeg: str) -> bool:
    """Write media/<id>.mp4 via a hidden part file (a kill leaves no half clip visible).
    False when the clip is already there (a resumed run)."""
    final = media / f"{p.clip_id}.mp4"
    if final.exists():
        return False
    part = media / f".{p.clip_id}.mp4.part"
    try:
        subprocess.run(ffmpeg_args(p, part, ffmpeg), check=True, capture_output=True,
                       text=True, timeout=120)
    except subprocess.CalledProcessError as err:
        part.unlink(missing_ok=True)
        tail = (err.stderr or "").strip().splitlines()[-1:] or ["no message"]
        raise OSError(f"ffmpeg failed on {p.clip_id}: {tail[0]}") from None
    os.replace(part, final)
    return True


def _readme(params: dict, prior: dict, seconds: float) -> str:
    rows = "\n".join(
        f"| `{c}` | {MODALITY[c]} | {DESCRIPTION[c]} | {r['train_positives']} | "
        f"{r['eval_positives']} | {r['eval_prevalence']:.3f} |"
        for c, r in prior["classes"].items())
    return f"""# Synthetic audio-video set (generated, no recordings)

Made by `pipeline make-synthetic --clips {params['clips']} --seed {params['seed']} \
--duration-range {params['duration_range'][0]} {params['duration_range'][1]}` with
{params['ffmpeg_version']} from its built-in lavfi sources only (colour, smptebars,
smptehdbars, pal75bars, pal100bars, nullsrc+geq, mandelbrot, aevalsrc, anoisesrc); nothing
here was recorded or copied, so there are no rights to clear. Generation took
{seconds:.1f} s. `synthetic.json` holds the parameters and the plan of every clip.

{prior['train_clips']} train / {prior['eval_clips']} eval clips (multi-label stratified),
{WIDTH}x{HEIGHT} at {FPS} fps h264 + AAC {SAMPLE_RATE} Hz mono, 1-3 labels per clip
(mean {prior['mean_labels_per_clip_train']} train, {prior['mean_labels_per_clip_eval']} eval).

| class | decided by | what | train + | eval + | eval prevalence |
| --- | --- | --- | --- | --- | --- |
{rows}

Chance level: scores that ignore the clip (random, or the label prior) have an expected
eval mAP equal to the mean eval prevalence, **{prior['chance_mAP_eval']:.3f}**.

    pipeline build --manifest manifest.csv --labels labels.csv --name synthetic --out STORE
"""


def make_synthetic(out: str | Path, clips: int = 160, seed: int = 0,
                   duration_range: tuple[float, float] = (4.0, 10.0),
                   eval_fraction: float = 0.2, jobs: int = 2, ffmpeg: str | None = None,
                   progress: bool = True) -> dict:
    """Write the set to ``out`` (see the module docstring); returns a summary. Re-running
    with the same parameters resumes (clips already written are kept); a folder holding
    anything else is refused."""
    out = Path(out)
    exe = ffmpeg_exe(ffmpeg)
    plans = plan_clips(clips, seed, duration_range, eval_fraction)
    version = subprocess.run([exe, "-version"], capture_output=True, text=True,
                             timeout=30).stdout.split("\n")[0].split(" Copyright")[0]
    params = {"format_version": FORMAT_VERSION, "clips": clips, "seed": seed,
              "duration_range": [float(duration_range[0]), float(duration_range[1])],
              "eval_fraction": eval_fraction}
    meta_path = out / "synthetic.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())["parameters"]
        mine = {k: old.get(k) for k in params}
        if mine != params:
            raise ValueError(f"{out} holds a synthetic set made with {mine}, not {params}; "
                             "choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no synthetic set; choose another --out")
    media = out / "media"
    media.mkdir(parents=True, exist_ok=True)
    prior = label_prior(plans)
    meta = {"parameters": params | {"ffmpeg_version": version}, "label_prior": prior,
            "classes": list(CLASSES), "clips": [asdict(p) | {"labels": p.labels}
                                                for p in plans]}
    atomic_write_text(meta_path, json.dumps(meta, indent=1))

    t0 = time.perf_counter()
    from tqdm import tqdm

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        done = pool.map(lambda p: _render_clip(p, media, exe), plans)
        made = sum(tqdm(done, total=len(plans), desc="synthetic clips", unit="clip",
                        disable=not progress))
    seconds = time.perf_counter() - t0

    atomic_write_text(out / "labels.csv", "index,mid,display_name\n" + "".join(
        f"{i},{c},{c}\n" for i, c in enumerate(CLASSES)))
    atomic_write_text(out / "README.md", _readme(params | {"ffmpeg_version": version}, prior,
                                             seconds))
    part = out / ".manifest.csv.part"
    with open(part, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "start", "end", "labels", "split"])
        for p in plans:
            w.writerow([p.clip_id, f"media/{p.clip_id}.mp4", 0, p.duration,
                        ";".join(p.labels), p.split])
    os.replace(part, out / "manifest.csv")
    return {"out": str(out), "clips": clips, "written": made, "seconds": round(seconds, 2),
            "train": prior["train_clips"], "eval": prior["eval_clips"],
            "chance_mAP_eval": prior["chance_mAP_eval"]}
