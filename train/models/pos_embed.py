"""Fixed sine-cosine positional embeddings (MAE util/pos_embed.py convention).

1-D: for positions ``pos`` and ``D`` dims, ``omega_k = 1 / 10000^(k / (D/2))`` for
k = 0..D/2-1 and the embedding is ``[sin(pos * omega), cos(pos * omega)]``.

2-D (MAE, AudioMAE): the grid is ``grid_h`` rows x ``grid_w`` columns flattened row-major
(token ``r * grid_w + c``). As in MAE (``np.meshgrid(grid_w, grid_h)``, "w goes first"), the
FIRST half of the dimensions encodes the column index ``c`` and the SECOND half the row index
``r``. AudioMAE's non-square grid (``get_2d_sincos_pos_embed_flexible``) keeps this exactly:
for a spectrogram the rows are the 64 time patches and the columns the 8 frequency patches.

3-D (video, our documented choice; mae_st itself learns separable embeddings): the first
``D/4`` dims are a 1-D embedding of the time index ``t`` and the remaining ``3D/4`` dims are the
2-D embedding above of (row, column) in the frame; tokens flattened t-major
(``t * H * W + r * W + c``), matching VideoPatchEmbed.

``cls_token=True`` prepends one all-zero row for the [CLS] token (MAE convention).
"""

from __future__ import annotations

import torch


def get_1d_sincos_pos_embed(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """[len(pos), dim] embedding of 1-D positions (float64 math, float32 out)."""
    if dim % 2:
        raise ValueError(f"1-D sin-cos embedding needs an even dim, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def _with_cls(emb: torch.Tensor, cls_token: bool) -> torch.Tensor:
    if cls_token:
        emb = torch.cat([emb.new_zeros(1, emb.shape[1]), emb], dim=0)
    return emb


def get_2d_sincos_pos_embed(
    dim: int, grid_h: int, grid_w: int, cls_token: bool = False
) -> torch.Tensor:
    """[(1 +) grid_h * grid_w, dim]; first half encodes the column, second half the row."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    emb = torch.cat(
        [get_1d_sincos_pos_embed(dim // 2, cols), get_1d_sincos_pos_embed(dim // 2, rows)], dim=1
    )
    return _with_cls(emb, cls_token)


def get_3d_sincos_pos_embed(
    dim: int, grid_t: int, grid_h: int, grid_w: int, cls_token: bool = False
) -> torch.Tensor:
    """[(1 +) grid_t * grid_h * grid_w, dim]: D/4 dims for time, 3D/4 for space (2-D above)."""
    dim_t = dim // 4
    dim_s = dim - dim_t
    if dim % 4 or dim_t % 2 or dim_s % 4:
        raise ValueError(f"3-D sin-cos embedding needs dim divisible by 16, got {dim}")
    temporal = get_1d_sincos_pos_embed(dim_t, torch.arange(grid_t))  # [T, dim_t]
    spatial = get_2d_sincos_pos_embed(dim_s, grid_h, grid_w)  # [H*W, dim_s]
    emb = torch.cat(
        [
            temporal[:, None, :].expand(grid_t, grid_h * grid_w, dim_t),
            spatial[None, :, :].expand(grid_t, grid_h * grid_w, dim_s),
        ],
        dim=2,
    ).reshape(grid_t * grid_h * grid_w, dim)
    return _with_cls(emb, cls_token)


def sincos_pos_embed_for_grid(
    dim: int, grid: tuple[int, ...], cls_token: bool = False
) -> torch.Tensor:
    """2-D or 3-D embedding chosen by the length of ``grid`` (a patch embedding's grid_size)."""
    if len(grid) == 2:
        return get_2d_sincos_pos_embed(dim, grid[0], grid[1], cls_token)
    if len(grid) == 3:
        return get_3d_sincos_pos_embed(dim, grid[0], grid[1], grid[2], cls_token)
    raise ValueError(f"expected a 2-D or 3-D grid, got {grid}")
