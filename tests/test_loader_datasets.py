"""Datasets over a real store: DDP x worker splits, exact resume, both backends, GPU path."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from loader_fixtures import any_store, zarr_store  # noqa: F401
from torch.utils.data import DataLoader

from store import open_store
from store.datasets import ClipDataset, ResumableLoader, StreamingDataset, buffer_shuffle
from store.jpeg import collate, finish_video_on_gpu
from store.samplers import WeightedSampler
from store.views import make_view

torch.set_num_threads(1)
N_CLIPS = 12


def _run(ds: StreamingDataset, workers: int, batch: int) -> list[dict]:
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate)
    return list(loader)


def _ids(batches: list[dict]) -> list[int]:
    return [int(i) for b in batches for i in b["index"]]


def test_two_ranks_two_workers_every_clip_once(any_store: str) -> None:  # noqa: F811
    view = make_view("mavil_pretrain")
    seen = []
    for rank in range(2):
        ds = StreamingDataset(any_store, view, rank=rank, world_size=2, batch_size=2, seed=3)
        batches = _run(ds, workers=2, batch=2)
        ids = _ids(batches)
        assert len(ids) == len(ds) == N_CLIPS // 2  # equal counts per rank
        assert ids == [int(ds.positions[i]) for i in ds.epoch_order()]  # rank order kept
        b0 = batches[0]
        assert b0["audio"].shape == (2, 1, 1024, 128) and b0["video"].shape[1:] == (8, 3, 224, 224)
        seen += ids
    assert sorted(seen) == list(range(N_CLIPS))
    # next epoch: a different order, still every clip once
    ds0 = StreamingDataset(any_store, view, rank=0, world_size=2, batch_size=2, seed=3)
    ds1 = StreamingDataset(any_store, view, rank=1, world_size=2, batch_size=2, seed=3)
    e0 = list(ds0.epoch_order())
    for d in (ds0, ds1):
        d.set_epoch(1)
    assert list(ds0.epoch_order()) != e0
    both = [int(d.positions[i]) for d in (ds0, ds1) for i in d.epoch_order()]
    assert sorted(both) == list(range(N_CLIPS))


def test_more_slots_than_shards_equal_counts_no_hang(zarr_store: str) -> None:  # noqa: F811
    view = make_view("audio_eval")
    counts, seen = [], Counter()
    for rank in range(5):  # 5 ranks x 2 workers = 10 slots for 4 shards; 12 clips -> pad to 15
        ds = StreamingDataset(zarr_store, view, rank=rank, world_size=5, batch_size=1)
        assert ds._mode() == "sample"
        ids = _ids(_run(ds, workers=2, batch=1))
        counts.append(len(ids))
        seen.update(ids)
    assert counts == [3] * 5
    assert set(seen) == set(range(N_CLIPS)) and sum(seen.values()) == 15
    assert max(seen.values()) == 2  # only the wrapped padding repeats
    ds = StreamingDataset(zarr_store, view, rank=0, world_size=5, drop_last=True)
    assert len(ds) == 2


def test_shard_mode_keeps_reads_local(zarr_store: str) -> None:  # noqa: F811
    ds = StreamingDataset(
        zarr_store, make_view("audio_eval"), world_size=1, rank=0, shuffle_buffer=0, seed=1
    )
    assert ds._mode() == "shard"
    shards = [int(ds.shards[i]) for i in ds.epoch_order()]
    runs = [s for k, s in enumerate(shards) if k == 0 or s != shards[k - 1]]
    assert len(runs) == 4 and sorted(runs) == [0, 1, 2, 3]  # one contiguous run per shard


def test_buffer_shuffle_is_a_bounded_permutation() -> None:
    import numpy as np

    items = np.arange(1000)
    out = buffer_shuffle(items, 16, np.random.default_rng(0))
    assert sorted(out.tolist()) == items.tolist() and not np.array_equal(out, items)
    pos = np.empty(1000, dtype=int)
    pos[out] = np.arange(1000)
    assert (items - pos).max() <= 16  # nothing comes out more than a buffer early


def _audio_sums(batches: list[dict]) -> list[float]:
    return [float(a.sum()) for b in batches for a in b["audio"]]


def test_resume_mid_epoch_continues_on_the_next_sample(any_store: str) -> None:  # noqa: F811
    view = make_view("mavil_pretrain")

    def dataset() -> StreamingDataset:
        return StreamingDataset(any_store, view, rank=1, world_size=2, seed=11)

    full = ResumableLoader(dataset(), batch_size=2, num_workers=2)
    full.set_epoch(4)
    whole = list(full)
    ids, sums = _ids(whole), _audio_sums(whole)
    assert len(ids) == N_CLIPS // 2

    first = ResumableLoader(dataset(), batch_size=2, num_workers=2)
    first.set_epoch(4)
    taken = []
    for batch in first:
        taken.append(batch)
        if len(taken) == 2:
            break
    state = first.state_dict()
    assert state["consumed"] == 4 and state["epoch"] == 4
    resumed = ResumableLoader(dataset(), batch_size=2, num_workers=2)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert _ids(taken) + _ids(rest) == ids
    assert _audio_sums(taken) + _audio_sums(rest) == sums  # same augmentations too
    # a checkpoint taken after a resume, resumed again
    again = ResumableLoader(dataset(), batch_size=2, num_workers=0)
    again.load_state_dict(state)
    next(iter(again))
    state2 = again.state_dict()
    assert state2["consumed"] == 6
    last = ResumableLoader(dataset(), batch_size=2, num_workers=0)
    last.load_state_dict(state2)
    assert _ids(list(last)) == ids[6:] == []
    # a resume point inside a batch, a different batch size, no workers: still exact
    ds = dataset()
    ds.load_state_dict({**state, "consumed": 3})
    rest3 = _ids(_run(ds, workers=0, batch=3))
    assert rest3 == ids[3:]
    with pytest.raises(ValueError, match="cannot resume"):
        StreamingDataset(any_store, view, rank=0, world_size=3).load_state_dict(state)


def test_require_filters_and_missing_modalities(zarr_store: str) -> None:  # noqa: F811
    st = open_store(zarr_store)
    table = st.index()
    both = [
        i for i in range(N_CLIPS) if table["has_audio"][i].as_py() and table["has_video"][i].as_py()
    ]
    ds = StreamingDataset(
        zarr_store, make_view("mavil_eval"), require=("audio", "video"), rank=0, world_size=1
    )
    assert sorted(int(p) for p in ds.positions) == both
    plain = StreamingDataset(zarr_store, make_view("mavil_eval"), rank=0, world_size=1)
    for b in _run(plain, workers=0, batch=4):
        for k in range(len(b["index"])):
            if not b["has_video"][k]:
                assert torch.count_nonzero(b["video"][k]) == 0
            if not b["has_audio"][k]:
                assert torch.count_nonzero(b["audio"][k]) == 0


def test_map_style_with_balanced_sampler_and_fsspec_url(zarr_store: str) -> None:  # noqa: F811
    ds = ClipDataset(
        "file://" + zarr_store,
        make_view("mavil_finetune", num_classes=5),
        deterministic=True,
        seed=2,
    )
    assert len(ds) == N_CLIPS
    sampler = WeightedSampler(ds.sampling_weights(), 10, rank=0, world_size=1, seed=0)
    loader = DataLoader(ds, batch_size=5, sampler=sampler, num_workers=0, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["label"].shape == (5, 5)
    assert batches[0]["audio"].shape == (5, 1, 1024, 128)
    again = [ds[i] for i in range(3)]
    assert all(torch.equal(a["audio"], ds[i]["audio"]) for i, a in enumerate(again))
    lams = [ds[i]["mix_lambda"] for i in range(N_CLIPS)]
    assert any(lam < 1 for lam in lams)  # mixup rate 0.5 mixes some samples
    with pytest.raises(IndexError):
        ds[N_CLIPS]


def _gpu_vs_cpu(store: str, device: str, name: str) -> None:
    cpu = ClipDataset(store, make_view(name), require=("video",), deterministic=True)
    # decode="gpu" defers decoding: samples carry JPEG bytes + plan, finished on ``device``
    gpu = ClipDataset(store, make_view(name, decode="gpu"), require=("video",), deterministic=True)
    idx = list(range(min(4, len(cpu))))
    ref = collate([cpu[i] for i in idx])
    batch = collate([gpu[i] for i in idx])
    assert "jpeg" in batch and "video" not in batch
    done = finish_video_on_gpu(batch, device)
    assert done["video"].device.type == torch.device(device).type
    assert done["video"].shape == ref["video"].shape
    diff = (done["video"].cpu() - ref["video"]).abs().mean()
    assert diff < (1e-6 if device == "cpu" else 0.05)  # nvJPEG vs libjpeg-turbo rounding


@pytest.mark.parametrize("name", ["mavil_pretrain", "mavil_eval10", "cavmae_train"])
def test_deferred_decode_path_matches_cpu_view(zarr_store: str, name: str) -> None:  # noqa: F811
    _gpu_vs_cpu(zarr_store, "cpu", name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")
@pytest.mark.parametrize("name", ["mavil_pretrain", "mavil_eval10", "cavmae_eval"])
def test_gpu_nvjpeg_decode_matches_cpu_view(zarr_store: str, name: str) -> None:  # noqa: F811
    _gpu_vs_cpu(zarr_store, "cuda", name)


def test_store_norm_comes_from_the_store(zarr_store: str) -> None:  # noqa: F811
    st = open_store(zarr_store)
    ds = ClipDataset(st, make_view("mavil_eval", norm="store"), deterministic=True)
    norm = ds.view.audio.norm
    # the sample store's stats were measured on its clips, not copied from Table 10
    assert (norm.mean, norm.std, norm.scale) == (st.spec.stats["fbank_mean"],
                                                st.spec.stats["fbank_std"], 2.0)
    assert norm.mean != -4.268
    real = torch.cat(
        [c.fbank[: c.audio_frames].double() for c in map(st.get, range(len(st))) if c.has_audio]
    )
    assert abs(real.mean().item() - norm.mean) < 1e-3  # float16 storage rounding
    assert abs(real.std(unbiased=False).item() - norm.std) < 1e-3
    cav = ClipDataset(st, make_view("cavmae_eval", norm="store")).view.audio.norm
    assert (cav.mean, cav.scale) == (norm.mean, 1.0)  # CAV-MAE divides by std alone
