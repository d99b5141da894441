"""`train export` (encoder-only weights that initialise a fine-tune) and `train average`
(CAV-MAE / AST weight averaging over epoch files), on run directories in the contract of
train/trained.py written here by hand."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from train.checkpoints import CheckpointError, read_public_state_dict
from train.export import (
    average_epochs,
    export_encoder,
    main_average,
    main_export,
    mean_state_dicts,
    parse_epochs,
)
from train.models import build_model
from train.models.mavil_stage2 import load_teacher
from train.trained import load_trained

KW = {"audio_size": [256, 128], "num_frames": 4, "img_size": 64}


def _config(stage: str = "stage1", name: str = "mavil", kwargs: dict | None = None) -> dict:
    return {"stage": stage, "model": {"name": name, "size": "tiny", "kwargs": kwargs or KW},
            "data": {"norm": "audioset", "store": "/nowhere", "vocabulary": []}}


def _save(path: Path, model: torch.nn.Module, config: dict, step: int, epoch: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters())
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "config": config,
                "step": step, "epoch": epoch, "rng": [{"torch": torch.get_rng_state()}]}, path)
    return path


@pytest.fixture()
def stage1_run(tmp_path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("mavil", "tiny", **KW)
    run = tmp_path / "run"
    _save(run / "checkpoints" / "last.pt", model, _config(), 12, 3)
    return run, model


@pytest.mark.parametrize("mode", ["mavil_audio_ft", "mavil_video_ft", "mavil_av_ft"])
def test_export_initialises_every_encoder_key_of_a_finetune(stage1_run, tmp_path, mode):
    run, model = stage1_run
    out = tmp_path / "enc.pt"
    assert main_export([str(run), "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)  # plain containers and tensors only
    assert not any("_decoder." in k for k in saved["model"])
    assert saved["config"]["stage"] == "stage1" and saved["config"]["export"]["encoder_only"]
    assert set(saved["model"]) == {k for k in model.state_dict() if "_decoder." not in k}

    clf = build_model(mode, "tiny", num_classes=5, **KW)
    report = clf.load_pretrained(saved["model"])
    assert report == {"missing": [], "unexpected": []}
    # every encoder tensor of the classifier now holds the pre-trained values
    own = model.state_dict()
    enc = {k: v for k, v in clf.state_dict().items() if k.startswith(("audio_encoder.",
                                                                        "video_encoder."))}
    assert enc and all(torch.equal(v, own[k]) for k, v in enc.items())
    # other projects: the public reader unwraps "model"
    assert set(read_public_state_dict(out)) == set(saved["model"])


def test_exported_stage2_student_is_a_teacher(tmp_path):
    torch.manual_seed(1)
    student = build_model("mavil", "tiny", target="features", target_dim=64, **KW)
    cfg = _config("stage2", kwargs={**KW, "target": "features", "target_dim": 64})
    src = _save(tmp_path / "s2.pt", student, cfg, 5, 1)
    export_encoder(src, tmp_path / "enc.pt")
    teacher = load_teacher(tmp_path / "enc.pt", size="tiny", **{k: tuple(v) if isinstance(
        v, list) else v for k, v in KW.items()})
    own = student.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in teacher.state_dict().items())


def test_export_refuses_a_finetuned_checkpoint_and_a_pickle(tmp_path, capsys):
    clf = build_model("mavil_audio_ft", "tiny", num_classes=3, audio_size=(256, 128))
    src = _save(tmp_path / "ft.pt", clf, _config("finetune", "mavil_audio_ft"), 1, 1)
    assert main_export([str(src), "--out", str(tmp_path / "x.pt")]) == 2
    assert "fine-tuned" in capsys.readouterr().err
    evil = tmp_path / "evil.pt"  # a pickled object, in torch's zip format and as a bare pickle
    torch.save({"model": {}, "config": {}, "x": Path("/")}, evil)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model": {}, "config": {}, "x": Path("/")}))
    for bad in (evil, raw):
        with pytest.raises(CheckpointError, match=f"{bad.name}: refused: .*could run code"):
            export_encoder(bad, tmp_path / "y.pt")
    wrong = _save(tmp_path / "wrong.pt", build_model("mavil", "tiny", **KW),
                  _config(kwargs={**KW, "img_size": 32}), 1, 1)  # config and weights disagree
    with pytest.raises(CheckpointError, match="wrong.pt: its weights do not fit"):
        export_encoder(wrong, tmp_path / "y.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt: truncated or damaged"):
        export_encoder(cut, tmp_path / "y.pt")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_mean_equals_a_hand_computed_mean():
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.5]),
         "h": torch.tensor([1.0, 3.0], dtype=torch.bfloat16), "n": torch.tensor(7)}
    b = {"w": torch.tensor([[3.0, 0.0], [1.0, -4.0]]), "b": torch.tensor([1.5]),
         "h": torch.tensor([2.0, 4.0], dtype=torch.bfloat16), "n": torch.tensor(7)}
    m = mean_state_dicts([a, b], ["a", "b"])
    assert torch.equal(m["w"], torch.tensor([[2.0, 1.0], [2.0, 0.0]]))
    assert torch.equal(m["b"], torch.tensor([1.0]))
    assert m["h"].dtype == torch.bfloat16 and torch.equal(m["h"].float(), torch.tensor([1.5, 3.5]))
    assert m["n"].item() == 7
    with pytest.raises(CheckpointError, match="integer buffer n"):
        mean_state_dicts([a, {**b, "n": torch.tensor(8)}], ["a", "b"])
    with pytest.raises(CheckpointError, match="differ in keys"):
        mean_state_dicts([a, {k: v for k, v in b.items() if k != "b"}], ["a", "b"])


def test_average_epochs_of_a_run(tmp_path):
    run = tmp_path / "run"
    models = []
    for epoch in (1, 2, 3, 4):
        torch.manual_seed(epoch)
        m = build_model("mavil", "tiny", **KW)
        models.append(m)
        _save(run / "checkpoints" / f"epoch_{epoch:04d}.pt", m, _config(), 10 * epoch, epoch)
    out = tmp_path / "wa.pt"
    assert main_average([str(run), "--epochs", "2:4", "--out", str(out)]) == 0

    model, cfg = load_trained(out)  # the contract reader accepts it
    assert cfg["average"]["epochs"] == [2, 3, 4]
    states = [m.state_dict() for m in models[1:]]
    for k, v in model.state_dict().items():
        expected = (states[0][k] + states[1][k] + states[2][k]) / 3
        torch.testing.assert_close(v, expected, rtol=0, atol=1e-6)
    saved = torch.load(out, weights_only=True)
    assert saved["epoch"] == 4 and saved["step"] == 40 and "optimizer" not in saved


def test_average_errors(tmp_path, capsys):
    run = tmp_path / "run"
    _save(run / "checkpoints" / "epoch_0001.pt", build_model("mavil", "tiny", **KW),
          _config(), 1, 1)
    assert main_average([str(run), "--epochs", "1:3", "--out", str(tmp_path / "o.pt")]) == 2
    assert "epoch(s) [2, 3]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="A:B"):
        parse_epochs("3-5")
    with pytest.raises(ValueError, match="A:B"):
        parse_epochs("0:2")
    with pytest.raises(CheckpointError, match="not a resume point"):
        average_epochs(run, (1, 1), run / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="not a run directory"):
        average_epochs(tmp_path / "nothing", (1, 1), tmp_path / "o.pt")
