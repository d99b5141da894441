"""MAE encoder and decoder for one modality, built from the shared blocks.

``ModalityEncoder`` (MAE ``forward_encoder``): patch embedding + fixed sin-cos positional
embedding (``pos_layout``, pos_embed.py: audio "audiomae" | "geometric", video "separable" |
"3d"), optional masking, a [CLS] token, ViT blocks and a final LayerNorm. Attribute names
match MAE / AudioMAE checkpoints (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N``, ``norm``). ``pos_embed`` is a fixed buffer [1, 1 + L, D] (zero row for [CLS]).

``MaskedDecoder`` (MAE ``forward_decoder``): project the visible tokens, fill the removed
positions with a learned [MASK] token, restore the original order, add fixed decoder
positional embeddings, run the blocks and a linear prediction head.

:func:`build_audio_encoder` / :func:`build_video_encoder` make the two encoders every model
with MAViL-style branches uses (MAViL, its classifiers, Audio-MAE / Video-MAE).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import LayerNorm6, init_mae_weights, make_blocks, vit_size
from .masking import gather_tokens, unshuffle
from .patch_embed import AudioPatchEmbed, VideoPatchEmbed
from .pos_embed import sincos_pos_embed_for_grid


class ModalityEncoder(nn.Module):
    """ViT encoder over the (visible) tokens of one modality."""

    def __init__(
        self,
        patch_embed: nn.Module,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        pos_layout: str | None = None,
    ) -> None:
        super().__init__()
        self.patch_embed = patch_embed
        self.grid_size = tuple(patch_embed.grid_size)
        self.num_patches = patch_embed.num_patches
        self.dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = sincos_pos_embed_for_grid(dim, self.grid_size, cls_token=True, layout=pos_layout)
        self.register_buffer("pos_embed", pos.unsqueeze(0), persistent=True)
        self.blocks = make_blocks(dim, depth, heads, mlp_ratio, drop_path)
        self.norm = LayerNorm6(dim)
        self.blocks.apply(init_mae_weights)
        self.norm.apply(init_mae_weights)
        nn.init.normal_(self.cls_token, std=0.02)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input -> [B, L, D] patch tokens with positional embedding (no [CLS]).

        Under autocast the conv output is bf16 and the fixed table fp32, so the residual
        stream stays fp32 (as in MAE); the blocks' matmuls still run in bf16.
        """
        return self.patch_embed(x) + self.pos_embed[:, 1:, :]

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Positioned tokens [B, n, D] -> [B, 1 + n, D] (prepend [CLS], blocks, LayerNorm)."""
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls.to(tokens.dtype), tokens], dim=1)  # no-op unless the model is cast
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the tokens ``ids_keep`` ([B, K]) of input ``x`` (all tokens if None)."""
        tokens = self.embed(x)
        if ids_keep is not None:
            tokens = gather_tokens(tokens, ids_keep)
        return self.forward_tokens(tokens)


class MaskedDecoder(nn.Module):
    """MAE decoder: [CLS] + visible tokens -> predictions for all ``num_patches`` positions."""

    def __init__(
        self,
        in_dim: int,
        grid_size: tuple[int, ...],
        out_dim: int,
        dim: int = 512,
        depth: int = 8,
        heads: int = 16,
        mlp_ratio: float = 4.0,
        pos_layout: str | None = None,
    ) -> None:
        super().__init__()
        self.grid_size = tuple(grid_size)
        self.num_patches = 1
        for g in self.grid_size:
            self.num_patches *= g
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        pos = sincos_pos_embed_for_grid(dim, self.grid_size, cls_token=True, layout=pos_layout)
        self.register_buffer("pos_embed", pos.unsqueeze(0), persistent=True)
        self.blocks = make_blocks(dim, depth, heads, mlp_ratio)
        self.norm = LayerNorm6(dim)
        self.pred = nn.Linear(dim, out_dim)
        self.apply(init_mae_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """x: [B, 1 + K, in_dim] ([CLS] first); ids_restore [B, L] -> [B, L, out_dim]."""
        x = self.embed(x)
        patches = unshuffle(x[:, 1:, :], self.mask_token, ids_restore)
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.pos_embed  # fp32 stream (MAE)
        for blk in self.blocks:
            x = blk(x)
        return self.pred(self.norm(x))[:, 1:, :]  # drop [CLS]


def build_audio_encoder(
    size: str | dict,
    audio_size: tuple[int, int] = (1024, 128),
    patch_size: int = 16,
    drop_path: float = 0.0,
    pos_layout: str = "audiomae",
) -> ModalityEncoder:
    """ViT encoder over [B, 1, T, F] spectrograms (AudioMAE / MAViL f_a); ``pos_layout``
    "audiomae" (AudioMAE's own table, the default; pos_embed.py says why) or "geometric"."""
    s = vit_size(size)
    embed = AudioPatchEmbed(tuple(audio_size), patch_size, 1, s["dim"])
    return ModalityEncoder(embed, s["dim"], s["depth"], s["heads"], drop_path=drop_path,
                           pos_layout=pos_layout)


def build_video_encoder(
    size: str | dict,
    num_frames: int = 8,
    img_size: int = 224,
    patch_size: int = 16,
    tubelet: int = 2,
    drop_path: float = 0.0,
    pos_layout: str = "separable",
) -> ModalityEncoder:
    """ViT encoder over [B, T, 3, H, W] clips (mae_st-style tubelets / MAViL f_v);
    ``pos_layout`` "separable" (image 2-D table + temporal term: what an ImageNet MAE's
    blocks know; the default) or "3d"."""
    s = vit_size(size)
    embed = VideoPatchEmbed(num_frames, img_size, patch_size, tubelet, 3, s["dim"])
    return ModalityEncoder(embed, s["dim"], s["depth"], s["heads"], drop_path=drop_path,
                           pos_layout=pos_layout)
