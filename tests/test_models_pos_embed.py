"""Position tables against NumPy re-derivations of the official code (not against our own
functions): MAE / AudioMAE ``util/pos_embed.py`` (``get_2d_sincos_pos_embed_from_grid``,
``get_2d_sincos_pos_embed_flexible`` with ``PatchEmbed_org.patch_hw``), CAV-MAE
``src/models/pos_embed.py`` (``get_2d_sincos_pos_embed(D, grid_h, grid_w)`` over its
frequency-major tokens), and the separable space + time sum of mae_st's ``sep_pos_embed``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.models import build_model
from train.models.encoder import build_video_encoder
from train.models.pos_embed import audio_pos_embed, temporal_term, video_pos_embed

torch.set_num_threads(1)


# ---- the official formulas, re-derived in NumPy as the repositories write them -------------
def np_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def np_2d_from_grid(dim: int, grid: np.ndarray) -> np.ndarray:
    return np.concatenate([np_1d(dim // 2, grid[0]), np_1d(dim // 2, grid[1])], axis=1)


def np_2d_flexible(dim: int, grid_size: tuple[int, int], cls_token: bool = False) -> np.ndarray:
    """AudioMAE get_2d_sincos_pos_embed_flexible (also MAE's square one, grid_size=(n, n)) and
    CAV-MAE's get_2d_sincos_pos_embed(dim, grid_h, grid_w): identical bodies."""
    grid_h = np.arange(grid_size[0], dtype=np.float32)
    grid_w = np.arange(grid_size[1], dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # here w goes first
    grid = grid.reshape([2, 1, grid_size[0], grid_size[1]])
    emb = np_2d_from_grid(dim, grid)
    if cls_token:
        emb = np.concatenate([np.zeros([1, dim]), emb], axis=0)
    return emb


def audiomae_patch_hw(input_tf: tuple[int, int], p: int = 16) -> tuple[int, int]:
    """PatchEmbed_org: img_size = (T, F) -> patch_hw = (F // p, T // p)."""
    return input_tf[1] // p, input_tf[0] // p


def close(ours: torch.Tensor, ref: np.ndarray) -> None:
    np.testing.assert_allclose(ours.detach().double().numpy(), ref, rtol=1e-5, atol=1e-6)


# ---- audio ----------------------------------------------------------------------------------
@pytest.mark.parametrize("input_tf", [(1024, 128), (256, 128)])
def test_audiomae_layout_is_audiomae_table(input_tf):
    hw = audiomae_patch_hw(input_tf)
    assert hw == (8, input_tf[0] // 16)                 # (8, 64) for 10 s, as the issue says
    ref = np_2d_flexible(64, hw, cls_token=True)
    close(audio_pos_embed(64, input_tf[0] // 16, 8, "audiomae", cls_token=True), ref)
    model = build_model("mavil", "tiny", audio_size=input_tf, num_frames=4, img_size=64)
    close(model.audio_encoder.pos_embed[0], ref)        # MAViL default: AudioMAE's table
    dec = model.audio_decoder.pos_embed[0]
    close(dec, np_2d_flexible(dec.shape[1], hw, cls_token=True))   # decoder_pos_embed too
    uni = build_model("audio_mae", "tiny", audio_size=input_tf)
    close(uni.audio_encoder.pos_embed[0], ref)
    # what the issue measured: first half encodes k % 64, second k // 64, k = t * 8 + f
    k = 1 + 8 * 3 + 5
    t_tokens = input_tf[0] // 16
    close(audio_pos_embed(64, t_tokens, 8, "audiomae")[k][None],
          np.concatenate([np_1d(32, np.array([k % t_tokens])),
                          np_1d(32, np.array([k // t_tokens]))], axis=1))


def test_geometric_layout_is_mae_convention_over_time_and_freq():
    emb = audio_pos_embed(32, 64, 8, "geometric")
    ref = np_2d_flexible(32, (64, 8))                   # rows = time, columns = freq
    close(emb, ref)
    t, f = 17, 6
    close(emb[t * 8 + f][None], np.concatenate([np_1d(16, np.array([f])),
                                                np_1d(16, np.array([t]))], axis=1))
    assert not torch.allclose(emb, audio_pos_embed(32, 64, 8, "audiomae"))


def test_cav_mae_audio_table_is_the_official_one_reordered():
    """Official: get_2d_sincos_pos_embed(D, 8, 64) over tokens f * 64 + t. Ours: time-major
    tokens t * 8 + f. After reordering the official rows to time-major they must be equal
    (before the fix the halves were swapped: max abs difference 2.0)."""
    for size, kw in (("tiny", dict(audio_size=(1024, 128), img_size=64)),
                     ("tiny", dict(audio_size=(256, 128), img_size=64))):
        model = build_model("cav_mae", size, **kw)
        n_t = kw["audio_size"][0] // 16
        for ours in (model.pos_embed_a[0], model.decoder_pos_embed_a[0]):
            official = np_2d_flexible(ours.shape[1], (8, n_t))          # f-major rows
            reordered = official.reshape(8, n_t, -1).transpose(1, 0, 2).reshape(8 * n_t, -1)
            close(ours, reordered)
            t, f = 5, 3
            row = ours[t * 8 + f].double().numpy()
            half = ours.shape[1] // 2
            np.testing.assert_allclose(row[:half], np_1d(half, np.array([t]))[0], atol=1e-6)
            np.testing.assert_allclose(row[half:], np_1d(half, np.array([f]))[0], atol=1e-6)
        close(model.pos_embed_v[0], np_2d_flexible(model.pos_embed_v.shape[2], (4, 4)))


# ---- video ----------------------------------------------------------------------------------
def test_separable_video_table_is_image_table_plus_temporal_term():
    enc = build_video_encoder("tiny", num_frames=8, img_size=224)      # default: separable
    dim = enc.dim
    image = np_2d_flexible(dim, (14, 14))               # MAE image table, all D dims
    temporal = np_1d(dim, np.arange(4))
    ref = (temporal[:, None, :] + image[None]).reshape(4 * 196, dim)
    close(enc.pos_embed[0, 1:], ref)
    assert enc.pos_embed[0, 0].abs().sum() == 0         # [CLS] row
    close(temporal_term(dim, 4), temporal)
    assert len({tuple(r.tolist()) for r in enc.pos_embed[0, 1:]}) == 784   # all distinct
    old = video_pos_embed(dim, 4, 14, 14, "3d")
    np.testing.assert_allclose(old[:196, dim // 4:].numpy(), np_2d_flexible(3 * dim // 4,
                                                                            (14, 14)), atol=1e-6)
    with pytest.raises(ValueError, match="unknown video position layout"):
        video_pos_embed(dim, 4, 14, 14, "learned")
