"""store.atomic: the one local writer every package uses for its small files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from store.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def _hidden(dirpath: Path) -> list[str]:
    return sorted(p.name for p in dirpath.iterdir() if p.name.startswith("."))


def test_writes_whole_file_with_the_usual_mode(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "b.json", '{"x": 1}\n')
    finally:
        os.umask(mask)
    assert path.read_text() == '{"x": 1}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert _hidden(path.parent) == []


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = atomic_write_bytes(tmp_path / "state.json", b"old")

    def half_then_fail(fh) -> None:
        fh.write(b"ne")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old"
    assert _hidden(tmp_path) == []


def test_sigkill_mid_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = atomic_write_bytes(tmp_path / "last.pt", b"old")
    code = textwrap.dedent(f"""
        import os, signal
        from store.atomic import atomic_write
        def write(fh):
            fh.write(b"new-but-half")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(path)!r}, write)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert path.read_bytes() == b"old"
    left = _hidden(tmp_path)  # the killed writer's temp file: hidden, never the target
    assert len(left) == 1 and left[0].startswith(".last.pt.") and left[0].endswith(".tmp")
