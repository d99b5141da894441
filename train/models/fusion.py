"""Audio-video fusion encoder g_av (MAViL Sec. 3.1, appendix B "Fusion Encoders").

- ``vanilla``: L joint Transformer blocks over the concatenation (a_um || v_um).
- ``mbt``: multimodal bottleneck Transformer (Nagrani et al. 2021). Each layer l runs the
  SAME block g_av^l on (a_um^l || b^l) and on (v_um^l || b^l); the two updated copies of the
  bottleneck are averaged, b^{l+1} = (b_a^{l+1} + b_v^{l+1}) / 2, so audio and video exchange
  information only through the 4 learnable bottleneck tokens b^0.

The output is LayerNorm-ed per modality (``final_norm``), giving a_mm and v_mm.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import LayerNorm6, init_mae_weights, make_blocks

FUSION_KINDS = ("vanilla", "mbt")


class FusionEncoder(nn.Module):
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
    ) -> None:
        super().__init__()
        if kind not in FUSION_KINDS:
            raise ValueError(f"fusion kind must be one of {FUSION_KINDS}, got {kind!r}")
        self.kind = kind
        self.depth = depth
        self.blocks = make_blocks(dim, depth, heads, mlp_ratio, drop_path)
        self.bottleneck = None
        if kind == "mbt":
            self.bottleneck = nn.Parameter(torch.zeros(1, num_bottlenecks, dim))
            nn.init.trunc_normal_(self.bottleneck, std=0.02)
        self.norm_audio = LayerNorm6(dim) if final_norm else nn.Identity()
        self.norm_video = LayerNorm6(dim) if final_norm else nn.Identity()
        self.blocks.apply(init_mae_weights)

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
            for blk in self.blocks:
                ab = blk(torch.cat([a, b], dim=1))
                vb = blk(torch.cat([v, b], dim=1))
                a, v = ab[:, :na], vb[:, :nv]
                b = 0.5 * (ab[:, na:] + vb[:, nv:])
        return self.norm_audio(a), self.norm_video(v)
