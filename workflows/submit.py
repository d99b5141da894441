"""Submit a whole workflow to an existing Ray cluster through the Ray Jobs API.

The job's entrypoint is the runner itself (``python -m workflows run FILE --set ...``),
run on the cluster in a copy of this project (``runtime_env.working_dir``), so every
step runs there exactly as it would here; ``pipeline`` steps inside it join the job's
cluster (``RAY_ADDRESS`` is set for a job's driver). ``--entrypoint-gpus`` reserves the
GPUs the training steps' ``torchrun`` spreads over (set ``nproc_per_node`` to match).
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from workflows.spec import PROJECT, WorkflowError

# what the job does not need from the working tree (the upload limit is Ray's, 512 MiB)
EXCLUDES = [".venv", ".git", "**/__pycache__", ".pytest_cache", ".ruff_cache", "demo_out",
            "*.pt", "*.egg-info"]
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def entrypoint(workflow_file: str | Path, sets: list[str], python: str = "python") -> str:
    """The runner's command line for the job (a path inside the project stays relative:
    the job runs in the uploaded copy of it)."""
    path = Path(workflow_file).resolve()
    try:
        shown = str(path.relative_to(PROJECT))
    except ValueError:
        shown = str(path)
    return shlex.join([python, "-m", "workflows", "run", shown, *[f"--set={s}" for s in sets]])


def check_workdir(workdir_raw: str) -> None:
    if "://" not in workdir_raw and not os.path.isabs(workdir_raw):
        raise WorkflowError(f"workdir {workdir_raw!r} is relative: a Ray job runs in a "
                            "temporary copy of the project, so give --set workdir=/shared/path")


def submit(address: str, workflow_file: str | Path, sets: list[str], *, wait: bool = True,
           python: str = "python", num_gpus: float | None = None,
           num_cpus: float | None = None, submission_id: str | None = None,
           echo: Callable[[str], None] = print, poll_s: float = 2.0) -> int:
    """Submit; with ``wait``, stream the job's log here and return 0 iff it succeeded."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    kwargs = {}
    if num_gpus:
        kwargs["entrypoint_num_gpus"] = num_gpus
    if num_cpus:
        kwargs["entrypoint_num_cpus"] = num_cpus
    cmd = entrypoint(workflow_file, sets, python)
    job_id = client.submit_job(entrypoint=cmd, submission_id=submission_id,
                               runtime_env={"working_dir": str(PROJECT), "excludes": EXCLUDES},
                               metadata={"workflow": Path(workflow_file).stem}, **kwargs)
    echo(f"submitted Ray job {job_id} to {address}: {cmd}")
    if not wait:
        echo(f"follow it with: ray job logs --address {address} --follow {job_id}")
        return 0
    shown = 0
    while True:
        status = str(client.get_job_status(job_id).value)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            echo(logs[shown:].rstrip("\n"))
            shown = len(logs)
        if status in FINAL:
            break
        time.sleep(poll_s)
    info = client.get_job_info(job_id)
    echo(f"Ray job {job_id}: {status}" + (f" ({info.message})" if info.message else ""))
    return 0 if status == "SUCCEEDED" else 1
