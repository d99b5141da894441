"""Bad input is a one-line error before any training work; unsafe or damaged checkpoints
are refused naming the file (and the last good checkpoint)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from tests.train_fixtures import train_store  # noqa: F401 - fixture
from train.cli import main
from train.resume import step_files


class RunsCode:
    """Unpickling this would call print (any callable): what weights_only must refuse."""

    def __reduce__(self):
        return (print, ("this ran while loading a checkpoint",))


@pytest.fixture(scope="module")
def tiny_run(train_store: str, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("errors") / "stage1"
    assert main(["run", "stage1", "--store", train_store, "--out", str(out), "--recipe", "tiny",
                 "train.max_steps=2", "train.ckpt_every=1"]) == 0
    return out


def _error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: error: ") and "\n" not in err, err
    return err


def test_bad_input_one_line_before_work(train_store: str, tiny_run: Path, tmp_path: Path,  # noqa: F811
                                        capsys: pytest.CaptureFixture) -> None:
    base = ["--out", str(tmp_path / "run"), "--recipe", "tiny"]
    err = _error(capsys, ["run", "stage1", "--store", str(tmp_path / "nope"), *base])
    assert "nope" in err and "cannot open store" in err
    err = _error(capsys, ["run", "stage1", "--store", train_store, *base, "data.split=nosuch"])
    assert "no clips" in err and "nosuch" in err
    err = _error(capsys, ["run", "stage1", "--store", train_store, *base, "optim.bogus=1"])
    assert "optim.bogus" in err
    err = _error(capsys, ["run", "stage1", "--store", train_store, "--out", str(tmp_path / "r"),
                          "--recipe", "no_such_recipe"])
    assert "no_such_recipe" in err
    assert not (tmp_path / "run").exists()  # nothing was started

    # a teacher of the wrong size / the wrong model
    ckpt = torch.load(tiny_run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["config"]["model"]["size"] = "small"
    torch.save(ckpt, tmp_path / "small.pt")
    err = _error(capsys, ["run", "stage2", "--store", train_store, *base,
                          "--teacher", str(tmp_path / "small.pt")])
    assert "small.pt" in err and "MAViL-small" in err
    ckpt["config"]["model"]["name"], ckpt["config"]["stage"] = "mavil_audio_ft", "finetune"
    torch.save(ckpt, tmp_path / "ft.pt")
    err = _error(capsys, ["run", "stage2", "--store", train_store, *base,
                          "--teacher", str(tmp_path / "ft.pt")])
    assert "ft.pt" in err and "mavil_audio_ft finetune" in err
    assert not (tmp_path / "run").exists()


def test_checkpoint_with_code_is_refused(train_store: str, tiny_run: Path, tmp_path: Path,  # noqa: F811
                                         capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    last.unlink()
    torch.save({**ckpt, "extra": RunsCode()}, last)
    argv = ["run", "stage1", "--store", train_store, "--out", str(run), "--recipe", "tiny",
            "train.max_steps=2", "train.ckpt_every=1"]
    err = _error(capsys, argv)
    assert str(last) in err and "pickled Python object" in err
    assert "this ran" not in capsys.readouterr().out
    err = _error(capsys, ["run", "stage2", "--store", train_store, "--out", str(tmp_path / "s2"),
                          "--recipe", "tiny", "--teacher", str(last)])
    assert str(last) in err and "safely" in err


def test_truncated_checkpoint_names_the_last_good_one(train_store: str, tiny_run: Path,  # noqa: F811
                                                      tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    last = run / "checkpoints" / "last.pt"
    newest, good = step_files(run)[-1], step_files(run)[-2]
    last.unlink()
    os.link(newest, last)  # as the trainer leaves it (copytree copied the link apart)
    data = last.read_bytes()
    with open(last, "r+b") as fh:  # a torn write of the newest file
        fh.truncate(len(data) // 3)
    err = _error(capsys, ["run", "stage1", "--store", train_store, "--out", str(run),
                          "--recipe", "tiny", "train.max_steps=2", "train.ckpt_every=1"])
    assert str(last) in err and "truncated" in err and f"last good checkpoint is {good}" in err
