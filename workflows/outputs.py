"""When is a step's output complete and valid? One check per kind of artifact.

* ``store``: ``store.json`` and index parts exist, ``pipeline verify`` exits 0, and the
  build finished: its latest run report (``STORE/reports/run-*.json``) planned as many
  shards as are committed, or this runner saw the build command succeed on these very
  index parts;
* ``stats``: ``store.json`` holds ``stats.fbank_mean`` / ``fbank_std`` (``pipeline stats``);
* ``run``: ``RUN/summary.json`` says ``"status": "finished"`` and its checkpoint exists
  (the RUN contract of ``train/trained.py``);
* ``eval``: ``DIR/metrics.json`` is a JSON object (``evaluate run`` / ``retrieval``);
* ``report``: ``DIR/report.md`` exists and is not empty (``evaluate compare``);
* ``file``: the file exists and is not empty, and this runner saw its step succeed.

A killed ``pipeline build`` leaves committed shards that verify cleanly, so a store is never
trusted on ``verify`` alone. ``verify`` re-reads every byte, so its verdict is cached by the
fingerprint of the index parts (names, sizes, mtimes): a store that has not changed is not
re-read on every resume.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import fsspec

from workflows.spec import Artifact


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    certified: bool = True   # complete on its own, without the runner's success record
    partial: bool = False    # something a re-run resumes from (a checkpoint, shards)


def _fs(path: str) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(path)
    return fs, root.rstrip("/")


def _read_json(fs: Any, path: str) -> Any:
    try:
        with fs.open(path, "rb") as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None


def store_fingerprint(path: str) -> list[list] | None:
    """Index parts (name, size, mtime): the store's commit record, as it is now."""
    fs, root = _fs(path)
    try:
        infos = fs.ls(f"{root}/index", detail=True)
    except FileNotFoundError:
        return None
    parts = []
    for info in infos:
        name = os.path.basename(info["name"].rstrip("/"))
        if name.endswith(".parquet") and not name.startswith("."):
            parts.append([name, info.get("size"), str(info.get("mtime") or info.get("LastModified")
                                                      or info.get("created") or "")])
    return sorted(parts) or None


def verify(path: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """``pipeline verify --quiet PATH``: the store's own check of every checksum."""
    proc = subprocess.run(["pipeline", "verify", "--quiet", path], capture_output=True,
                          text=True, env=env)
    last = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode == 0, last


def _build_finished(path: str, parts: int) -> bool:
    fs, root = _fs(path)
    reports = sorted(fs.glob(f"{root}/reports/run-*.json"))
    if not reports:
        return False
    report = _read_json(fs, reports[-1]) or {}
    return int(report.get("shards_total", -1)) == parts


def check_store(path: str, cache: dict[str, Any], env: dict[str, str] | None = None) -> Check:
    fs, root = _fs(path)
    if not fs.exists(f"{root}/store.json"):
        return Check(False, "no store.json", partial=False)
    fingerprint = store_fingerprint(path)
    if fingerprint is None:
        return Check(False, "no committed shards yet", partial=False)
    key = f"verify:{path}"
    if cache.get(key) != fingerprint:
        ok, line = verify(path, env)
        if not ok:
            return Check(False, f"pipeline verify failed: {line}", partial=True)
        cache[key] = fingerprint
    finished = _build_finished(path, len(fingerprint))
    return Check(True, f"{len(fingerprint)} shards, verified", certified=finished, partial=True)


def check_stats(path: str) -> Check:
    fs, root = _fs(path)
    spec = _read_json(fs, f"{root}/store.json")
    if not isinstance(spec, dict):
        return Check(False, "no store.json")
    stats = spec.get("stats") or {}
    if "fbank_mean" not in stats or "fbank_std" not in stats:
        return Check(False, "store.json has no fbank stats yet")
    return Check(True, f"fbank mean {stats['fbank_mean']:.3f} std {stats['fbank_std']:.3f}")


def check_run(path: str) -> Check:
    fs, root = _fs(path)
    summary = _read_json(fs, f"{root}/summary.json")
    resumable = fs.exists(f"{root}/checkpoints/last.pt")
    if not isinstance(summary, dict) or summary.get("status") != "finished":
        state = "a checkpoint to resume from" if resumable else "no checkpoint yet"
        return Check(False, f"not finished ({state})", partial=resumable)
    ckpt = summary.get("checkpoint")
    if ckpt and not fs.exists(ckpt if os.path.isabs(str(ckpt)) or "://" in str(ckpt)
                              else f"{root}/{ckpt}"):
        return Check(False, f"summary names checkpoint {ckpt}, which is missing", partial=True)
    return Check(True, "finished" + (f" -> {ckpt}" if ckpt else ""))


def check_eval(path: str) -> Check:
    fs, root = _fs(path)
    metrics = _read_json(fs, f"{root}/metrics.json")
    if not isinstance(metrics, dict):
        return Check(False, "no metrics.json yet", partial=fs.exists(root))
    shown = {k: metrics[k] for k in ("mAP", "top1", "R@1") if isinstance(metrics.get(k), float)}
    return Check(True, " ".join(f"{k} {v:.4f}" for k, v in shown.items()) or "metrics.json")


def check_report(path: str) -> Check:
    fs, root = _fs(path)
    target = f"{root}/report.md"
    if not fs.exists(target) or fs.size(target) == 0:
        return Check(False, "no report.md yet")
    return Check(True, target)


def check_file(path: str) -> Check:
    fs, root = _fs(path)
    if not fs.exists(root):
        return Check(False, "missing")
    if not fs.isdir(root) and fs.size(root) == 0:
        return Check(False, "empty")
    return Check(True, "exists", certified=False)


def check(artifact: Artifact, cache: dict[str, Any], env: dict[str, str] | None = None) -> Check:
    if artifact.kind == "store":
        return check_store(artifact.path, cache, env)
    return {"stats": check_stats, "run": check_run, "eval": check_eval,
            "report": check_report, "file": check_file}[artifact.kind](artifact.path)
