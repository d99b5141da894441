"""Speech Commands (Warden 2018), v0.01 and v0.02 layouts -> manifest rows.

Layout (an unpacked ``speech_commands_v0.0x.tar.gz``)::

    DIR/<word>/<speaker>_nohash_<n>.wav     1-s, 16 kHz clips, one folder per word
    DIR/_background_noise_/*.wav            long noise recordings (not a word)
    DIR/validation_list.txt                 "<word>/<file>.wav", one per line
    DIR/testing_list.txt

Splits: ``valid`` and ``test`` are the files the two lists name, ``train`` every other
word file. Two tasks:

* ``35`` (v0.02; AST ``prep_sc.py``, AudioMAE "SPC-2"): the 35 words are the classes
  (sorted), train / valid / test as above.
* ``12`` (v0.01; SUPERB keyword spotting, which MAViL Table 8 / AudioMAE report as SPC-1):
  the 10 command words, ``_unknown_`` (every other word) and ``_silence_``. Silence clips are
  1-s windows of the ``_background_noise_`` files: SUPERB crops one at random on each read of
  a noise file; a store holds fixed clips, so we keep the non-overlapping windows, window i
  of a file going to ``valid`` when i % 10 == 1, to ``test`` when i % 10 == 0 (without
  ``--test-root``), else ``train``. SUPERB tests on the separate
  ``speech_commands_test_set_v0.01`` release (folders for the 10 words, ``_unknown_``,
  ``_silence_``); give its folder as ``test_root`` and the test split comes from it instead
  of ``testing_list.txt``.

MAViL Table 10 (footnote *) samples SPC fine-tuning so that every class is repeated to
50 % of the unknown class's size: store/class_balance.py computes those weights.

Clips are 1 s: the store keeps 128 fbank frames (AST / AudioMAE ``target_length``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from pipeline.manifest import ClipSpec, ManifestBuilder, RowError, vocabulary_table

LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt"}
BACKGROUND = "_background_noise_"
UNKNOWN, SILENCE = "_unknown_", "_silence_"
CLIP_SECONDS = 1.0
TARGET_FRAMES = 128   # AST / AudioMAE Speech Commands recipes: 98 frames padded to 128
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
WORDS_V1 = COMMANDS + (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow")
WORDS_V2 = WORDS_V1 + ("backward", "forward", "follow", "learn", "visual")
TASKS = ("35", "12")


def task_classes(task: str) -> list[str]:
    """The class list of a task, in label-index order."""
    if task == "35":
        return sorted(WORDS_V2)
    if task == "12":
        return [*COMMANDS, UNKNOWN, SILENCE]
    raise ValueError(f"unknown Speech Commands task {task!r}; use one of {TASKS}")


def speechcommands_vocabulary(task: str) -> pa.Table:
    return vocabulary_table(task_classes(task))


def layout_version(root: Path) -> str:
    """'v0.02' when any of the five words added in v0.02 has a folder, else 'v0.01'."""
    return "v0.02" if any((root / w).is_dir() for w in WORDS_V2[len(WORDS_V1):]) else "v0.01"


def _read_list(root: Path, split: str) -> list[tuple[int, str]]:
    path = root / LISTS[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --root must be an unpacked Speech Commands "
                                f"release (word folders, {LISTS['valid']}, {LISTS['test']})")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(i, s.strip()) for i, s in enumerate(lines, start=1) if s.strip()]


def _clip_id(rel: str) -> str:
    """'yes/0a7c2a8d_nohash_0.wav' -> 'yes-0a7c2a8d_nohash_0' (unique, file-name safe)."""
    word, name = rel.split("/")
    return f"{word}-{Path(name).stem}"


def _label(word: str, task: str, classes: list[str]) -> int:
    if task == "12" and word not in COMMANDS:
        return classes.index(SILENCE if word == SILENCE else UNKNOWN)
    return classes.index(word)


def _check_rel(rel: str, root: Path, words: tuple[str, ...]) -> str:
    parts = rel.split("/")
    if len(parts) != 2 or not parts[1].endswith(".wav") or parts[0] in ("", ".", ".."):
        raise RowError("bad_uri", f"not <word>/<file>.wav: {rel!r}")
    if parts[0] not in words:
        raise RowError("unknown_label", f"folder {parts[0]!r} is not a Speech Commands word")
    if not (root / rel).is_file():
        raise RowError("bad_uri", f"{rel} does not exist")
    return rel


def _word_files(root: Path) -> list[str]:
    """Files 'word/name.wav' of every word folder, sorted ('_*' folders skipped)."""
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir()
                     and not e.name.startswith(("_", ".")))
    return [f"{w}/{n}" for w in folders for n in sorted(os.listdir(root / w))
            if n.endswith(".wav")]


def read_speechcommands(root: str | Path, builder: ManifestBuilder, task: str = "35",
                        test_root: str | Path | None = None) -> ManifestBuilder:
    """Every word file -> a ClipSpec (train / valid / test by the two lists), plus the
    silence windows of the 12-class task; bad list lines and files in unknown folders
    become Rejects with their line and reason."""
    root = Path(root).resolve()
    classes = task_classes(task)
    version = layout_version(root)
    if task == "35" and version != "v0.02":
        raise ValueError(f"{root} is a v0.01 layout (no {', '.join(WORDS_V2[len(WORDS_V1):])} "
                         "folders); the 35-word task needs v0.02, use --task 12 for v0.01")
    words = WORDS_V2 if version == "v0.02" else WORDS_V1
    listed: dict[str, str] = {}
    for split in ("valid", "test"):
        for line, rel in _read_list(root, split):
            try:
                _check_rel(rel, root, words)
            except RowError as err:
                builder.reject(LISTS[split], line, rel, err.reason, err.detail)
                continue
            if rel in listed:
                builder.reject(LISTS[split], line, rel, "duplicate_id",
                               f"also in the {listed[rel]} list")
                continue
            listed[rel] = split
    held_out = set()
    if test_root is not None:  # SUPERB: the test list's files are in neither train nor valid
        held_out = {rel for rel, s in listed.items() if s == "test"}
    for rel in _word_files(root):
        try:
            _check_rel(rel, root, words)
        except RowError as err:
            builder.reject(rel.split("/")[0] + "/", 0, rel, err.reason, err.detail)
            continue
        if rel in held_out:
            continue
        split = listed.get(rel, "train")
        builder.add(ClipSpec(_clip_id(rel), rel.split("/")[1], 0.0, CLIP_SECONDS,
                             str(root / rel), [_label(rel.split("/")[0], task, classes)],
                             split), rel.split("/")[0] + "/", 0)
    if task == "12":
        _silence_windows(root, builder, classes, test_root is not None)
        if test_root is not None:
            _test_set(Path(test_root).resolve(), builder, classes)
    return builder


def audio_seconds(path: Path) -> float:
    """Duration of a wav from its header (ffprobe-free: the RIFF data chunk size)."""
    import wave

    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError) as err:
        raise ValueError(f"{path}: not a PCM wav ({err})") from err


def _silence_windows(root: Path, builder: ManifestBuilder, classes: list[str],
                     has_test_root: bool) -> None:
    folder = root / BACKGROUND
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: the 12-class task makes its _silence_ "
                                "clips from the background noise recordings")
    label = [classes.index(SILENCE)]
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".wav")):
        try:
            seconds = audio_seconds(folder / name)
        except ValueError as err:
            builder.reject(f"{BACKGROUND}/", 0, name, "bad_uri", str(err))
            continue
        for i in range(int(seconds // CLIP_SECONDS)):
            split = ("valid" if i % 10 == 1 else
                     "test" if i % 10 == 0 and not has_test_root else "train")
            builder.add(ClipSpec(f"{SILENCE}-{Path(name).stem}-{i:03d}", name, i * CLIP_SECONDS,
                                 (i + 1) * CLIP_SECONDS, str(folder / name), label, split),
                        f"{BACKGROUND}/", 0)


def _test_set(test_root: Path, builder: ManifestBuilder, classes: list[str]) -> None:
    """speech_commands_test_set_v0.01: one folder per class name (10 words, _unknown_,
    _silence_), every file in split ``test``."""
    if not test_root.is_dir():
        raise FileNotFoundError(f"--test-root {test_root} is not a folder")
    for entry in sorted(os.scandir(test_root), key=lambda e: e.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        if entry.name not in classes:
            for n in sorted(os.listdir(entry.path)):
                builder.reject("test-root", 0, f"{entry.name}/{n}", "unknown_label",
                               f"folder {entry.name!r} is not a class of the 12-class task")
            continue
        for n in sorted(os.listdir(entry.path)):
            if n.endswith(".wav"):
                builder.add(ClipSpec(f"test-{entry.name}-{Path(n).stem}", n, 0.0, CLIP_SECONDS,
                                     str(Path(entry.path) / n), [classes.index(entry.name)],
                                     "test"), "test-root", 0)

