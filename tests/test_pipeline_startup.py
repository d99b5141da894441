"""Start-up of small jobs: metadata commands never import torch, ``--engine auto`` chooses
as documented, and a small manifest is cut into enough shards for every worker, a plan
recorded at creation that resumes unchanged under other ``--workers``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_fixtures import REPO, SAMPLES, PipelineSetup, pipeline_setup  # noqa: F401

from pipeline.cli import ENGINES as CLI_ENGINES
from pipeline.cli import main
from pipeline.engines import ENGINES, choose_engine
from pipeline.run import DEFAULT_SHARD_SIZE, choose_shard_size
from store import StoreSpec, open_store

# runs `pipeline ARGS` as the console script does, then says what was imported
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print("IMPORTED", "torch" in sys.modules, "pandas" in sys.modules,
                              file=sys.stderr))
sys.argv = ["pipeline", *sys.argv[1:]]
runpy.run_module("pipeline.cli", run_name="__main__")
"""


def _imports(*args: str, module: str = "pipeline.cli") -> tuple[bool, bool]:
    code = PROBE.replace('"pipeline.cli"', repr(module))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # info: 1 = problems listed
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("IMPORTED")][-1]
    torch, pandas = (w == "True" for w in line.split()[1:])
    return torch, pandas


def test_metadata_commands_do_not_import_torch(pipeline_setup: PipelineSetup  # noqa: F811
                                               ) -> None:
    store = pipeline_setup.ref_store
    for args in (["info", store], ["info", "--json", store], ["verify", "--quiet", store],
                 ["build", "--help"], ["stats", "--help"]):
        assert _imports(*args) == (False, False), args  # neither torch nor pandas
    assert _imports("info", store, module="store.cli") == (False, False)
    assert _imports("verify", "--quiet", store, module="store.cli") == (False, False)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_reading_the_index_leaves_no_arrow_thread(pipeline_setup: PipelineSetup  # noqa: F811
                                                  ) -> None:
    """Arrow pool threads alive at interpreter exit can abort a metadata command after its
    output (exit 134, apache/arrow#34314): reading the index, labels and a part's bytes
    starts none (pq.read_table's datasets path did, even with use_threads=False)."""
    code = f"""
import os, time, pyarrow as pa
from store.backends.fs import resolve
from store.index import parse_part, read_index, read_vocabulary
fs, root = resolve({pipeline_setup.ref_store!r})


def threads():  # jemalloc's background threads (more arenas on more cores) exit cleanly
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{{t}}/comm").read().strip())
        except OSError:  # exited meanwhile
            pass
    return sum(n != "jemalloc_bg_thd" for n in names)


pa.array([1])  # pyarrow's own start-up
before = threads()
index = read_index(fs, root)
read_vocabulary(fs, root)
parse_part(fs.cat_file(fs.find(root + "/index")[0]))
for _ in range(100):  # a joined reader thread can still be listed while the kernel reaps it
    after = threads()
    if after <= before:
        break
    time.sleep(0.02)
print("THREADS", before, after, index.num_rows)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    before, after, rows = (int(w) for w in proc.stdout.split("THREADS")[-1].split())
    assert rows > 0 and after == before, proc.stdout


@pytest.mark.parametrize("backend", ["zarr", "hdf5"])
def test_a_shard_task_runs_without_torch(tmp_path: Path, backend: str) -> None:
    """A task process (forkserver preload + process_shard on real clips with audio and
    video) never imports torch: the fbank is NumPy, JPEGs are PIL's. A zarr build's task
    never needs h5py nor pyarrow.compute either (~50 ms of the preload's imports); an HDF5
    build's task imports h5py itself."""
    code = f"""
import gc, sys
import pipeline.task_preload
# the preload imports with the collector off, then freezes what it imported: tasks collect
assert gc.isenabled() and gc.get_freeze_count() > 10_000, "the preload left gc off"
from pipeline.manifest import ClipSpec
from pipeline.shard_task import ShardJob, process_shard
from store import StoreSpec, create_store
assert "torch" not in sys.modules, "the preload imported torch"
root = {str(tmp_path / "store")!r}
create_store(root, StoreSpec(backend={backend!r}), None)
clips = [ClipSpec("e", "e", 0.0, 3.0, {str(SAMPLES / "earth.mp4")!r}, [0]),
         ClipSpec("h", "h", 0.0, 3.0, {str(SAMPLES / "house_lo.ogg")!r}, [0])]
summary = process_shard(ShardJob(root, 0, clips))
print("TORCH", "torch" in sys.modules, summary["statuses"])
print("LOADED", *(m for m in ("h5py", "pyarrow.compute") if m in sys.modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("TORCH")][-1]
    assert line.startswith("TORCH False") and "'ok': 2" in line, line
    loaded = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOADED")][-1].split()
    assert loaded[1:] == (["h5py"] if backend == "hdf5" else []), loaded
    store = open_store(str(tmp_path / "store"))
    earth, house = store.get("e"), store.get("h")
    assert earth.has_video and house.has_audio and house.audio_frames > 200


def test_arrow_still_converts_pandas_after_the_skipped_probe() -> None:
    code = ("from store.arrow_without_pandas import skip_pyarrow_pandas_probe as s; s()\n"
            "import sys, pyarrow as pa; pa.table({'a': [1]}).group_by('a')"
            ".aggregate([('a', 'count')])\n"
            "assert 'pandas' not in sys.modules\n"
            "import pandas as pd\n"
            "t = pa.Table.from_pandas(pd.DataFrame({'x': [1.5, 2.5]}))\n"
            "assert t.to_pandas()['x'].tolist() == [1.5, 2.5]\n"
            "assert pa.array(pd.Series([3, 4])).to_pylist() == [3, 4]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_engine_auto_chooses_as_documented() -> None:
    assert CLI_ENGINES == ENGINES and ENGINES[0] == "auto"
    assert choose_engine("auto", None, {})[0] == "local"
    assert choose_engine("auto", None, {"RAY_ADDRESS": ""})[0] == "local"
    assert choose_engine("auto", None, {"RAY_ADDRESS": "10.0.0.1:6379"})[0] == "ray"
    assert choose_engine("auto", "ray://head:10001", {})[0] == "ray"
    assert choose_engine("auto", "auto", {})[0] == "ray"
    assert choose_engine("auto", "tcp://scheduler:8786", {})[0] == "dask"
    assert choose_engine("auto", "tcp://s:8786", {"RAY_ADDRESS": "h:6379"})[0] == "dask"
    for engine in ("ray", "dask", "local"):  # explicit: kept, whatever the environment
        assert choose_engine(engine, None, {"RAY_ADDRESS": "h:6379"})[0] == engine
    engine, why = choose_engine("auto", None, {})
    assert "RAY_ADDRESS" in why and "--address" in why
    with pytest.raises(ValueError, match="unknown engine"):
        choose_engine("spark", None, {})


def test_shard_size_gives_every_worker_work() -> None:
    assert choose_shard_size(15, 2) == 2             # 8 shards: >= 4 per worker
    assert choose_shard_size(7, 2) == 1
    assert choose_shard_size(1, 8) == 1              # never under 1 clip
    assert choose_shard_size(0, 2) == 1
    assert choose_shard_size(2_000_000, 16) == DEFAULT_SHARD_SIZE  # never above 1000
    assert choose_shard_size(40_000, 4) == DEFAULT_SHARD_SIZE
    assert choose_shard_size(10_000, 4) == 625


def _manifest(path: Path, n: int) -> Path:
    """n one-second clips over the bundled sample media."""
    media = [("bigbuckbunny.mp4", 9), ("earth.mp4", 9), ("speech_two_speakers.wav", 9)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "uri", "start", "end", "labels", "split"])
        for i in range(n):
            name, span = media[i % len(media)]
            start = i // len(media) % span
            w.writerow([f"c{i:02d}", str(SAMPLES / name), start, start + 1, "a", "train"])
    return path


def _build(manifest: Path, out: Path, *extra: str) -> int:
    return main(["build", "--manifest", str(manifest), "--out", str(out), "--no-progress",
                 "--target-frames", "100", *extra])


def _report(out: Path) -> dict:
    return json.loads(sorted((out / "reports").glob("run-*.json"))[-1].read_text())


def _plan(out: Path) -> list[tuple[str, int]]:
    index = open_store(str(out)).index()
    return sorted(zip(index["clip_id"].to_pylist(), index["shard"].to_pylist(), strict=True))


def test_small_manifest_plan_is_recorded_and_stable_across_workers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    manifest, out = _manifest(tmp_path / "m.csv", 15), tmp_path / "store"
    assert _build(manifest, out, "--workers", "2") == 0  # --engine auto: the default
    captured = capsys.readouterr()
    assert "engine           local: auto: no --address or RAY_ADDRESS" in captured.err
    report = _report(out)
    assert report["engine"] == "local" and report["shard_size"] == 2
    assert report["shards_run"] == report["shards_total"] == 8
    assert report["peak_shards_at_once"] == 2  # both workers had work
    assert report["work_s"] > 0 and report["status_counts_store"] == {"ok": 15}
    spec = json.loads((out / "store.json").read_text())
    claim = json.loads((out / "manifest.json").read_text())
    assert spec["shard_size"] == 2 and claim["shard_size"] == 2 and len(claim["shards"]) == 8
    before = _plan(out)
    for workers in ("1", "4"):  # another --workers resumes the same plan: nothing to run
        assert _build(manifest, out, "--workers", workers) == 0
        again = _report(out)
        assert again["shards_run"] == 0 and again["clips_skipped_committed"] == 15
        assert again["shard_size"] == 2
        assert json.loads((out / "manifest.json").read_text()) == claim
        assert json.loads((out / "store.json").read_text()) == spec
        assert _plan(out) == before
    capsys.readouterr()
    assert _build(manifest, out, "--workers", "2", "--shard-size", "2") == 0  # same: fine
    assert _build(manifest, out, "--workers", "2", "--shard-size", "5") == 2
    err = capsys.readouterr().err
    assert "plans shards of 2 clips" in err and "--shard-size 5" in err
    assert json.loads((out / "manifest.json").read_text()) == claim  # nothing changed


def test_explicit_shard_size_and_old_stores(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m.csv", 3)
    out = tmp_path / "explicit"
    assert _build(manifest, out, "--workers", "2", "--shard-size", "3",
                  "--engine", "local") == 0
    assert _report(out)["shards_run"] == 1 and _report(out)["shard_size"] == 3
    # a store made before shard sizes were chosen: 1000-clip shards, recorded or not
    old = json.loads((out / "store.json").read_text())
    old["shard_size"] = 1000
    (out / "store.json").write_text(json.dumps(old))
    claim = json.loads((out / "manifest.json").read_text())
    claim["shard_size"] = 1000
    (out / "manifest.json").write_text(json.dumps(claim))
    assert _build(manifest, out, "--workers", "2", "--engine", "local") == 0
    assert _report(out)["shards_run"] == 0 and _report(out)["shard_size"] == 1000
    del old["shard_size"]  # store.json without the field: the 1000 every old build used
    assert StoreSpec.from_dict(old).shard_size == 1000
