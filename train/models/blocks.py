"""Transformer building blocks shared by every model (ViT as in MAE / timm).

Parameter names follow timm's ``VisionTransformer`` (``norm1``, ``attn.qkv``, ``attn.proj``,
``norm2``, ``mlp.fc1``, ``mlp.fc2``) so that public MAE / AudioMAE / CAV-MAE checkpoints map
onto these modules by key prefix alone.

Attention always goes through ``torch.nn.functional.scaled_dot_product_attention`` (flash /
memory-efficient kernels on GPU); the L x L attention matrix is never built here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

# ViT sizes (Dosovitskiy et al.; MAE Table / MAViL Table 5e). "tiny" is for tests only.
VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(dim=64, depth=2, heads=4),
    "small": dict(dim=384, depth=12, heads=6),
    "base": dict(dim=768, depth=12, heads=12),
    "large": dict(dim=1024, depth=24, heads=16),
}

# MAE-style decoders: MAViL / MAE use 8 layers, 512-d, 16 heads (MAViL appendix B).
DECODER_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(dim=32, depth=1, heads=4),
    "base": dict(dim=512, depth=8, heads=16),
}

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


def vit_size(size: str | dict) -> dict[str, int]:
    """{"dim", "depth", "heads"} of a named ViT size (:data:`VIT_SIZES`) or a custom dict."""
    if isinstance(size, dict):
        return dict(size)
    if size not in VIT_SIZES:
        raise KeyError(f"unknown ViT size {size!r}; known: {sorted(VIT_SIZES)}")
    return dict(VIT_SIZES[size])


def decoder_size(decoder: str | dict | None, encoder: str | dict = "base") -> dict[str, int]:
    """{"dim", "depth", "heads"} of an MAE decoder.

    ``decoder`` is a named size (:data:`DECODER_SIZES`), a custom dict, or None for the
    default that goes with ``encoder``: the 8-layer 512-d 16-head decoder of MAE / MAViL
    (appendix B) for every encoder, except the test-only "tiny" encoder, which gets "tiny".
    """
    if isinstance(decoder, dict):
        return dict(decoder)
    if decoder is None:
        decoder = "tiny" if encoder == "tiny" else "base"
    if decoder not in DECODER_SIZES:
        raise KeyError(f"unknown decoder size {decoder!r}; known: {sorted(DECODER_SIZES)}")
    return dict(DECODER_SIZES[decoder])


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Two-layer GELU MLP of a Transformer block (no dropout: MAE / MAViL use none)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention computed by fused SDPA kernels."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        x = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v, fused
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm Transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = LayerNorm6,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def make_blocks(
    dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0
) -> nn.ModuleList:
    """``depth`` blocks with a stochastic-depth rate rising linearly to ``drop_path``."""
    rates = [drop_path * i / (depth - 1) for i in range(depth)] if depth > 1 else [drop_path]
    return nn.ModuleList(Block(dim, heads, mlp_ratio, drop_path=r) for r in rates)


def init_mae_weights(module: nn.Module) -> None:
    """MAE initialisation (models_mae.py): xavier-uniform Linear, zero bias, LayerNorm 1/0.

    Apply with ``model.apply(init_mae_weights)``; patch-embedding convs are initialised like a
    Linear by their own ``reset_parameters`` (see patch_embed.py).
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
