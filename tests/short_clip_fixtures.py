"""Small ESC-50 and Speech Commands trees in the published on-disk format, cut with ffmpeg
from the real recordings in ``../shared/data`` (media/ and speech_prompts/).

* :func:`make_esc50` -> ``ESC-50-master/{meta/esc50.csv, audio/*.wav}``: 5-s, 44.1 kHz mono
  wavs named ``{fold}-{src_file}-{take}-{target}.wav``; ``per_fold`` clips of each of two
  classes in each of the five folds (speech -> ``crying_baby``, the music loop ->
  ``church_bells``).
* :func:`make_speechcommands` -> ``speech_commands_v0.0x/<word>/<hash>_nohash_<n>.wav``
  (1-s, 16 kHz), ``validation_list.txt``, ``testing_list.txt`` and ``_background_noise_``.

The content is real speech / music, not the words or sounds the names say: the builders
only read the layout, and the learning check uses speech_prompts itself.
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
from pathlib import Path

from pipeline.ffmpeg_bin import ffmpeg_exe

ESC_CLASSES = {20: ("crying_baby", True), 46: ("church_bells", False)}


def cut(src: Path, dest: Path, start: float, seconds: float, rate: int) -> Path:
    """``seconds`` of ``src`` from ``start`` -> 16-bit mono PCM wav at ``rate`` (looped when
    the source is shorter, so every clip has its nominal length as in the releases)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-ss",
           f"{start:.3f}", "-i", str(src), "-t", f"{seconds:.3f}", "-ac", "1", "-ar", str(rate),
           "-c:a", "pcm_s16le", str(dest)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return dest


def make_esc50(root: Path, media: Path, per_fold: int = 1) -> Path:
    """An ``ESC-50-master`` folder with 2 classes x 5 folds x ``per_fold`` clips."""
    top = root / "ESC-50-master"
    sources = {20: (media / "speech_two_speakers.wav", 29.0), 46: (media / "house_lo.ogg", 6.5)}
    rows = []
    for fold in range(1, 6):
        for target, (category, esc10) in ESC_CLASSES.items():
            src, length = sources[target]
            for k in range(per_fold):
                n = (fold - 1) * per_fold + k
                src_file = str(100000 + 37 * n + target)
                take = "AB"[k % 2]
                name = f"{fold}-{src_file}-{take}-{target}.wav"
                cut(src, top / "audio" / name, (n * 2.9) % length, 5.0, 44100)
                rows.append([name, fold, target, category, esc10, src_file, take])
    (top / "meta").mkdir(parents=True, exist_ok=True)
    with open(top / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return top


def _speaker(word: str, i: int) -> str:
    return hashlib.sha1(f"{word}{i}".encode()).hexdigest()[:8]


def make_speechcommands(root: Path, shared: Path, version: str = "v0.02",
                        per_word: int = 3) -> Path:
    """A ``speech_commands_<version>`` folder: a few command words and other words (v0.02
    adds ``backward``), ``per_word`` clips each; the last clip of a word is in
    testing_list.txt, the one before it in validation_list.txt; two background files."""
    top = root / f"speech_commands_{version}"
    words = ["yes", "no", "house"] + (["backward"] if version == "v0.02" else [])
    prompts = sorted((shared / "data" / "speech_prompts" / "en").glob("*.wav"))
    valid, test = [], []
    for w_i, word in enumerate(words):
        for i in range(per_word):
            name = f"{_speaker(word, i)}_nohash_0.wav"
            cut(prompts[(w_i * per_word + i) % len(prompts)], top / word / name, 0.0, 1.0, 16000)
            if i == per_word - 1:
                test.append(f"{word}/{name}")
            elif i == per_word - 2:
                valid.append(f"{word}/{name}")
    noise = top / "_background_noise_"
    cut(shared / "data" / "media" / "house_lo.ogg", noise / "running_tap.wav", 0.0, 12.5, 16000)
    cut(shared / "data" / "media" / "speech_two_speakers.wav", noise / "dude_miaowing.wav",
        3.0, 4.5, 16000)
    (noise / "README.md").write_text("background noise recordings\n")
    (top / "validation_list.txt").write_text("".join(f"{r}\n" for r in valid))
    (top / "testing_list.txt").write_text("".join(f"{r}\n" for r in test))
    return top
