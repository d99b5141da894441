"""The loader's choice on a damaged clip (issue 8, item 15): ``on_error="raise"`` stops
with the file named; ``on_error="skip"`` logs and counts the clip, serves the next readable
clip in its slot, keeps every rank's sample count and keeps the epoch deterministic (the
same with 0 or 2 DataLoader workers, and from one iteration to the next). ``checksums=
"once"`` (the cheap read check) catches a flipped byte the first time a clip is read."""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_fixtures import zarr_store  # noqa: F401
from torch.utils.data import DataLoader

from store import StoreError, open_store
from store.datasets import ClipDataset, StreamingDataset
from store.jpeg import collate
from store.views import make_view

torch.set_num_threads(1)


def _flip_fbank(store: Path, clip_id: str) -> None:
    row = next(r for r in open_store(str(store)).index().to_pylist() if r["clip_id"] == clip_id)
    shard = store / row["shard_file"]
    data = shard / "fbank" / "c" / "0" / "0" / "0"
    count = json.loads((shard / "fbank" / "zarr.json").read_text())["shape"][0]
    raw = bytearray(data.read_bytes())
    index = np.frombuffer(bytes(raw[-4 - 16 * count:-4]), dtype="<u8").reshape(count, 2)
    raw[int(index[row["row"], 0]) + 1000] ^= 0xFF
    data.write_bytes(bytes(raw))


@pytest.fixture()
def damaged(zarr_store: str, tmp_path: Path) -> tuple[Path, str]:  # noqa: F811
    copy = tmp_path / "store"
    shutil.copytree(zarr_store, copy)
    victim = open_store(str(copy)).filter().to_pylist()[5]["clip_id"]
    _flip_fbank(copy, victim)
    return copy, victim


def _indices(ds, workers: int = 0) -> list[int]:
    loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate)
    return [int(i) for b in loader for i in b["index"]]


def test_raise_names_the_damaged_clip(damaged) -> None:
    store, victim = damaged
    ds = StreamingDataset(str(store), make_view("audio_eval"), batch_size=2,
                          checksums="once")
    with pytest.raises(StoreError, match=rf"clip '{victim}' .*checksum mismatch"):
        _indices(ds)


def test_skip_keeps_count_and_order_deterministic(damaged, caplog) -> None:
    store, victim = damaged
    view = make_view("audio_eval")
    ds = StreamingDataset(str(store), view, batch_size=2, checksums="once", on_error="skip")
    bad_pos = open_store(str(store)).position(victim)
    with caplog.at_level(logging.WARNING, logger="store.datasets"):
        first = _indices(ds)
    assert len(first) == len(ds)  # the slot is filled: every rank keeps its count
    assert bad_pos not in first
    assert ds.skipped == [victim]
    assert any(victim in r.getMessage() and "1 skipped" in r.getMessage()
               for r in caplog.records)
    # the substitute is the next selected clip: it appears twice in this epoch
    item = int(np.flatnonzero(ds.positions == bad_pos)[0])
    substitute = int(ds.positions[(item + 1) % len(ds.positions)])
    assert Counter(first)[substitute] == 2
    assert _indices(ds) == first  # the same epoch again (the bad clip is remembered)
    fresh = StreamingDataset(str(store), view, batch_size=2, checksums="once",
                             on_error="skip")
    assert _indices(fresh, workers=2) == first  # same with workers (each counts its own)


def test_skip_a_whole_missing_shard_file(zarr_store: str, tmp_path: Path) -> None:  # noqa: F811
    copy = tmp_path / "store"
    shutil.copytree(zarr_store, copy)
    rows = open_store(str(copy)).filter().to_pylist()
    gone = rows[0]["shard_file"]
    shutil.rmtree(copy / gone)
    lost = {r["clip_id"] for r in rows if r["shard_file"] == gone}
    ds = ClipDataset(str(copy), make_view("audio_eval"), deterministic=True, on_error="skip")
    got = [ds[i]["index"] for i in range(len(ds))]
    assert len(got) == len(rows)
    assert sorted(ds.skipped) == sorted(lost)
    store = open_store(str(copy))
    assert not {store.index()["clip_id"][i].as_py() for i in got} & lost
    with pytest.raises(ValueError, match="on_error must be one of"):
        ClipDataset(str(copy), make_view("audio_eval"), on_error="ignore")


def test_checksum_modes(damaged) -> None:
    store, victim = damaged
    s = open_store(str(store), checksums="once")
    with pytest.raises(StoreError, match="checksum mismatch"):
        s.get(victim)
    with pytest.raises(StoreError, match="checksum mismatch"):
        s.get(victim)  # a failed check is not remembered as verified
    good = s.filter().to_pylist()[0]["clip_id"]
    s.get(good)
    assert s.position(good) in s._verified
    assert open_store(str(store), checksums=False).get(victim).clip_id == victim
    with pytest.raises(StoreError, match="checksums must be one of"):
        open_store(str(store), checksums="sometimes")
