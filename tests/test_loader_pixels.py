"""uint8 video out of the loader, normalised on the device, gives the float path's model inputs.

The float path normalises each sample in the worker; the uint8 path ships the cropped,
resized pixels and ``SampleView.to_device`` normalises the batch. Both resize on uint8, so
they may differ only by the rounding of the multiply-add (a few float32 ulp: atol 1e-6 on
values within [-2.2, 2.7]); clips without video must come out as the float path's zeros.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from loader_fixtures import zarr_store  # noqa: F401
from torch.utils.data import DataLoader, Subset

from store.datasets import ClipDataset
from store.jpeg import collate
from store.views import make_view
from store.views.mixup import Mixup
from store.views.render import IMAGENET_MEAN, IMAGENET_STD
from store.views.sample import SampleView
from store.views.video import ClipView

ULP = {"rtol": 1e-6, "atol": 1e-6}


def _batches(store: str, view: SampleView) -> list[dict]:
    ds = ClipDataset(store, view, seed=3, deterministic=True)  # with and without video
    return list(DataLoader(Subset(ds, range(6)), batch_size=3, collate_fn=collate))


@pytest.mark.parametrize("name", ["mavil_pretrain", "mavil_eval10", "cavmae_train"])
def test_uint8_batches_normalised_on_the_device_equal_the_float_path(
    zarr_store: str, name: str  # noqa: F811
) -> None:
    view_f = make_view(name, labels=False)
    view_u = make_view(name, labels=False, pixels="uint8")
    batches = _batches(zarr_store, view_u)
    for bf, bu in zip(_batches(zarr_store, view_f), batches, strict=True):
        assert bu["video"].dtype == torch.uint8 and bf["video"].dtype == torch.float32
        assert bu["video"].numel() == bf["video"].numel()  # 4x fewer bytes between processes
        got = view_u.to_device(bu, "cpu")
        want = view_f.to_device(bf, "cpu")  # float video passes through unchanged
        assert want["video"] is bf["video"]
        torch.testing.assert_close(got["video"], want["video"], **ULP)
        assert torch.equal(got["audio"], want["audio"])
        # an independent reference for the pixels of clips with video: torchvision Normalize
        has = bu["has_video"]
        ref = TF.normalize(bu["video"][has].float() / 255.0, IMAGENET_MEAN, IMAGENET_STD)
        torch.testing.assert_close(got["video"][has], ref, **ULP)
        assert bool((got["video"][~has] == 0).all())  # missing video: the float path's zeros
    assert not bool(torch.cat([b["has_video"] for b in batches]).all())  # both kinds seen


def test_trainer_loader_ships_uint8_and_the_loop_inputs_match_the_float_path(
    zarr_store: str,  # noqa: F811
) -> None:
    from omegaconf import OmegaConf

    from store import open_store
    from train.config import Config
    from train.data import build_loader

    cfg = OmegaConf.structured(Config)
    cfg.data.store, cfg.data.batch_size, cfg.model.inputs = zarr_store, 4, ["audio", "video"]
    store = open_store(zarr_store)
    loader = build_loader(cfg, store, 0, 1, None)
    view = loader.dataset.view
    assert view.video.pixels == "uint8"
    loader.set_epoch(0)
    uint8 = [view.to_device(b, "cpu") for b in loader]  # what train/loop.py feeds the model
    loader.dataset.view = dataclasses.replace(
        view, video=dataclasses.replace(view.video, pixels="float"))  # the old path
    loader.set_epoch(0)
    old = list(loader)
    assert len(old) == len(uint8) > 0
    for a, b in zip(uint8, old, strict=True):
        assert torch.equal(a["index"], b["index"])
        torch.testing.assert_close(a["video"], b["video"], **ULP)
        assert torch.equal(a["audio"], b["audio"])


def test_video_mixup_keeps_float_pixels() -> None:
    with pytest.raises(ValueError, match="uint8"):
        SampleView(video=ClipView(pixels="uint8"), mixup=Mixup(prob=0.5))
    with pytest.raises(ValueError, match="pixels"):
        ClipView(pixels="uint16")
    assert make_view("mavil_finetune", pixels="float").video.pixels == "float"
