"""Pre-training losses (MAViL Sec. 3; CAV-MAE / MAE use the same pieces).

- :func:`masked_mse`          Eq. 1 / Eq. 5: mean squared error over REMOVED patches only.
- :func:`normalize_patches`   MAE's ``norm_pix_loss`` target (per-patch mean / variance).
- :func:`info_nce`            Eq. 2: InfoNCE with cosine similarity and temperature tau.
- :func:`intra_modal_nce`     Eq. 3 (second line): mean of the audio and video view losses.
- :func:`mavil_objective`     Eq. 4 / Eq. 6: L_r + alpha * L_inter + beta * L_intra.

Symmetry: Eq. 2 is written one way (x_i is the anchor, y_j are the candidates); that is the
default here. ``symmetric=True`` averages it with the reverse direction (y anchors, as CLIP /
CAV-MAE do). Under DDP the candidates are gathered from every rank (``gather=True``) so the
negatives are the whole global batch, as with MAViL's 512-clip batch; gradients flow back
through the gather to the rank that produced each embedding.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def normalize_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE norm-pix target: standardise every patch by its own mean and (unbiased) variance."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 1 / 5 for one modality: (1/n) sum_i over the n masked patches of mean_d (p - t)^2.

    pred, target: [B, L, P]; mask: [B, L] with 1 = removed (predicted), 0 = visible.
    Computed in float32 whatever the autocast dtype.
    """
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    import torch.distributed.nn.functional as dist_fn  # differentiable all_gather

    return torch.cat(dist_fn.all_gather(x), dim=0)


def _nce_one_way(
    anchors: torch.Tensor, candidates: torch.Tensor, tau: float, offset: int
) -> torch.Tensor:
    logits = anchors @ candidates.T / tau  # cosine similarity S(x_i, y_j) / tau
    labels = torch.arange(anchors.shape[0], device=anchors.device) + offset
    return F.cross_entropy(logits, labels)  # -1/B sum_i log softmax_j(...)[i, i]


def info_nce(
    x: torch.Tensor,
    y: torch.Tensor,
    tau: float,
    symmetric: bool = False,
    gather: bool = True,
) -> torch.Tensor:
    """Eq. 2: L_c(x, y) = -1/B sum_i log exp(S(x_i, y_i)/tau) / sum_j exp(S(x_i, y_j)/tau).

    x, y: [B, H] instance embeddings (row i of x pairs with row i of y). Float32 math.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two [B, H] tensors of one shape, got {x.shape}, {y.shape}")
    x = F.normalize(x.float(), dim=-1)
    y = F.normalize(y.float(), dim=-1)
    rank, world = _world()
    if gather and world > 1:
        x_all, y_all, offset = _gather_with_grad(x), _gather_with_grad(y), rank * x.shape[0]
    else:
        x_all, y_all, offset = x, y, 0
    loss = _nce_one_way(x, y_all, tau, offset)
    if symmetric:
        loss = 0.5 * (loss + _nce_one_way(y, x_all, tau, offset))
    return loss


def intra_modal_nce(
    audio: torch.Tensor,
    audio_view2: torch.Tensor,
    video: torch.Tensor,
    video_view2: torch.Tensor,
    tau: float,
    symmetric: bool = False,
    gather: bool = True,
) -> torch.Tensor:
    """Eq. 3 (intra): 1/2 [L_c(a_emb, a~_emb) + L_c(v_emb, v~_emb)]."""
    return 0.5 * (
        info_nce(audio, audio_view2, tau, symmetric, gather)
        + info_nce(video, video_view2, tau, symmetric, gather)
    )


def mavil_objective(
    recon: torch.Tensor,
    inter: torch.Tensor | None,
    intra: torch.Tensor | None,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """Eq. 4 (stage 1, raw L_r) / Eq. 6 (stage 2, context L_r): L_r + a L_inter + b L_intra."""
    loss = recon
    if inter is not None and alpha:
        loss = loss + alpha * inter
    if intra is not None and beta:
        loss = loss + beta * intra
    return loss
