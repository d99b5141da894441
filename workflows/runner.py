"""Run a workflow's steps in order; skip the ones whose outputs are complete; stop at the
first failure so that the next run resumes there.

Everything the runner knows lives in ``WORKDIR/_workflow/NAME/``:

* ``state.json`` — the run log: the workflow, its resolved parameters, and per step its
  status (``done``, ``skipped``, ``running``, ``failed``), start / end times, seconds,
  exit code, attempts, the command, the outputs with what their check found, the step log;
  rewritten atomically after every change;
* ``events.jsonl`` — one line per event (start, skip, done, fail), appended, the history
  over all runs;
* ``logs/STEP.log`` — the command's output (also echoed here);
* ``lock`` — held (``flock``) by the runner *and* its running command, so a second runner
  on the same directory waits instead of training into the same run twice.

A command dies with the runner (``PR_SET_PDEATHSIG``: SIGTERM), so a killed runner never
leaves a trainer writing behind its back; the re-run finds the step's checkpoint and the
command itself resumes from it (``train run`` into an existing RUN, ``pipeline build``
into an existing store, ``evaluate`` with its predictions in parts).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from store.atomic import atomic_write_text
from workflows.outputs import Check, check, store_fingerprint
from workflows.spec import Artifact, Step, Workflow

Echo = Callable[[str], None]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _atomic_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


def launch_argv(step: Step, params: dict[str, Any]) -> list[str]:
    """The step's command, wrapped in ``torchrun`` when it was given more than one process.

    ``nproc_per_node`` (a number, or torchrun's ``gpu`` / ``auto``) x ``nnodes``; one process
    runs the plain command (what torchrun with one process would run, minus the agent)."""
    argv = list(step.argv)
    nproc, nnodes = str(params.get("nproc_per_node", 1)), int(params.get("nnodes", 1) or 1)
    if step.launcher != "torchrun" or (nproc == "1" and nnodes == 1):
        return argv
    launcher = ["torchrun", f"--nproc-per-node={nproc}"]
    if nnodes > 1:
        endpoint = params.get("rdzv_endpoint")
        if not endpoint:
            raise ValueError(f"step {step.name}: nnodes={nnodes} needs rdzv_endpoint=HOST:PORT")
        launcher += [f"--nnodes={nnodes}", f"--node-rank={int(params.get('node_rank', 0))}",
                     "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                     f"--rdzv-id={params.get('rdzv_id') or step.name}"]
    else:
        launcher.append("--standalone")
    return launcher + ["--no-python"] + argv


def child_env() -> dict[str, str]:
    """This interpreter's scripts folder first on PATH: ``pipeline`` / ``train`` /
    ``evaluate`` / ``torchrun`` are the ones installed beside the runner."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the lock still keeps a second runner out


class Runner:
    def __init__(self, workflow: Workflow, echo: Echo = print, stream_output: bool = True,
                 lock_wait_s: float = 60.0, until: str | None = None) -> None:
        if until is not None and until not in [s.name for s in workflow.steps]:
            raise ValueError(f"--until {until}: {workflow.name} has no step {until!r}")
        self.until = until
        self.wf = workflow
        self.echo = echo
        self.stream = stream_output
        self.lock_wait_s = lock_wait_s
        self.dir = Path(workflow.workdir) / "_workflow" / workflow.name
        self.env = child_env()
        self.state: dict[str, Any] = {}
        self._lock_fd: int | None = None
        self._child: subprocess.Popen | None = None

    # -- state ------------------------------------------------------------------------
    def load_state(self) -> None:
        """The previous run's log (nothing when there was none)."""
        try:
            self.state = json.loads((self.dir / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            self.state = {}
        self.state.setdefault("steps", {})
        self.state.setdefault("cache", {})

    def _begin(self) -> None:
        self.load_state()
        self.state.update(workflow=self.wf.name, source=self.wf.source, params=self.wf.params,
                          order=[s.name for s in self.wf.steps])

    def _save(self) -> None:
        self.state["updated"] = _now()
        _atomic_json(self.dir / "state.json", self.state)

    def _event(self, **fields: Any) -> None:
        with open(self.dir / "events.jsonl", "a") as f:
            f.write(json.dumps({"time": _now(), **fields}, default=str) + "\n")

    def _lock(self) -> None:
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.lock_wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(f"{self.dir}: another runner (or its step) is still "
                                       f"running; gave up after {self.lock_wait_s:.0f} s") from None
                if not told:
                    self.echo(f"waiting for the other runner on {self.dir} to finish ...")
                    told = True
                time.sleep(0.5)
        self._lock_fd = fd

    # -- checks -----------------------------------------------------------------------
    @staticmethod
    def _record_key(a: Artifact) -> Any:
        if a.kind == "store":
            return store_fingerprint(a.path)
        if a.kind == "file":
            try:
                st = os.stat(a.path)
            except OSError:
                return None
            return [st.st_size, st.st_mtime_ns]
        return None

    def _outputs_done(self, step: Step) -> tuple[bool, list[tuple[Artifact, Check]]]:
        recorded = self.state["steps"].get(step.name, {})
        keys = recorded.get("record_keys") if recorded.get("status") in ("done", "skipped") \
            else None
        results, done = [], True
        for i, a in enumerate(step.outputs):
            c = check(a, self.state["cache"], self.env)
            results.append((a, c))
            if not c.ok:
                done = False
            elif not c.certified:  # needs this runner's record of a success on these bytes
                key = self._record_key(a)
                if not keys or i >= len(keys) or keys[i] != key or key is None:
                    done = False
        return done, results

    # -- running ----------------------------------------------------------------------
    def _execute(self, step: Step, argv: list[str], log_path: Path) -> int:
        with open(log_path, "ab") as log:
            log.write(f"\n=== {_now()} $ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                self._child = subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env,
                    pass_fds=(self._lock_fd,) if self._lock_fd is not None else (),
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
            except FileNotFoundError:
                msg = f"command not found: {argv[0]}\n"
                log.write(msg.encode())
                self.echo(msg.strip())
                return 127
            assert self._child.stdout is not None
            out = sys.stdout.buffer
            while chunk := os.read(self._child.stdout.fileno(), 65536):
                log.write(chunk)
                log.flush()
                if self.stream:
                    out.write(chunk)
                    out.flush()
            rc = self._child.wait()
            self._child = None
            return rc

    def _forward(self, signum: int, _frame: Any) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signum)  # let the trainer checkpoint and exit
        raise KeyboardInterrupt(f"signal {signum}")

    def run(self) -> int:
        """Run to the end (0) or to the first failing step (1)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self._lock()
        old = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._run()
        except KeyboardInterrupt as err:
            self.state["status"] = "interrupted"
            self._save()
            self._event(event="interrupted", detail=str(err))
            self.echo(f"interrupted ({err}); run again to resume")
            return 130
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _run(self) -> int:
        self._begin()
        t_run = time.time()
        self.state.update(status="running", started=_now())
        self._save()
        steps = self.wf.steps
        if self.until:
            steps = steps[:[s.name for s in steps].index(self.until) + 1]
        n = len(self.wf.steps)
        skipped = 0
        self.echo(f"workflow {self.wf.name}: {n} steps, run log {self.dir / 'state.json'}")
        for i, step in enumerate(steps, 1):
            tag = f"[{i}/{n}] {step.name}"
            entry = self.state["steps"].setdefault(step.name, {"attempts": 0})
            done, results = self._outputs_done(step)
            outputs = [{"kind": a.kind, "path": a.path, "detail": c.detail} for a, c in results]
            if done:
                entry.update(status="skipped", outputs=outputs, checked=_now())
                self._save()
                self._event(event="skip", step=step.name)
                found = "; ".join(c.detail for _, c in results)
                self.echo(f"{tag}: done already, skipped ({found})")
                skipped += 1
                continue
            for a in step.inputs:
                c = check(a, self.state["cache"], self.env)
                if not c.ok:
                    return self._fail(step, entry, tag, f"input {a.kind} {a.path} is not "
                                      f"ready: {c.detail}", None)
            argv = launch_argv(step, self.wf.params)
            resuming = any(c.partial for _, c in results)
            log_path = self.dir / "logs" / f"{step.name}.log"
            entry.update(status="running", started=_now(), ended=None, rc=None, argv=argv,
                         log=str(log_path), attempts=entry.get("attempts", 0) + 1,
                         resumed=resuming)
            self._save()
            self._event(event="start", step=step.name, argv=argv, resumed=resuming)
            self.echo(f"{tag}: {'resuming' if resuming else 'running'}: {' '.join(argv)}")
            t0 = time.time()
            rc = self._execute(step, argv, log_path)
            entry.update(rc=rc, ended=_now(), seconds=round(time.time() - t0, 3))
            if rc != 0:
                return self._fail(step, entry, tag, f"exited with {rc}; see {log_path}", rc)
            entry["status"] = "done"
            entry["record_keys"] = [self._record_key(a) for a in step.outputs]
            done, results = self._outputs_done(step)
            entry["outputs"] = [{"kind": a.kind, "path": a.path, "detail": c.detail}
                                for a, c in results]
            if not done:
                bad = "; ".join(f"{a.kind} {a.path}: {c.detail}" for a, c in results if not c.ok)
                return self._fail(step, entry, tag, f"exited 0 but its outputs are not "
                                  f"complete: {bad}", rc)
            self._save()
            self._event(event="done", step=step.name, seconds=entry["seconds"],
                        outputs=entry["outputs"])
            self.echo(f"{tag}: done in {entry['seconds']:.1f} s "
                      f"({'; '.join(c.detail for _, c in results)})")
        if len(steps) < n:  # --until: the rest stays for a later run
            self.state.update(status=f"stopped after {self.until}", ended=_now())
            self._save()
            self._event(event="until", step=self.until, skipped=skipped)
            self.echo(f"workflow {self.wf.name}: stopped after {self.until} (--until); "
                      f"{len(steps) - skipped} run, {skipped} already done")
            return 0
        self.state.update(status="finished", ended=_now())
        self._save()
        self._event(event="finished", seconds=round(time.time() - t_run, 3), skipped=skipped)
        if skipped == n:
            self.echo(f"workflow {self.wf.name}: all {n} steps were already done; nothing to run")
        else:
            self.echo(f"workflow {self.wf.name}: finished ({n - skipped} run, {skipped} "
                      f"already done) in {time.time() - t_run:.1f} s")
        if self.wf.result:
            self.echo(f"result: {self.wf.result}")
        return 0

    def _fail(self, step: Step, entry: dict, tag: str, why: str, rc: int | None) -> int:
        entry.update(status="failed", error=why, ended=_now())
        self.state.update(status="failed", failed_step=step.name)
        self._save()
        self._event(event="fail", step=step.name, rc=rc, error=why)
        self.echo(f"{tag}: FAILED: {why}")
        self.echo(f"workflow {self.wf.name}: stopped at {step.name}; run the same command "
                  "again to resume there")
        return 1


def plan(workflow: Workflow, cache: dict | None = None) -> list[tuple[Step, list[str], bool]]:
    """(step, command, outputs complete?) for every step, without running anything."""
    runner = Runner(workflow, echo=lambda _s: None)
    runner.load_state()
    if cache is not None:
        runner.state["cache"] = cache
    return [(s, launch_argv(s, workflow.params), runner._outputs_done(s)[0])
            for s in workflow.steps]
