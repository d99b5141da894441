"""MAViL losses (train/losses.py) against hand computations (explicit loops, numpy)."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train import losses

torch.set_num_threads(1)


def hand_info_nce(x: np.ndarray, y: np.ndarray, tau: float) -> float:
    """Eq. 2 with explicit loops: -1/B sum_i log exp(S_ii/tau) / sum_j exp(S_ij/tau)."""
    b = x.shape[0]
    total = 0.0
    for i in range(b):
        sims = []
        for j in range(b):
            sims.append(float(x[i] @ y[j]) / (np.linalg.norm(x[i]) * np.linalg.norm(y[j])))
        denom = sum(math.exp(s / tau) for s in sims)
        total += -math.log(math.exp(sims[i] / tau) / denom)
    return total / b


def test_info_nce_matches_hand_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    for tau in (0.1, 1.0):
        got = losses.info_nce(torch.tensor(x), torch.tensor(y), tau).item()
        assert abs(got - hand_info_nce(x, y, tau)) < 1e-5
        sym = losses.info_nce(torch.tensor(x), torch.tensor(y), tau, symmetric=True).item()
        ref = 0.5 * (hand_info_nce(x, y, tau) + hand_info_nce(y, x, tau))
        assert abs(sym - ref) < 1e-5
    # scale invariance (cosine similarity) and a perfect-alignment limit
    scaled = losses.info_nce(torch.tensor(3 * x), torch.tensor(y), 0.1).item()
    assert abs(scaled - hand_info_nce(x, y, 0.1)) < 1e-5
    eye = torch.eye(4)
    assert losses.info_nce(eye, eye, 0.01).item() < 1e-6


def test_intra_modal_loss_is_mean_of_the_two_modalities():
    rng = np.random.default_rng(1)
    a, a2, v, v2 = (rng.normal(size=(4, 6)) for _ in range(4))
    got = losses.intra_modal_nce(*(torch.tensor(t) for t in (a, a2, v, v2)), tau=1.0).item()
    assert abs(got - 0.5 * (hand_info_nce(a, a2, 1.0) + hand_info_nce(v, v2, 1.0))) < 1e-5


def test_masked_mse_matches_hand_computation():
    rng = np.random.default_rng(2)
    pred, target = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    mask = np.array([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=np.float64)
    terms = [
        np.mean((pred[b, i] - target[b, i]) ** 2)
        for b in range(2)
        for i in range(5)
        if mask[b, i] == 1
    ]
    got = losses.masked_mse(torch.tensor(pred), torch.tensor(target), torch.tensor(mask))
    assert abs(got.item() - sum(terms) / len(terms)) < 1e-6


def test_norm_pix_target_and_objective():
    t = torch.randn(2, 4, 48) * 5 + 3
    n = losses.normalize_patches(t)
    torch.testing.assert_close(n.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.var(-1), torch.ones(2, 4), atol=1e-3, rtol=0)
    r, i1, i2 = torch.tensor(2.0), torch.tensor(3.0), torch.tensor(5.0)
    assert abs(losses.mavil_objective(r, i1, i2, 0.1, 0.01).item() - 2.35) < 1e-6  # Eq. 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, x: torch.Tensor, y: torch.Tensor, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    xs = x[2 * rank : 2 * rank + 2].clone().requires_grad_(True)
    loss = losses.info_nce(xs, y[2 * rank : 2 * rank + 2], 0.1, symmetric=True)
    loss.backward()  # the differentiable gather sends other ranks' gradients back here
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    out[rank] = (mean_loss.item() / 2, xs.grad.clone())
    dist.destroy_process_group()


def test_info_nce_uses_the_global_batch_under_ddp():
    """Two gloo ranks holding 2 clips each reproduce the loss of one 4-clip batch (candidates
    gathered across ranks). Each rank's gradient on its rows is the gradient of the SUM of the
    rank losses, i.e. twice that of the full-batch mean (DDP then averages over ranks)."""
    torch.manual_seed(0)
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    out = mp.Manager().dict()
    # fork is fast; after CUDA autograd has run (GPU machines) only spawn is safe
    method = "spawn" if torch.cuda.is_available() else "fork"
    mp.start_processes(
        _ddp_worker, args=(_free_port(), x, y, out), nprocs=2, join=True, start_method=method
    )
    full_x = x.clone().requires_grad_(True)
    full = losses.info_nce(full_x, y, 0.1, symmetric=True)
    full.backward()
    local = losses.info_nce(x[:2], y[:2], 0.1, symmetric=True)
    assert abs(local.item() - full.item()) > 1e-3  # gathering matters
    for rank in (0, 1):
        loss, grad = out[rank]
        assert abs(loss - full.item()) < 1e-5
        rows = slice(2 * rank, 2 * rank + 2)
        torch.testing.assert_close(grad / 2, full_x.grad[rows], atol=1e-6, rtol=1e-4)
