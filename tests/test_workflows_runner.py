"""The workflow runner with small real commands (python -c ...): order, skip, resume at the
failed step, the run log, output checks, locking, torchrun wrapping, and a SIGKILLed
runner whose step dies with it and resumes from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workflows.runner import Runner, launch_argv
from workflows.spec import Step, WorkflowError, load_workflow

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]

# A stand-in trainer with the RUN contract of train/trained.py: counts to `steps`, one
# atomic checkpoint per step, resumes from checkpoints/last.pt, writes summary.json last.
FAKE_TRAINER = textwrap.dedent("""
    import json, os, sys, time
    out, steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ck = os.path.join(out, "checkpoints"); os.makedirs(ck, exist_ok=True)
    last = os.path.join(ck, "last.pt")
    state = json.load(open(last)) if os.path.exists(last) else {"step": 0, "trace": []}
    print("resuming from step", state["step"] if state["step"] else "fresh", flush=True)
    with open(os.path.join(out, "pid"), "w") as f: f.write(str(os.getpid()))
    while state["step"] < steps:
        time.sleep(pause)
        state["step"] += 1
        state["trace"].append(state["step"] * 7 % 11)
        tmp = last + ".tmp"
        with open(tmp, "w") as f: json.dump(state, f)
        os.replace(tmp, last)
        print("step", state["step"], flush=True)
    json.dump({"status": "finished", "checkpoint": last, "trace": state["trace"]},
              open(os.path.join(out, "summary.json"), "w"))
""")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def make_workflow(tmp: Path, fail_flag: Path | None = None, train_pause: float = 0.0) -> Path:
    trainer = write(tmp / "fake_trainer.py", FAKE_TRAINER)
    fail = f"import os,sys; os.path.exists(r'{fail_flag}') and sys.exit(3)" \
        if fail_flag else "pass"
    return write(tmp / "wf.yaml", f"""
        name: unit
        params:
          workdir: {tmp / 'work'}
          steps_to_train: 5
        steps:
          - name: first
            run: [{PY}, -c, "open('${{workdir}}/a.txt', 'w').write('a')"]
            outputs: [{{file: "${{workdir}}/a.txt"}}]
          - name: second
            run: [{PY}, -c, "{fail}; open('${{workdir}}/b.txt', 'w').write('b')"]
            inputs: [{{file: "${{workdir}}/a.txt"}}]
            outputs: [{{file: "${{workdir}}/b.txt"}}]
          - name: train
            launcher: torchrun
            run: [{PY}, {trainer}, "${{workdir}}/run", "${{steps_to_train}}", {train_pause}]
            inputs: [{{file: "${{workdir}}/b.txt"}}]
            outputs: [{{run: "${{workdir}}/run"}}]
        """)


def run(wf_path: Path, **sets: object) -> tuple[int, list[str], Runner]:
    lines: list[str] = []
    wf = load_workflow(wf_path, {k: str(v) for k, v in sets.items()})
    runner = Runner(wf, echo=lines.append, stream_output=False, lock_wait_s=5)
    return runner.run(), lines, runner


def test_runs_in_order_then_skips_everything(tmp_path: Path) -> None:
    rc, lines, runner = run(make_workflow(tmp_path))
    assert rc == 0, lines
    assert [ln.split(":")[0] for ln in lines if ln.startswith("[")] == \
        ["[1/3] first", "[1/3] first", "[2/3] second", "[2/3] second", "[3/3] train",
         "[3/3] train"]
    state = json.loads((runner.dir / "state.json").read_text())
    assert state["status"] == "finished" and state["order"] == ["first", "second", "train"]
    for name in ("first", "second", "train"):
        step = state["steps"][name]
        assert step["status"] == "done" and step["rc"] == 0 and step["seconds"] >= 0
        assert step["started"] <= step["ended"] and Path(step["log"]).is_file()
    assert state["steps"]["train"]["outputs"][0]["detail"].startswith("finished")
    events = [json.loads(ln) for ln in (runner.dir / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "done"] * 3 + ["finished"]

    rc, lines, _ = run(tmp_path / "wf.yaml")
    assert rc == 0
    assert sum("done already, skipped" in ln for ln in lines) == 3
    assert "all 3 steps were already done" in lines[-1]


def test_failed_step_stops_the_run_and_the_rerun_resumes_there(tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    flag.touch()
    wf = make_workflow(tmp_path, fail_flag=flag)
    rc, lines, runner = run(wf)
    assert rc == 1
    assert any("[2/3] second: FAILED: exited with 3" in ln for ln in lines)
    state = json.loads((runner.dir / "state.json").read_text())
    assert state["status"] == "failed" and state["failed_step"] == "second"
    assert "train" not in state["steps"] or state["steps"]["train"].get("status") is None
    assert not (tmp_path / "work" / "run").exists()
    a_mtime = (tmp_path / "work" / "a.txt").stat().st_mtime_ns

    flag.unlink()
    rc, lines, runner = run(wf)
    assert rc == 0, lines
    assert "[1/3] first: done already, skipped" in lines[1]
    assert (tmp_path / "work" / "a.txt").stat().st_mtime_ns == a_mtime  # not re-run
    state = json.loads((runner.dir / "state.json").read_text())
    assert state["steps"]["second"]["attempts"] == 2 and state["steps"]["train"]["attempts"] == 1


def test_exit_zero_without_complete_outputs_is_a_failure(tmp_path: Path) -> None:
    wf = write(tmp_path / "wf.yaml", f"""
        name: liar
        params: {{workdir: {tmp_path / 'w'}}}
        steps:
          - name: claims
            run: [{PY}, -c, "import os; os.makedirs('${{workdir}}/run/checkpoints');
                  open('${{workdir}}/run/checkpoints/last.pt','w').write('x')"]
            outputs: [{{run: "${{workdir}}/run"}}]
        """)
    rc, lines, _ = run(wf)
    assert rc == 1
    assert "exited 0 but its outputs are not complete" in lines[-2]
    assert "a checkpoint to resume from" in lines[-2]
    rc, lines, _ = run(wf)  # the re-run says it resumes (the command itself would)
    assert any("[1/1] claims: resuming:" in ln for ln in lines)


def test_a_changed_output_file_reruns_its_step(tmp_path: Path) -> None:
    wf = make_workflow(tmp_path)
    assert run(wf)[0] == 0
    (tmp_path / "work" / "b.txt").write_text("edited by hand")
    rc, lines, _ = run(wf)
    assert rc == 0
    assert "[2/3] second: running" in " ".join(lines)
    assert "[3/3] train: done already, skipped" in " ".join(lines)  # self-certified run


def test_missing_input_fails_before_running(tmp_path: Path) -> None:
    wf = write(tmp_path / "wf.yaml", f"""
        name: needs
        params: {{workdir: {tmp_path / 'w'}, store: {tmp_path / 'nostore'}}}
        steps:
          - name: train
            run: [{PY}, -c, "open('${{workdir}}/ran', 'w').write('x')"]
            inputs: [{{store: "${{store}}"}}]
            outputs: [{{file: "${{workdir}}/ran"}}]
        """)
    rc, lines, _ = run(wf)
    assert rc == 1 and "input store" in lines[-2] and "no store.json" in lines[-2]
    assert not (tmp_path / "w" / "ran").exists()


@pytest.mark.parametrize("body, message", [
    ("run: 'pipeline build --out x'", "argument list, never a shell string"),
    ("run: [x]\n    outputs: [{tarball: y}]", "unknown kind 'tarball'"),
    ("run: [x]", "declare at least one output"),
    ("run: [x, '${nope}']\n    outputs: [{file: y}]", "nope"),
])
def test_bad_workflow_files_get_one_line_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nparams: {{workdir: {tmp_path}}}\nsteps:\n"
                    f"  - name: s\n    {body}\n")
    with pytest.raises(WorkflowError, match=message):
        load_workflow(path)


def test_sets_are_typed_checked_and_optional_groups_drop(tmp_path: Path) -> None:
    path = write(tmp_path / "wf.yaml", """
        name: sets
        params: {workdir: rel_dir, workers: 2, address: null}
        steps:
          - name: s
            run: [pipeline, build, --workers, "${workers}", [--address, "${address}"]]
            outputs: [{file: x}]
        """)
    wf = load_workflow(path)
    assert wf.steps[0].argv == ("pipeline", "build", "--workers", "2")
    assert os.path.isabs(wf.workdir)
    wf = load_workflow(path, {"workers": "8", "address": "tcp://h:8786"})
    assert wf.steps[0].argv[-3:] == ("8", "--address", "tcp://h:8786")
    with pytest.raises(WorkflowError, match="has no parameter 'worker'"):
        load_workflow(path, {"worker": "8"})


def test_training_steps_get_torchrun_only_with_more_than_one_process() -> None:
    step = Step("t", ("train", "run", "stage1"), launcher="torchrun")
    assert launch_argv(step, {"nproc_per_node": 1, "nnodes": 1}) == ["train", "run", "stage1"]
    assert launch_argv(step, {"nproc_per_node": 4, "nnodes": 1}) == [
        "torchrun", "--nproc-per-node=4", "--standalone", "--no-python", "train", "run", "stage1"]
    multi = launch_argv(step, {"nproc_per_node": "gpu", "nnodes": 2, "node_rank": 1,
                               "rdzv_endpoint": "head:29500"})
    assert multi[:6] == ["torchrun", "--nproc-per-node=gpu", "--nnodes=2", "--node-rank=1",
                         "--rdzv-backend=c10d", "--rdzv-endpoint=head:29500"]
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        launch_argv(step, {"nproc_per_node": 1, "nnodes": 2})
    plain = Step("p", ("pipeline", "stats"))
    assert launch_argv(plain, {"nproc_per_node": 8}) == ["pipeline", "stats"]


def test_torchrun_launch_runs_two_processes(tmp_path: Path) -> None:
    """A real torchrun (gloo-free: each rank writes its RANK) through the runner."""
    wf = write(tmp_path / "wf.yaml", f"""
        name: tr
        params: {{workdir: {tmp_path / 'w'}, nproc_per_node: 2}}
        steps:
          - name: ranks
            launcher: torchrun
            run: [{PY}, -c, "import os; r = os.environ;
                  open('${{workdir}}/rank' + r['RANK'], 'w').write(r['WORLD_SIZE'])"]
            outputs: [{{file: "${{workdir}}/rank1"}}]
        """)
    rc, lines, _ = run(wf)
    assert rc == 0, lines
    assert (tmp_path / "w" / "rank0").read_text() == "2" == (tmp_path / "w" / "rank1").read_text()


def _runner_process(wf: Path) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "workflows", "run", str(wf), "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def test_second_runner_on_the_same_workdir_waits_then_gives_up(tmp_path: Path) -> None:
    wf = make_workflow(tmp_path, train_pause=0.5)
    first = _runner_process(wf)
    try:
        _wait_for(tmp_path / "work" / "run" / "pid")
        wfl = load_workflow(wf)
        with pytest.raises(RuntimeError, match="another runner"):
            Runner(wfl, echo=lambda _s: None, stream_output=False, lock_wait_s=0.5).run()
    finally:
        first.kill()
        first.wait()


def test_sigkilled_runner_takes_its_step_down_and_the_rerun_resumes(tmp_path: Path) -> None:
    """SIGKILL during the training step: the step's process dies too (no trainer left
    writing), the re-run skips the done steps, the step resumes from its checkpoint, and the
    result equals an uninterrupted run's."""
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    assert run(make_workflow(ref_dir))[0] == 0
    reference = json.loads((ref_dir / "work" / "run" / "summary.json").read_text())["trace"]

    wf = make_workflow(tmp_path, train_pause=0.4)
    runner = _runner_process(wf)
    last = tmp_path / "work" / "run" / "checkpoints" / "last.pt"
    _wait_for(last)
    trainer_pid = int((tmp_path / "work" / "run" / "pid").read_text())
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 20
    while _alive(trainer_pid):
        assert time.monotonic() < deadline, "the step outlived its runner"
        time.sleep(0.1)
    killed_at = json.loads(last.read_text())["step"]
    assert 1 <= killed_at < 5
    assert not (tmp_path / "work" / "run" / "summary.json").exists()

    rc, lines, runner_obj = run(wf)
    assert rc == 0, lines
    text = "\n".join(lines)
    assert "[1/3] first: done already, skipped" in text
    assert "[2/3] second: done already, skipped" in text
    assert "[3/3] train: resuming:" in text
    log = Path(json.loads((runner_obj.dir / "state.json").read_text())["steps"]["train"]["log"])
    assert f"resuming from step {killed_at}" in log.read_text()
    summary = json.loads((tmp_path / "work" / "run" / "summary.json").read_text())
    assert summary["trace"] == reference


def test_until_stops_after_the_named_step(tmp_path: Path) -> None:
    wf = load_workflow(make_workflow(tmp_path))
    lines: list[str] = []
    assert Runner(wf, echo=lines.append, stream_output=False, until="second").run() == 0
    assert "stopped after second (--until); 2 run, 0 already done" in lines[-1]
    assert not (tmp_path / "work" / "run").exists()
    with pytest.raises(ValueError, match="no step 'third'"):
        Runner(wf, until="third")
    rc, lines, _ = run(tmp_path / "wf.yaml")  # the rest, later
    assert rc == 0 and sum("done already" in ln for ln in lines) == 2
