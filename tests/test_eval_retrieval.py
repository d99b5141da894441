"""`evaluate retrieval`: recalls and median rank against a brute-force computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import save_checkpoint
from loader_fixtures import zarr_store  # noqa: F401

from eval.cli import main
from eval.retrieval import draw_subset, retrieval_metrics
from store import open_store
from store.views import make_view


def brute_force(sim: np.ndarray) -> dict[str, float]:
    ranks = []
    for i in range(len(sim)):
        ordered = sorted(sim[i], reverse=True)
        ranks.append(ordered.index(sim[i, i]))  # 0-based; a tie counts as found (first match)
    ranks = np.array(ranks)
    return {"R@1": np.mean(ranks < 1), "R@5": np.mean(ranks < 5), "R@10": np.mean(ranks < 10),
            "median_rank": float(np.median(ranks + 1))}


def test_recalls_equal_brute_force() -> None:
    """Including ties: silent clips have identical audio embeddings."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 16))
    v = a + rng.normal(scale=1.5, size=a.shape)  # noisy pairs: ranks spread over 1..40
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    a[5:8] = a[4]  # four identical audio queries (as silent clips give)
    sim = a @ v.T
    for s in (sim, sim.T):
        got, want = retrieval_metrics(s), brute_force(s)
        for k in want:
            assert got[k] == pytest.approx(want[k])
    assert 0 < retrieval_metrics(sim)["R@1"] < 1


def test_subset_draws_up_to_n_per_class_with_a_fixed_seed() -> None:
    labels = [[0], [0, 1], [1], [1], [2], [0], [0], [1, 2]]
    s1 = draw_subset(labels, 4, 2, seed=3)
    assert s1 == draw_subset(labels, 4, 2, seed=3)
    for c in range(3):
        assert 1 <= sum(c in labels[i] for i in s1)
    assert len(s1) <= 2 * 3 and len(set(s1)) == len(s1)
    assert draw_subset(labels, 4, 100, seed=0) == list(range(8))


def test_retrieval_command_matches_brute_force_on_the_model(zarr_store, tmp_path,  # noqa: F811
                                                            capsys) -> None:
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "pt.pt", "mavil", "stage1", zarr_store, img_size=64)
    rc = main(["retrieval", "--ckpt", str(ck), "--store", zarr_store, "--out",
               str(tmp_path / "r"), "--split", "train", "--per-class", "5"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "a2v: R@1" in out.out and "v2a: R@1" in out.out
    res = json.loads((tmp_path / "r" / "retrieval.json").read_text())
    ids = (tmp_path / "r" / "retrieval_ids.txt").read_text().split()
    st = open_store(zarr_store)
    assert all(st.get(c).has_audio and st.get(c).has_video for c in ids)
    assert res["num_clips"] == len(ids) >= 2
    # recompute: the model's encoders, mean-pooled, L2-normalised, cosine, brute force
    from train.trained import load_trained

    model, _ = load_trained(ck)
    view = make_view("mavil_eval", size=64, labels=False)  # no saved norm: the family default
    samples = [view(st.get(c), torch.Generator()) for c in ids]
    with torch.no_grad():
        a = model.audio_encoder(torch.stack([s["audio"] for s in samples]))[:, 1:].mean(1)
        v = model.video_encoder(torch.stack([s["video"] for s in samples]))[:, 1:].mean(1)
    saved = np.load(tmp_path / "r" / "embeddings.npz")
    np.testing.assert_allclose(saved["audio"], F.normalize(a, dim=-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(saved["video"], F.normalize(v, dim=-1).numpy(), atol=1e-5)
    sim = saved["audio"] @ saved["video"].T  # (a random model's cosines nearly tie: rank
    for key, s in (("a2v", sim), ("v2a", sim.T)):  # on the saved ones, not recomputed ones)
        want = brute_force(s)
        for k in want:
            assert res[key][k] == pytest.approx(want[k])
    # the id list reproduces the subset; a fine-tuned checkpoint is refused in one line
    rc = main(["retrieval", "--ckpt", str(ck), "--store", zarr_store, "--out",
               str(tmp_path / "r2"), "--split", "train", "--ids",
               str(tmp_path / "r" / "retrieval_ids.txt")])
    assert rc == 0 and json.loads((tmp_path / "r2" / "retrieval.json").read_text())["a2v"] \
        == res["a2v"]
    ft = save_checkpoint(tmp_path / "ft.pt", "mavil_audio_ft", "finetune", zarr_store,
                         num_classes=5)
    capsys.readouterr()
    rc = main(["retrieval", "--ckpt", str(ft), "--store", zarr_store, "--out",
               str(tmp_path / "r3"), "--split", "train"])
    err = capsys.readouterr().err
    assert rc == 2 and "pre-trained (not fine-tuned)" in err and len(err.splitlines()) == 1
