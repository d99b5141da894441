"""The console scripts are installed and answer; `eval` is never one of them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_console_scripts_declared() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"pipeline", "train", "evaluate"}
    assert "eval" not in scripts


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_placeholder_scripts_answer_help(name: str) -> None:
    exe = shutil.which(name) or str(Path(sys.executable).parent / name)
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage" in out.stdout.lower()
