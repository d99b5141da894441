"""ESC-50 (Piczak 2015) in its published layout -> manifest rows for a 5-fold store.

Layout (the ``ESC-50-master`` folder of the official repository)::

    ESC-50-master/meta/esc50.csv      filename,fold,target,category,esc10,src_file,take
    ESC-50-master/audio/1-100032-A-0.wav   ({fold}-{src_file}-{take}-{target}.wav, 5 s)

2000 clips, 50 classes of 40, five folds of 400 (a source recording never spans two
folds). The fold is kept as the clip's split, ``fold1`` .. ``fold5``: "train on folds != k,
test on fold k" (the 5-fold protocol of AST's prep_esc50.py / AudioMAE) is
``split="fold1,..."`` minus ``fold{k}`` (:func:`fold_splits`). The vocabulary is the
official 50 categories in ``target`` order, so stores built from any subset of the
clips agree on the class indices. Clips are 5 s: the store keeps 512 fbank frames
(AudioMAE / AST ``target_length`` for ESC-50), not 1024.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa

from pipeline.manifest import ClipSpec, ManifestBuilder, RowError, vocabulary_table

META = Path("meta") / "esc50.csv"
AUDIO = "audio"
COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLDS = (1, 2, 3, 4, 5)
CLIP_SECONDS = 5.0
TARGET_FRAMES = 512   # AST / AudioMAE ESC-50 recipes: 5 s -> 500 frames, padded to 512

# The 50 categories by ``target`` (ESC-50 README: animals 0-9, natural soundscapes 10-19,
# human non-speech 20-29, interior 30-39, exterior 40-49).
CATEGORIES = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops",
    "wind", "pouring_water", "toilet_flush", "thunderstorm",
    "crying_baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
    "brushing_teeth", "snoring", "drinking_sipping",
    "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks", "can_opening",
    "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick", "glass_breaking",
    "helicopter", "chainsaw", "siren", "car_horn", "engine", "train", "church_bells",
    "airplane", "fireworks", "hand_saw",
)


def fold_split(fold: int) -> str:
    return f"fold{int(fold)}"


def fold_splits(test_fold: int) -> tuple[str, str]:
    """(train split, test split) of cross-validation round ``test_fold`` (1..5), in the
    comma-joined form ``Store.filter`` / recipes' ``data.split`` take."""
    if test_fold not in FOLDS:
        raise ValueError(f"ESC-50 folds are 1..5, not {test_fold!r}")
    return ",".join(fold_split(f) for f in FOLDS if f != test_fold), fold_split(test_fold)


def esc50_vocabulary() -> pa.Table:
    return vocabulary_table(list(CATEGORIES))


def meta_path(root: str | Path) -> Path:
    path = Path(root) / META
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --root must be the ESC-50-master folder "
                                "(with meta/esc50.csv and audio/)")
    return path


def _parse(row: dict[str, str], audio: Path) -> tuple[str, int, int]:
    name = row["filename"].strip()
    parts = Path(name).stem.split("-")
    if Path(name).name != name or not name.endswith(".wav") or len(parts) != 4:
        raise RowError("bad_id", f"not an ESC-50 file name: {name!r}")
    try:
        fold, target = int(row["fold"]), int(row["target"])
    except ValueError as err:
        raise RowError("bad_split", f"fold / target not integers: {row['fold']!r}, "
                       f"{row['target']!r}") from err
    if fold not in FOLDS:
        raise RowError("bad_split", f"fold {fold} not in 1..5")
    if not 0 <= target < len(CATEGORIES):
        raise RowError("unknown_label", f"target {target} not in 0..49")
    if row["category"].strip() != CATEGORIES[target]:
        raise RowError("unknown_label", f"target {target} is {CATEGORIES[target]!r}, the "
                       f"row says {row['category'].strip()!r}")
    if parts[0] != str(fold) or parts[3] != str(target):
        raise RowError("bad_id", f"{name}: name says fold {parts[0]}, target {parts[3]}; "
                       f"the row says {fold}, {target}")
    if not (audio / name).is_file():
        raise RowError("bad_uri", f"{AUDIO}/{name} does not exist")
    return name, fold, target


def read_esc50(root: str | Path, builder: ManifestBuilder) -> ManifestBuilder:
    """Every row of ``meta/esc50.csv`` -> a 5-s ClipSpec of ``audio/<filename>`` (split
    ``fold<k>``, label ``target``) or a Reject naming the line and the reason."""
    path = meta_path(root)
    audio = Path(root).resolve() / AUDIO
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if tuple(header) != COLUMNS:
            raise ValueError(f"{path}: header {header} is not the official "
                             f"{','.join(COLUMNS)}")
        for line, fields in enumerate(reader, start=2):
            if not fields:
                continue
            raw_id = fields[0] if fields else ""
            try:
                if len(fields) != len(COLUMNS):
                    raise RowError("column_count", f"expected {len(COLUMNS)} columns, got "
                                   f"{len(fields)}")
                name, fold, target = _parse(dict(zip(COLUMNS, fields, strict=True)), audio)
            except RowError as err:
                builder.reject(META.as_posix(), line, raw_id, err.reason, err.detail)
                continue
            clip_id = Path(name).stem
            builder.add(ClipSpec(clip_id, clip_id, 0.0, CLIP_SECONDS, str(audio / name),
                                 [target], fold_split(fold)), META.as_posix(), line)
    return builder
