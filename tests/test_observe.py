"""The run logger: metrics.jsonl, TensorBoard event files (read back with tensorboard's own
EventAccumulator), resume truncation, the summary and the non-zero-rank no-op."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train.observe import NullLogger, RunLogger, loss_terms, make_logger, read_metrics


def _out(step: int) -> dict[str, torch.Tensor]:
    """A MAViL-like output dict whose terms are known functions of the step."""
    return {"loss": torch.tensor(10.0 / step), "loss_recon": torch.tensor(1.0 * step),
            "loss_recon_audio": torch.tensor(0.5 * step), "loss_recon_video": torch.tensor(2.0),
            "loss_inter": torch.tensor(3.0), "loss_intra": torch.tensor(4.0),
            "pred_audio": torch.zeros(2, 3, 4), "mask_audio": torch.ones(2, 3)}


def _run(run, start: int, stop: int, log_every: int = 2, epoch: int = 0) -> RunLogger:
    log = RunLogger(run, start_step=start, log_every=log_every, progress=False)
    log.start_epoch(epoch, stop)
    for step in range(start + 1, stop + 1):
        log.step(step, _out(step), lr=1e-3 * step, samples=8, data_s=0.25, step_s=1.0)
    return log


def _tb_scalars(run, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_loss_terms_pick_scalars_only():
    terms = loss_terms({**_out(1), "c_acc": torch.tensor(0.5), "loss_vec": torch.ones(3)})
    assert set(terms) == {"loss", "loss_recon", "loss_recon_audio", "loss_recon_video",
                          "loss_inter", "loss_intra", "c_acc"}


def test_jsonl_and_tensorboard_records(tmp_path):
    log = _run(tmp_path, 0, 6)
    log.scalars(6, {"mAP": 0.25})
    summary = log.finish(checkpoint=tmp_path / "checkpoints" / "last.pt")

    recs = read_metrics(tmp_path)
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6]
    # window means: steps 1,2 -> loss (10 + 5) / 2; recon (1 + 2) / 2
    assert train[0]["loss"] == pytest.approx(7.5)
    assert train[0]["loss_recon"] == pytest.approx(1.5)
    assert train[1]["loss_recon_audio"] == pytest.approx((1.5 + 2.0) / 2)
    assert train[0]["lr"] == pytest.approx(2e-3)  # the window's last lr
    assert train[0]["samples_per_s"] == pytest.approx(8.0)  # 16 samples in 2 s
    assert train[0]["data_wait"] == pytest.approx(0.25)
    assert "pred_audio" not in train[0]
    assert recs[-1] == {"kind": "eval", "step": 6, "epoch": 1, "time_s": recs[-1]["time_s"],
                        "mAP": 0.25}

    steps_values = _tb_scalars(tmp_path, "train/loss_recon")
    assert steps_values == [(2, pytest.approx(1.5)), (4, pytest.approx(3.5)),
                            (6, pytest.approx(5.5))]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/loss_recon_audio", "train/loss_recon_video", "train/loss_inter",
            "train/loss_intra", "train/lr", "train/samples_per_s", "train/data_wait",
            "eval/mAP"} <= tags

    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert on_disk["status"] == "finished" and on_disk["steps"] == 6
    assert on_disk["checkpoint"].endswith("last.pt")
    assert on_disk["final"]["loss_recon"] == pytest.approx(5.5)


def test_resume_drops_records_past_the_checkpoint(tmp_path):
    """Killed after logging step 8 with the last checkpoint at step 4: the resumed run must
    not show steps 5-8 twice, in the JSONL nor in TensorBoard."""
    log = _run(tmp_path, 0, 8)
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "step": 9, "lo')  # torn line of the kill
    time_at_4 = [r for r in read_metrics(tmp_path) if r["step"] == 4][0]["time_s"]

    log = _run(tmp_path, 4, 8)
    log.finish(checkpoint=None)
    train = [r for r in read_metrics(tmp_path) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6, 8]
    assert train[-1]["time_s"] >= time_at_4  # wall time continues across the resume
    assert [s for s, _ in _tb_scalars(tmp_path, "train/loss")] == [2, 4, 6, 8]


def test_resume_from_zero_starts_the_log_over(tmp_path):
    _run(tmp_path, 0, 4).close()
    _run(tmp_path, 0, 2).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [2]


def test_other_ranks_write_nothing(tmp_path):
    log = make_logger(tmp_path / "run", rank=1, start_step=0)
    assert isinstance(log, NullLogger)
    log.start_epoch(0, 3)
    log.step(1, _out(1), lr=1.0, samples=1, data_s=0.0, step_s=1.0)
    log.scalars(1, {"x": 1.0})
    log.print("hidden")
    assert log.finish(checkpoint=None) == {}
    assert not (tmp_path / "run").exists()
