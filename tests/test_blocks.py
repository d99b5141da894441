"""Shared building blocks: attention, blocks, patch embeddings, positional embeddings, masking.

References are independent: explicit softmax attention, explicit loops over patches and
positions, the paper's token counts (MAViL supplement B.2).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from train.models.blocks import VIT_SIZES, Attention, Block, DropPath
from train.models.masking import (
    disjoint_view_ids,
    gather_tokens,
    random_masking,
    random_token_dropping,
    time_freq_masking,
)
from train.models.patch_embed import AudioPatchEmbed, VideoPatchEmbed, inflate_patch_embed_weight
from train.models.pos_embed import get_2d_sincos_pos_embed, video_pos_embed

torch.set_num_threads(1)


def test_attention_matches_explicit_softmax():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4).eval()
    x = torch.randn(3, 7, 32)
    q, k, v = attn.qkv(x).reshape(3, 7, 3, 4, 8).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    ref = attn.proj((weights @ v).transpose(1, 2).reshape(3, 7, 32))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)


def test_attention_calls_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    Block(32, 4)(torch.randn(2, 5, 32))
    assert calls == [torch.Size([2, 4, 5, 8])]


def test_block_parameter_names_follow_timm():
    names = {n for n, _ in Block(64, 4).named_parameters()}
    expected = {
        f"{m}.{p}"
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for p in ("weight", "bias")
    }
    assert names == expected
    assert Block(64, 4).mlp.fc1.out_features == 256  # mlp_ratio 4
    assert Block(64, 4).norm1.eps == Block(64, 4).norm2.eps == 1e-6
    assert Block(64, 4).attn.qkv.bias is not None
    assert VIT_SIZES["small"] == dict(dim=384, depth=12, heads=6)
    assert VIT_SIZES["base"] == dict(dim=768, depth=12, heads=12)
    assert VIT_SIZES["large"] == dict(dim=1024, depth=24, heads=16)


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    dp = DropPath(0.5)
    x = torch.ones(4000, 3, 2)
    y = dp(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}  # kept samples rescaled by 1/keep
    assert (per_sample == per_sample[:, :1]).all()  # a sample is dropped whole
    assert abs(per_sample[:, 0].mean().item() - 1.0) < 0.1  # unbiased in expectation
    assert torch.equal(dp.eval()(x), x)


def test_audio_patch_embed_grid_and_time_major_order():
    torch.manual_seed(0)
    pe = AudioPatchEmbed(dim=24)
    spec = torch.randn(2, 1, 1024, 128)
    tokens = pe(spec)
    assert pe.grid_size == (64, 8) and pe.num_patches == 512 and tokens.shape == (2, 512, 24)
    patches = pe.patchify(spec)
    for t, f in [(0, 0), (0, 7), (1, 0), (63, 5)]:  # token t * 8 + f is patch (t, f)
        ref = spec[:, 0, 16 * t : 16 * t + 16, 16 * f : 16 * f + 16].reshape(2, -1)
        torch.testing.assert_close(patches[:, t * 8 + f], ref)
    w = pe.proj.weight.reshape(24, -1)  # conv == linear map of the patchified patch
    torch.testing.assert_close(tokens, patches @ w.T + pe.proj.bias, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pe.unpatchify(patches), spec)


def test_video_patch_embed_grid_and_layout():
    torch.manual_seed(0)
    pe = VideoPatchEmbed(dim=16)
    video = torch.randn(1, 8, 3, 224, 224)  # [B, T, C, H, W] as the loader hands it over
    tokens = pe(video)
    assert pe.grid_size == (4, 14, 14) and pe.num_patches == 784 and tokens.shape == (1, 784, 16)
    patches = pe.patchify(video)
    t, h, w = 3, 5, 13
    cell = video[0, 2 * t : 2 * t + 2, :, 16 * h : 16 * h + 16, 16 * w : 16 * w + 16]
    ref = cell.permute(0, 2, 3, 1).reshape(-1)  # (u, p, q, c) order
    torch.testing.assert_close(patches[0, t * 196 + h * 14 + w], ref)
    weight = pe.proj.weight.permute(0, 2, 3, 4, 1).reshape(16, -1)  # [D, u, p, q, c]
    torch.testing.assert_close(tokens, patches @ weight.T + pe.proj.bias, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pe.unpatchify(patches), video)
    with pytest.raises(ValueError):
        pe(video.permute(0, 2, 1, 3, 4))  # [B, C, T, H, W] is rejected


def test_inflated_kernel_reproduces_image_embedding_on_static_clip():
    torch.manual_seed(0)
    conv2d = torch.nn.Conv2d(3, 16, 16, 16)
    pe = VideoPatchEmbed(num_frames=4, img_size=32, dim=16)
    with torch.no_grad():
        pe.proj.weight.copy_(inflate_patch_embed_weight(conv2d.weight, tubelet=2))
        pe.proj.bias.copy_(conv2d.bias)
    frame = torch.randn(1, 3, 32, 32)
    clip = frame[:, None].expand(1, 4, 3, 32, 32)
    image_tokens = conv2d(frame).flatten(2).transpose(1, 2)  # [1, 4, 16]
    video_tokens = pe(clip)  # [1, 2 * 4, 16]
    torch.testing.assert_close(video_tokens[:, :4], image_tokens, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(video_tokens[:, 4:], image_tokens, rtol=1e-4, atol=1e-5)


def _sincos_1d(dim: int, p: float) -> list[float]:
    omegas = [1.0 / 10000 ** (k / (dim / 2)) for k in range(dim // 2)]
    return [math.sin(p * o) for o in omegas] + [math.cos(p * o) for o in omegas]


def test_2d_sincos_matches_hand_formula_on_audio_grid():
    emb = get_2d_sincos_pos_embed(16, 64, 8, cls_token=True)
    assert emb.shape == (513, 16) and emb[0].abs().sum() == 0
    for r, c in [(0, 0), (3, 5), (63, 7)]:
        ref = torch.tensor(_sincos_1d(8, c) + _sincos_1d(8, r))  # columns first (MAE)
        torch.testing.assert_close(emb[1 + r * 8 + c], ref)


def test_3d_sincos_splits_time_and_space():
    emb = video_pos_embed(32, 4, 14, 14, "3d")
    assert emb.shape == (784, 32)
    for t, r, c in [(0, 0, 0), (2, 3, 11), (3, 13, 13)]:
        ref = torch.tensor(_sincos_1d(8, t) + _sincos_1d(12, c) + _sincos_1d(12, r))
        torch.testing.assert_close(emb[t * 196 + r * 14 + c], ref)
    assert len({tuple(row.tolist()) for row in emb}) == 784  # every position distinct


@pytest.mark.parametrize("length,visible", [(512, 102), (784, 156)])
def test_random_masking_counts_and_restore(length, visible):
    torch.manual_seed(0)
    x = torch.randn(3, length, 4)
    x_masked, mask, ids_restore, ids_keep = random_masking(x, 0.8)
    assert x_masked.shape == (3, visible, 4) and ids_keep.shape == (3, visible)
    assert (mask.sum(1) == length - visible).all()
    assert (mask.gather(1, ids_keep) == 0).all()
    torch.testing.assert_close(x_masked, gather_tokens(x, ids_keep))
    # MAE unshuffle: visible tokens + placeholders, gathered by ids_restore, give back x
    filler = torch.zeros(3, length - visible, 4)
    full = gather_tokens(torch.cat([x_masked, filler], 1), ids_restore)
    torch.testing.assert_close(full * (1 - mask[..., None]), x * (1 - mask[..., None]))


def test_disjoint_views_are_exclusive_and_first_is_the_kept_set():
    noise = torch.rand(5, 512)
    _, _, _, ids_keep = random_masking(torch.zeros(5, 512, 1), 0.8, noise=noise)
    view1, view2 = disjoint_view_ids(noise, 102, 2)
    assert torch.equal(view1, ids_keep)
    for a, b in zip(view1.tolist(), view2.tolist(), strict=True):
        assert len(set(a)) == len(set(b)) == 102 and not set(a) & set(b)


def test_finetune_time_freq_masking_drops_rows_and_columns():
    torch.manual_seed(0)
    x = torch.arange(512.0).reshape(1, 512, 1).repeat(2, 1, 1)
    kept, mask = time_freq_masking(x, (64, 8), 0.2, 0.2)
    assert kept.shape == (2, 51 * 6, 1)  # int(64 * .8) rows x int(8 * .8) columns
    grid = (1 - mask).reshape(2, 64, 8)
    for g in grid:  # visible set is an outer product of kept rows and kept columns
        rows, cols = g.any(1), g.any(0)
        assert rows.sum() == 51 and cols.sum() == 6
        assert torch.equal(g.bool(), rows[:, None] & cols[None, :])
    ids = kept[..., 0].long()
    assert (ids.diff(dim=1) > 0).all()  # original order kept
    kept_v, mask_v = random_token_dropping(torch.randn(2, 784, 3), 0.2)
    assert kept_v.shape == (2, 627, 3) and (mask_v.sum(1) == 157).all()
