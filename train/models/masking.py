"""Token masking: MAE random masking for pre-training, AudioMAE-style masking for fine-tuning.

MAE (He et al. 2022) masks by sorting per-sample uniform noise: the ``len_keep`` tokens with
the smallest noise are kept (``len_keep = int(L * (1 - mask_ratio))``). At MAViL's 80 % ratio
that keeps 102 of 512 audio tokens and 156 of 784 video tokens (plus [CLS]; MAViL
supplement B.2). Mask convention: 0 = kept (visible), 1 = removed.

MAViL's intra-modal contrast (Sec. 3.2) needs a second 20 % view "mutually exclusive from the
first": :func:`disjoint_view_ids` takes the next ``len_keep`` tokens of the same noise order.
"""

from __future__ import annotations

import torch


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x [B, L, D], ids [B, K] -> [B, K, D]."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def unshuffle(visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor
              ) -> torch.Tensor:
    """MAE decoder input: visible [B, K, D] + ``L - K`` copies of ``mask_token`` [1, 1, D], put
    back in the original token order by ``ids_restore`` [B, L] (from :func:`random_masking`).
    """
    b, k, d = visible.shape
    fill = mask_token.to(visible.dtype).expand(b, ids_restore.shape[1] - k, d)
    return gather_tokens(torch.cat([visible, fill], dim=1), ids_restore)


def num_kept(length: int, mask_ratio: float) -> int:
    """Visible tokens after masking (MAE: ``int(L * (1 - ratio))``)."""
    return int(length * (1 - mask_ratio))


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of noise.

    x: [B, L, D]. Returns ``(x_masked [B, K, D], mask [B, L] (1 = removed),
    ids_restore [B, L], ids_keep [B, K])`` with ``K = int(L * (1 - mask_ratio))``.
    """
    b, length, _ = x.shape
    len_keep = num_kept(length, mask_ratio)
    if noise is None:
        noise = torch.rand(b, length, device=x.device)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = torch.ones(b, length, device=x.device, dtype=torch.float32)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return gather_tokens(x, ids_keep), mask, ids_restore, ids_keep


def disjoint_view_ids(noise: torch.Tensor, len_keep: int, num_views: int = 2) -> list[torch.Tensor]:
    """Token ids of ``num_views`` mutually exclusive views of ``len_keep`` tokens each.

    View 0 equals ``ids_keep`` of :func:`random_masking` with the same noise; view k takes the
    next ``len_keep`` positions of the same random order (MAViL Sec. 3.2, intra-modal views).
    """
    if num_views * len_keep > noise.shape[1]:
        raise ValueError(f"{num_views} disjoint views of {len_keep} exceed {noise.shape[1]}")
    ids_shuffle = torch.argsort(noise, dim=1)
    return [ids_shuffle[:, k * len_keep : (k + 1) * len_keep] for k in range(num_views)]


def time_freq_masking(
    x: torch.Tensor, grid: tuple[int, int], mask_t_prob: float, mask_f_prob: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """AudioMAE fine-tuning masking: drop whole time rows and frequency columns of the grid.

    x: [B, T*F, D] time-major tokens on a ``grid = (T, F)`` patch grid. Keeps
    ``int(T * (1 - mask_t_prob))`` random time rows and ``int(F * (1 - mask_f_prob))`` random
    frequency columns per sample (original order kept). Returns ``(x_kept, mask [B, T*F])``.
    """
    b, length, d = x.shape
    t, f = grid
    if t * f != length:
        raise ValueError(f"grid {grid} does not match {length} tokens")
    keep_t = num_kept(t, mask_t_prob)
    keep_f = num_kept(f, mask_f_prob)
    rows = torch.argsort(torch.rand(b, t, device=x.device), dim=1)[:, :keep_t].sort(1).values
    cols = torch.argsort(torch.rand(b, f, device=x.device), dim=1)[:, :keep_f].sort(1).values
    ids = (rows[:, :, None] * f + cols[:, None, :]).reshape(b, keep_t * keep_f)
    mask = torch.ones(b, length, device=x.device, dtype=torch.float32)
    mask.scatter_(1, ids, 0.0)
    return gather_tokens(x, ids), mask


def random_token_dropping(x: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fine-tuning masking for video (MAViL B.3: 20 % random over space-time).

    Keeps ``int(L * (1 - mask_ratio))`` random tokens in their original order.
    Returns ``(x_kept, mask [B, L])``.
    """
    b, length, _ = x.shape
    len_keep = num_kept(length, mask_ratio)
    ids = torch.argsort(torch.rand(b, length, device=x.device), dim=1)[:, :len_keep]
    ids = ids.sort(1).values
    mask = torch.ones(b, length, device=x.device, dtype=torch.float32)
    mask.scatter_(1, ids, 0.0)
    return gather_tokens(x, ids), mask
