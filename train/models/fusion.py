"""Audio-video fusion encoder g_av (MAViL Sec. 3.1, appendix B "Fusion Encoders").

- ``vanilla``: L joint Transformer blocks over the concatenation (a_um || v_um).
- ``mbt``: multimodal bottleneck Transformer (Nagrani et al. 2021). Layer l runs
  a_um^{l+1} || b_a^{l+1} = g_av^l(a_um^l || b^l) and
  v_um^{l+1} || b_v^{l+1} = g_av^l(v_um^l || b^l), then averages the two updated copies of
  the bottleneck, b^{l+1} = (b_a^{l+1} + b_v^{l+1}) / 2, so audio and video exchange
  information only through the 4 learnable bottleneck tokens b^0.

Shared or separate layer weights in MBT: MAViL's equation writes ONE block g_av^l for both
modalities (``mbt_weights="shared"``, our default, as the paper states it). The original MBT
(Nagrani et al. Sec. 3.2; google-research/scenic projects/mbt, ``share_encoder=False``)
gives each modality its own layer weights, theta_rgb and theta_spec;
``mbt_weights="separate"`` builds that (audio uses ``blocks``, video ``blocks_video``).

The output is LayerNorm-ed per modality (``final_norm``), giving a_mm and v_mm.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import LayerNorm6, init_mae_weights, make_blocks

FUSION_KINDS = ("vanilla", "mbt")
MBT_WEIGHTS = ("shared", "separate")


class FusionEncoder(nn.Module):
    """g_av: (a_um [B, Na, D], v_um [B, Nv, D]) -> (a_mm, v_mm), vanilla or MBT."""

    def __init__(
        self,
        dim: int,
        depth: int = 2,
        heads: int = 12,
        kind: str = "vanilla",
        num_bottlenecks: int = 4,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        final_norm: bool = True,
        mbt_weights: str = "shared",
    ) -> None:
        super().__init__()
        if kind not in FUSION_KINDS:
            raise ValueError(f"fusion kind must be one of {FUSION_KINDS}, got {kind!r}")
        if mbt_weights not in MBT_WEIGHTS:
            raise ValueError(f"mbt_weights must be one of {MBT_WEIGHTS}, got {mbt_weights!r}")
        self.kind = kind
        self.depth = depth
        self.blocks = make_blocks(dim, depth, heads, mlp_ratio, drop_path)
        self.blocks_video = None  # None: the same g_av^l for both modalities (MAViL Sec. 3.1)
        self.bottleneck = None
        if kind == "mbt":
            self.bottleneck = nn.Parameter(torch.zeros(1, num_bottlenecks, dim))
            nn.init.trunc_normal_(self.bottleneck, std=0.02)
            if mbt_weights == "separate":  # MBT's theta_spec / theta_rgb
                self.blocks_video = make_blocks(dim, depth, heads, mlp_ratio, drop_path)
        self.norm_audio = LayerNorm6(dim) if final_norm else nn.Identity()
        self.norm_video = LayerNorm6(dim) if final_norm else nn.Identity()
        self.apply(init_mae_weights)

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a: [B, Na, D], v: [B, Nv, D] -> (a_mm [B, Na, D], v_mm [B, Nv, D])."""
        na = a.shape[1]
        if self.kind == "vanilla":
            x = torch.cat([a, v], dim=1)
            for blk in self.blocks:
                x = blk(x)
            a, v = x[:, :na], x[:, na:]
        else:
            nv = v.shape[1]
            b = self.bottleneck.to(a.dtype).expand(a.shape[0], -1, -1)
            video_blocks = self.blocks if self.blocks_video is None else self.blocks_video
            for blk_a, blk_v in zip(self.blocks, video_blocks, strict=True):
                ab = blk_a(torch.cat([a, b], dim=1))
                vb = blk_v(torch.cat([v, b], dim=1))
                a, v = ab[:, :na], vb[:, :nv]
                b = 0.5 * (ab[:, na:] + vb[:, nv:])  # b^{l+1} = (b_a^{l+1} + b_v^{l+1}) / 2
        return self.norm_audio(a), self.norm_video(v)
