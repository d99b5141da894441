"""Fixed sine-cosine positional embeddings, laid out as the official models lay them.

1-D (MAE util/pos_embed.py): for positions ``pos`` and ``D`` dims,
``omega_k = 1 / 10000^(k / (D/2))`` (k = 0..D/2-1) and the embedding is
``[sin(pos * omega), cos(pos * omega)]``. A 2-D table gives each half of the dimensions a
1-D embedding of one coordinate: ``[emb_{D/2}(first), emb_{D/2}(second)]``.

Image (MAE): a ``grid_h`` x ``grid_w`` grid flattened row-major (token ``r * grid_w + c``);
MAE's ``np.meshgrid(grid_w, grid_h)`` ("w goes first") makes the FIRST half encode the column
``c`` and the SECOND half the row ``r``: :func:`get_2d_sincos_pos_embed`.

Audio, tokens time-major (``t * F + f`` on a T x F patch grid, 64 x 8 for 10 s), layouts:

* ``"audiomae"`` (AudioMAE ``PatchEmbed_org`` + ``get_2d_sincos_pos_embed_flexible``): its
  ``patch_hw = (F, T) = (8, 64)`` is read as (rows, columns) over the time-major tokens, so
  token k gets ``[emb(k % T), emb(k // T)]`` - the first half cycles every T tokens and the
  second half counts blocks of T tokens; neither is the patch's time or frequency.
* ``"geometric"``: the MAE image convention over the true (time, freq) grid,
  ``[emb(f), emb(t)]``.
* ``"cavmae"``: CAV-MAE's ``get_2d_sincos_pos_embed(D, 8, 64)`` over its frequency-major tokens
  gives each patch ``[emb(t), emb(f)]``; here the same pairs on our time-major tokens.

MAViL and Audio-MAE default to ``"audiomae"``: MAViL's code was never released, its authors
built it on AudioMAE ("we adopt the main design choices from ... Audio-MAE", supplement B),
and AudioMAE's public checkpoints were trained with this table, so blocks initialised from
them see the code they learned. ``"geometric"`` is the 2-D geometry the papers describe.

Video, tokens t-major (``t * H * W + r * W + c``, 4 x 14 x 14), layouts:

* ``"separable"`` (default): the image model's own 2-D table over ALL ``D`` dimensions for
  space plus a 1-D sin-cos temporal term over all ``D`` dims,
  ``pos[t, s] = image2d[s] + emb_D(t)`` (the separable space + time sum of mae_st's
  ``sep_pos_embed`` and ViViT, here fixed). An ImageNet-initialised video encoder (MAViL
  Table 5d) therefore gets, frame by frame, exactly the spatial code its blocks were trained
  with, offset by one vector per time step.
* ``"3d"``: ``[emb_{D/4}(t), image2d_{3D/4}(r, c)]`` - a concatenation that leaves space only
  3/4 of the dimensions, so it cannot carry an image model's table over.

``cls_token=True`` prepends one all-zero row for the [CLS] token (MAE convention).
"""

from __future__ import annotations

import torch

AUDIO_LAYOUTS = ("audiomae", "geometric", "cavmae")
VIDEO_LAYOUTS = ("separable", "3d")


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


def sincos_pairs(dim: int, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """[n, dim]: the first half of the dims encodes ``first[k]``, the second ``second[k]``."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    return torch.cat([get_1d_sincos_pos_embed(dim // 2, first),
                      get_1d_sincos_pos_embed(dim // 2, second)], dim=1)


def get_2d_sincos_pos_embed(
    dim: int, grid_h: int, grid_w: int, cls_token: bool = False
) -> torch.Tensor:
    """[(1 +) grid_h * grid_w, dim] (MAE): first half encodes the column, second the row."""
    k = torch.arange(grid_h * grid_w)
    return _with_cls(sincos_pairs(dim, k % grid_w, k // grid_w), cls_token)


def audio_pos_embed(dim: int, grid_t: int, grid_f: int, layout: str = "audiomae",
                    cls_token: bool = False) -> torch.Tensor:
    """[(1 +) T * F, dim] table for time-major audio tokens ``t * F + f`` (module docstring)."""
    k = torch.arange(grid_t * grid_f)
    t, f = k // grid_f, k % grid_f
    if layout == "audiomae":
        emb = sincos_pairs(dim, k % grid_t, k // grid_t)
    elif layout == "geometric":
        emb = sincos_pairs(dim, f, t)
    elif layout == "cavmae":
        emb = sincos_pairs(dim, t, f)
    else:
        raise ValueError(f"unknown audio position layout {layout!r}; use one of {AUDIO_LAYOUTS}")
    return _with_cls(emb, cls_token)


def temporal_term(dim: int, grid_t: int) -> torch.Tensor:
    """[T, dim] the time step's offset in the separable video layout: 1-D sin-cos of t."""
    return get_1d_sincos_pos_embed(dim, torch.arange(grid_t))


def separable_video_pos_embed(spatial: torch.Tensor, grid_t: int) -> torch.Tensor:
    """[T * H * W, D] = ``spatial`` ([H * W, D], e.g. an image model's table) + emb_D(t)."""
    n, dim = spatial.shape
    temporal = temporal_term(dim, grid_t).to(spatial.dtype)
    return (temporal[:, None, :] + spatial[None, :, :]).reshape(grid_t * n, dim)


def video_pos_embed(dim: int, grid_t: int, grid_h: int, grid_w: int,
                    layout: str = "separable", cls_token: bool = False) -> torch.Tensor:
    """[(1 +) T * H * W, dim] table for t-major video tokens (module docstring)."""
    if layout == "separable":
        emb = separable_video_pos_embed(get_2d_sincos_pos_embed(dim, grid_h, grid_w), grid_t)
    elif layout == "3d":
        dim_t = dim // 4
        dim_s = dim - dim_t
        if dim % 4 or dim_t % 2 or dim_s % 4:
            raise ValueError(f"3-D sin-cos embedding needs dim divisible by 16, got {dim}")
        temporal = get_1d_sincos_pos_embed(dim_t, torch.arange(grid_t))  # [T, dim_t]
        spatial = get_2d_sincos_pos_embed(dim_s, grid_h, grid_w)  # [H*W, dim_s]
        hw = grid_h * grid_w
        emb = torch.cat([temporal[:, None, :].expand(grid_t, hw, dim_t),
                         spatial[None, :, :].expand(grid_t, hw, dim_s)], dim=2)
        emb = emb.reshape(grid_t * hw, dim)
    else:
        raise ValueError(f"unknown video position layout {layout!r}; use one of {VIDEO_LAYOUTS}")
    return _with_cls(emb, cls_token)


def sincos_pos_embed_for_grid(dim: int, grid: tuple[int, ...], cls_token: bool = False,
                              layout: str | None = None) -> torch.Tensor:
    """The table for a patch embedding's ``grid_size``: 2-D = audio (T, F), 3-D = video.

    ``layout`` defaults to "audiomae" for audio and "separable" for video."""
    if len(grid) == 2:
        return audio_pos_embed(dim, grid[0], grid[1], layout or "audiomae", cls_token)
    if len(grid) == 3:
        return video_pos_embed(dim, *grid, layout or "separable", cls_token=cls_token)
    raise ValueError(f"expected a 2-D or 3-D grid, got {grid}")
