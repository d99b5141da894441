"""A real Ray head on this machine (``ray start --head`` with the dashboard on 127.0.0.1):
a workflow submitted through the Ray Jobs API runs to the end, and ``pipeline build
--engine ray --address`` joins the running head and builds a store through it.

The head is started with ``--block`` by this module and stopped by ending that process
(SIGTERM; ``ray start --block`` then stops every process it started). ``ray stop`` would
stop every Ray process of this user on the machine, other people's included.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SAMPLES = REPO / "pipeline" / "sample_media"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayHead:
    gcs: str          # host:port for ray.init / pipeline --address
    dashboard: str    # http://127.0.0.1:port for the Jobs API
    env: dict[str, str]


def _env(token_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # token authentication with this head's own token (not whatever ~/.ray holds)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    env.pop("RAY_AUTH_TOKEN", None)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # the head descends from this `uv run` pytest: keep Ray's uv hook from rebuilding the
    # environment in a copy of the working dir for every worker
    env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    return env


def ray_query(env: dict[str, str], url: str, expr: str, timeout: float = 120) -> Any:
    """``expr`` evaluated against the cluster in a fresh interpreter, which reads this head's
    token from ``env`` (Ray caches its auth mode at import, so not in this process)."""
    code = ("import json, sys\n"
            "from ray.job_submission import JobSubmissionClient\n"
            "from ray.util.state import list_tasks\n"
            f"client = JobSubmissionClient({url!r})\n"
            f"print(json.dumps({expr}, default=str))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _start_head(temp: str, env: dict[str, str]) -> tuple[subprocess.Popen, Any, int, int]:
    """``ray start --head`` on free ports; (process, log, GCS port, dashboard port)."""
    port, dash, client = _free_port(), _free_port(), _free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
           "--port", str(port), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--include-dashboard", "true", "--ray-client-server-port", str(client),
           "--num-cpus", "2", "--temp-dir", temp, "--disable-usage-stats"]
    log = open(Path(temp) / "ray-start.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log, port, dash


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    temp = tempfile.mkdtemp(prefix="rayh-", dir="/tmp")  # unix socket paths must be short
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = _env(token)
    proc, log, port, dash = _start_head(temp, env)
    url = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 240  # a busy 2-core box takes ~40 s
    tries = 1
    try:
        while True:
            if proc.poll() is not None:
                text = (Path(temp) / "ray-start.log").read_text()
                # a port freed by _free_port can be handed to one of Ray's own components
                # before Ray checks ours ("used by other components"): new ports, once more
                assert tries < 3 and "used by other components" in text, text[-3000:]
                log.close()
                proc, log, port, dash = _start_head(temp, env)
                url, tries = f"http://127.0.0.1:{dash}", tries + 1
            try:
                ip = ray_query(env, url, "[client.list_jobs(), "
                               "__import__('ray').util.get_node_ip_address()][1]")
                break
            except RuntimeError as err:
                assert time.monotonic() < deadline, f"the Ray dashboard never answered: {err}"
                time.sleep(2)
        yield RayHead(f"{ip}:{port}", url, env)
    finally:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` stops what it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this fixture created
            proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def store_workflow(tmp: Path) -> Path:
    path = tmp / "store.yaml"
    path.write_text(textwrap.dedent(f"""
        name: store
        params:
          workdir: {tmp / 'work'}
          store: ${{workdir}}/store
          engine: ray
        steps:
          - name: build
            run: [pipeline, build, --manifest,
                  "${{project:}}/pipeline/sample_media/demo_manifest.csv", --out, "${{store}}",
                  --engine, "${{engine}}", --workers, 2, --shard-size, 4, --limit, 4,
                  --no-progress]
            outputs: [{{store: "${{store}}"}}]
          - name: stats
            run: [pipeline, stats, "${{store}}", --engine, "${{engine}}", --workers, 2]
            inputs: [{{store: "${{store}}"}}]
            outputs: [{{stats: "${{store}}"}}]
        """))
    return path


def test_workflow_submitted_through_the_ray_jobs_api(ray_head: RayHead, tmp_path: Path) -> None:
    wf = store_workflow(tmp_path)
    sid = f"wf-test-{os.getpid()}"
    proc = subprocess.run([sys.executable, "-m", "workflows", "run", str(wf), "--address",
                           ray_head.dashboard, "--submission-id", sid], cwd=REPO,
                          env=ray_head.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"Ray job {sid}: SUCCEEDED" in proc.stdout

    info = ray_query(ray_head.env, ray_head.dashboard,
                     f"[client.get_job_info({sid!r}).entrypoint, "
                     f"client.get_job_info({sid!r}).runtime_env, client.get_job_logs({sid!r})]")
    entry, runtime_env, logs = info
    assert entry.startswith("python -m workflows run ")
    assert runtime_env["working_dir"].startswith("gcs://")  # the project, uploaded
    assert "[1/2] build: running" in logs and "[2/2] stats: done" in logs
    # the pipeline steps inside the job ran their shard tasks on the job's cluster
    assert _tasks(ray_head, "process_shard") >= 1

    state = json.loads((tmp_path / "work" / "_workflow" / "store" / "state.json").read_text())
    assert state["status"] == "finished"
    assert [state["steps"][s]["status"] for s in ("build", "stats")] == ["done", "done"]
    spec = json.loads((tmp_path / "work" / "store" / "store.json").read_text())
    assert spec["stats"]["n_clips"] >= 1
    verify = subprocess.run([str(BIN / "pipeline"), "verify", "--quiet",
                             str(tmp_path / "work" / "store")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout

    # submitted again: every step already done, the job says so
    sid2 = sid + "-again"
    proc = subprocess.run([sys.executable, "-m", "workflows", "run", str(wf), "--address",
                           ray_head.dashboard, "--submission-id", sid2], cwd=REPO,
                          env=ray_head.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0
    assert "all 2 steps were already done" in ray_query(
        ray_head.env, ray_head.dashboard, f"client.get_job_logs({sid2!r})")


def test_relative_workdir_is_refused_for_a_cluster(tmp_path: Path) -> None:
    wf = store_workflow(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "workflows", "run", str(wf), "--set",
                           "workdir=rel", "--address", "http://127.0.0.1:1"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--set workdir=/shared/path" in proc.stderr


def test_pipeline_joins_the_running_head_with_address(ray_head: RayHead, tmp_path: Path) -> None:
    out = tmp_path / "store"
    before = _tasks(ray_head, "process_shard")
    proc = subprocess.run([str(BIN / "pipeline"), "build", "--manifest",
                           str(SAMPLES / "demo_manifest.csv"), "--out", str(out), "--engine",
                           "ray", "--address", ray_head.gcs, "--workers", "2", "--shard-size",
                           "2", "--limit", "4", "--no-progress"],
                          env=ray_head.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "statuses (store) {'ok': 4}" in proc.stdout
    verify = subprocess.run([str(BIN / "pipeline"), "verify", "--quiet", str(out)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
    assert _tasks(ray_head, "process_shard") >= before + 2  # 2 shards, run by the head


def _tasks(head: RayHead, name: str) -> int:
    return ray_query(head.env, head.dashboard,
                     f"len(list_tasks(address={head.dashboard!r}, filters=[('name', '=', "
                     f"{name!r})], limit=1000, raise_on_missing_output=False))")
