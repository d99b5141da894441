"""A workflow file: parameters, then steps that call the project's commands.

```yaml
name: demo
result: ${workdir}/report/report.md   # printed when the run ends
params:                       # every one can be set per run: --set workers=8
  workdir: demo_out           # made absolute; the run log and step logs live here
  store: ${workdir}/store     # OmegaConf interpolation
steps:
  - name: build
    run: [pipeline, build, --manifest, "${project:}/m.csv", --out, "${store}",
          [--address, "${address}"]]          # a nested list is dropped when a value is empty
    inputs:  [{file: "${project:}/m.csv"}]
    outputs: [{store: "${store}"}]
  - name: stage1
    launcher: torchrun                       # wrapped in torchrun when nproc_per_node*nnodes > 1
    run: [train, run, stage1, --store, "${store}", --out, "${workdir}/runs/stage1"]
    outputs: [{run: "${workdir}/runs/stage1"}]
```

Output (and input) kinds are checked by :mod:`workflows.outputs`. ``${project:}`` is the
repository root (the folder holding ``workflows/``). Parsing and interpolation are
OmegaConf's; an unknown ``--set`` key is an error (a typo would otherwise run the default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

PROJECT = Path(__file__).resolve().parents[1]
KINDS = ("store", "stats", "run", "eval", "report", "file")
LAUNCHERS = ("plain", "torchrun")
# parameters every workflow has (a file may change their defaults)
DEFAULTS: dict[str, Any] = {"workdir": "workflow_out", "nproc_per_node": 1, "nnodes": 1,
                            "node_rank": 0, "rdzv_endpoint": None}

if not OmegaConf.has_resolver("project"):
    OmegaConf.register_resolver("project", lambda: str(PROJECT))


class WorkflowError(ValueError):
    """A workflow file or a --set value that cannot be used (one line, names the cause)."""


@dataclass(frozen=True)
class Artifact:
    kind: str     # one of KINDS
    path: str


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]
    inputs: tuple[Artifact, ...] = ()
    outputs: tuple[Artifact, ...] = ()
    launcher: str = "plain"


@dataclass
class Workflow:
    name: str
    source: str
    params: dict[str, Any]
    steps: list[Step] = field(default_factory=list)
    result: str | None = None   # printed at the end (the demo: the report's path)

    @property
    def workdir(self) -> str:
        return str(self.params["workdir"])


def _is_url(path: str) -> bool:
    return "://" in path


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise WorkflowError(f"--set {pair!r}: expected KEY=VALUE")
        out[key.removeprefix("params.")] = value
    return out


def load_workflow(path: str | Path, sets: dict[str, str] | None = None) -> Workflow:
    """Read, override (``sets``: KEY -> VALUE, YAML-typed) and resolve a workflow file."""
    path = Path(path)
    try:
        raw = OmegaConf.load(path)
    except FileNotFoundError:
        raise WorkflowError(f"{path}: no such workflow file") from None
    except (OmegaConfBaseException, ValueError) as err:
        raise WorkflowError(f"{path}: not a valid workflow file ({err})") from None
    if not isinstance(raw, DictConfig) or not isinstance(raw.get("steps"), ListConfig):
        raise WorkflowError(f"{path}: a workflow needs a 'steps' list")
    params = OmegaConf.merge(OmegaConf.create(DEFAULTS),
                             OmegaConf.to_container(raw, resolve=False).get("params") or {})
    if {"steps", "result"} & set(params):
        raise WorkflowError(f"{path}: 'steps' and 'result' cannot be parameter names")
    OmegaConf.set_struct(params, True)
    names = set(params.keys())  # (`in` is False for a ??? value)
    for key, value in (sets or {}).items():
        if key not in names:
            raise WorkflowError(f"--set {key}: {path.name} has no parameter {key!r} "
                                f"(it has: {', '.join(sorted(params))})")
        try:  # YAML typing, as on a command line of OmegaConf's: 8 -> int, null -> None
            params[key] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError as err:
            raise WorkflowError(f"--set {key}: {err}") from None
    OmegaConf.set_struct(params, False)
    workdir = str(params.workdir)
    if not _is_url(workdir) and "${" not in workdir:
        params.workdir = os.path.abspath(workdir)
    plain = OmegaConf.to_container(raw, resolve=False)
    root = OmegaConf.merge(params, {"steps": plain["steps"], "result": plain.get("result")})
    missing = sorted(k for k in names if OmegaConf.is_missing(params, k))
    if missing:
        raise WorkflowError(f"{path.name}: give a value for {', '.join(missing)} "
                            f"(--set {missing[0]}=...)")
    try:
        resolved = OmegaConf.to_container(root, resolve=True)
    except OmegaConfBaseException as err:
        raise WorkflowError(f"{path}: {str(err).splitlines()[0]}") from None
    steps_raw = resolved.pop("steps")
    result = resolved.pop("result")
    wf = Workflow(name=str(raw.get("name", path.stem)), source=str(path), params=resolved,
                  result=str(result) if result else None)
    seen: set[str] = set()
    for i, item in enumerate(steps_raw):
        step = _step(item, i, path)
        if step.name in seen:
            raise WorkflowError(f"{path}: two steps are named {step.name!r}")
        seen.add(step.name)
        wf.steps.append(step)
    return wf


def _argv(items: list, where: str) -> tuple[str, ...]:
    out: list[str] = []
    for item in items:
        if isinstance(item, list):  # optional group: all of it, or none when a value is unset
            if all(v is not None and str(v) != "" for v in item):
                out.extend(str(v) for v in item)
        elif item is None or isinstance(item, dict):
            raise WorkflowError(f"{where}: argument {item!r} is unset or not a plain value "
                                "(put optional arguments in a nested list)")
        else:
            out.append(str(item).lower() if isinstance(item, bool) else str(item))
    if not out:
        raise WorkflowError(f"{where}: empty command")
    return tuple(out)


def _artifacts(items: list | None, where: str) -> tuple[Artifact, ...]:
    out = []
    for item in items or []:
        if not isinstance(item, dict) or len(item) != 1:
            raise WorkflowError(f"{where}: each entry is one {{kind: path}}, got {item!r}")
        (kind, value), = item.items()
        if kind not in KINDS:
            raise WorkflowError(f"{where}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        if not value:
            raise WorkflowError(f"{where}: {kind} path is empty")
        out.append(Artifact(kind, str(value)))
    return tuple(out)


def _step(item: Any, i: int, path: Path) -> Step:
    if not isinstance(item, dict) or "name" not in item or "run" not in item:
        raise WorkflowError(f"{path}: step {i + 1} needs 'name' and 'run'")
    name = str(item["name"])
    where = f"{path.name}: step {name}"
    unknown = set(item) - {"name", "run", "inputs", "outputs", "launcher", "doc"}
    if unknown:
        raise WorkflowError(f"{where}: unknown field(s) {sorted(unknown)}")
    if not isinstance(item["run"], list):
        raise WorkflowError(f"{where}: 'run' is an argument list, never a shell string")
    launcher = str(item.get("launcher", "plain"))
    if launcher not in LAUNCHERS:
        raise WorkflowError(f"{where}: launcher {launcher!r} is not one of {LAUNCHERS}")
    outputs = _artifacts(item.get("outputs"), where + " outputs")
    if not outputs:
        raise WorkflowError(f"{where}: declare at least one output (how else is it done?)")
    return Step(name, _argv(item["run"], where), _artifacts(item.get("inputs"), where + " inputs"),
                outputs, launcher)
