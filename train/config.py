"""Recipes: load a YAML recipe, apply ``KEY=VALUE`` overrides, check, resolve, save.

A recipe is a YAML file in ``train/recipes/`` (one per MAViL Table 10 column, the peers'
papers, and ``tiny`` variants). It is merged over the structured schema below with OmegaConf,
so a key that the schema does not have is an error naming the key (recipe file or command
line alike); only ``model.kwargs`` and ``data.view_kw`` are free-form (they go to the model
builder / the view). The resolved config is saved in the run (``RUN/config.yaml``) and in
every checkpoint as plain data, with what the run was built from filled in: the store's path
and format, its label vocabulary, the normalisation preset, the teacher chain and the code's
git revision (``meta``).

Recipe names: ``--recipe NAME`` looks for ``recipes/NAME_STAGE.yaml`` first, then
``recipes/NAME.yaml`` (so ``--recipe tiny`` is ``tiny_stage1`` / ``tiny_stage2`` /
``tiny_finetune`` by stage); a path to a YAML file is used as it is.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

RECIPES = Path(__file__).resolve().parent / "recipes"
REPO = Path(__file__).resolve().parents[1]
STAGES = ("stage1", "stage2", "finetune")
DEFAULT_RECIPE = {"stage1": "mavil_as2m", "stage2": "mavil_as2m", "finetune": "mavil_as20k"}


class ConfigError(ValueError):
    """A recipe or override is wrong; the message names the key or file."""


@dataclass
class ModelConfig:
    name: str = "mavil"                 # a train.models.MODEL_REGISTRY name
    size: str = "base"
    kwargs: dict[str, Any] = field(default_factory=dict)   # to the builder, free-form
    inputs: list[str] = field(default_factory=lambda: ["audio", "video"])  # forward()'s args


@dataclass
class DataConfig:
    store: str = ""
    format: str = ""                    # filled: the store's backend (zarr | hdf5)
    split: str = "train"
    require: list[str] = field(default_factory=list)   # drop clips lacking these modalities
    loader: str = "map"                 # map (random access + sampler) | stream (shard-aware)
    sampler: str = "shuffle"            # shuffle | balanced (1000 / (n_c + 0.01)) | unknown_half
    samples_per_epoch: int | None = None  # balanced: draws per epoch (AS-2M: 200,000)
    view: str = "mavil_pretrain"        # a store.views.presets name
    norm: str = "audiomae"              # normalisation preset (store/views/norm.py) or "store"
    norm_values: dict[str, Any] = field(default_factory=dict)  # filled: {name, mean, std, scale}
    audio_frames: int | None = None     # None: the store's fbank.target_frames (store.json)
    video_size: int = 224
    num_frames: int = 8
    time_mask: int | None = None        # SpecAugment (None: the view's default)
    freq_mask: int | None = None
    mixup: float | None = None
    noise_snr_db: float | None = None
    multi_label: bool = True
    batch_size: int = 8                 # per rank and micro-step
    num_workers: int = 0
    shuffle_buffer: int = 256
    view_kw: dict[str, Any] = field(default_factory=dict)
    vocabulary: list[str] = field(default_factory=list)  # filled: labels.parquet mid order
    num_classes: int = 0                # filled


@dataclass
class OptimConfig:
    base_lr: float = 2e-4               # lr = base_lr * batch_size / 256
    lr: float | None = None             # filled (absolute peak lr)
    min_lr: float = 0.0
    betas: list[float] | None = None    # None: from ``preset``
    weight_decay: float | None = None   # None: from ``preset``
    preset: str = "table10"             # table10 | audiomae_code (see train/optim.py)
    decay_tokens: bool = False          # True: decay [CLS]/mask/bottleneck tokens (timm MAE)
    warmup_epochs: float = 4.0
    epochs: int = 12
    batch_size: int = 512               # effective batch: per-rank batch x world x accum
    layer_decay: float | None = None    # e.g. 0.75 (AudioMAE fine-tuning); None: off
    video_lr_scale: float = 1.0         # 0.5 for MAViL audio+video fine-tuning (B.3)
    clip_grad: float | None = None


@dataclass
class TrainConfig:
    seed: int = 0
    max_steps: int | None = None        # stop after this many optimizer steps (tests, bench)
    log_every: int = 10
    ckpt_every: int = 0                 # also checkpoint every N optimizer steps (0: epochs)
    keep_last: int = 3                  # step checkpoints kept (epoch files are all kept)
    precision: str = "auto"             # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    compile: bool = False
    nonfinite: str = "stop"             # stop | skip
    image_every: int = 0                # reconstruction PNG every N steps (stage 1; 0: off)


@dataclass
class Stage2Config:
    teacher: str = ""
    iteration: int | None = None        # filled: K = len(chain), 1..3 in B.3
    target: str = "fusion"              # fusion (MAViL-Fusion) | uni (MAViL-Uni)
    target_norm: bool = False
    chain: list[str] = field(default_factory=list)  # filled: stage-1 ckpt, student 1, ...


@dataclass
class FinetuneConfig:
    init: str = ""                      # CKPT / RUN, or "scratch": random encoders
    mode: str = "audio"                 # audio | video | av
    loss: str = "auto"                  # auto (BCE multi-label / mixup, else CE) | bce | ce
    label_smoothing: float = 0.0


@dataclass
class InitConfig:
    video: str = ""                     # ImageNet MAE state dict (official layout); "" = random


@dataclass
class Config:
    stage: str = "stage1"
    recipe: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    init: InitConfig = field(default_factory=InitConfig)
    meta: dict[str, Any] = field(default_factory=dict)   # filled: git revision, command...


def recipe_path(name: str, stage: str, model: str | None = None) -> Path:
    """The YAML file of a recipe name or path: ``NAME_MODEL_STAGE.yaml`` (when a peer model is
    named, e.g. tiny_cav_mae_stage1), then ``NAME_STAGE.yaml``, then ``NAME.yaml``."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"recipe file {p} does not exist")
        return p
    first = [RECIPES / f"{name}_{model}_{stage}.yaml"] if model else []
    for candidate in (*first, RECIPES / f"{name}_{stage}.yaml", RECIPES / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted({f.stem.removesuffix(f"_{s}") for f in RECIPES.glob("*.yaml") for s in STAGES
                    if f.stem.endswith(f"_{s}")} | {f.stem for f in RECIPES.glob("*.yaml")})
    raise ConfigError(f"no recipe {name!r} for {stage}; known: {', '.join(known)}")


def _merge(base: DictConfig, other: Any, what: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"{what}: {'key ' + repr(key) + ': ' if key else ''}{msg}") from None


def load_config(stage: str, recipe: str | None = None, overrides: list[str] = (),
                set_keys: dict[str, Any] | None = None, model: str | None = None
                ) -> DictConfig:
    """Schema <- recipe YAML <- ``set_keys`` (dotted keys from CLI flags) <- ``overrides``.
    ``model``: the model family (for ``NAME_MODEL_STAGE.yaml`` recipes)."""
    set_keys = set_keys or {}
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    default = DEFAULT_RECIPE[stage] if model in (None, "mavil") else model
    path = recipe_path(recipe or default, stage, None if model == "mavil" else model)
    cfg = OmegaConf.structured(Config)
    try:
        recipe_cfg = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - YAML syntax errors of any kind
        raise ConfigError(f"recipe {path}: {str(exc).splitlines()[0]}") from None
    cfg = _merge(cfg, recipe_cfg, f"recipe {path}")
    for key, value in set_keys.items():  # CLI flags: set as given (paths stay strings)
        if value is not None:
            try:
                OmegaConf.update(cfg, key, value, merge=False)
            except OmegaConfBaseException as exc:
                raise ConfigError(f"{key}={value!r}: {str(exc).splitlines()[0]}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    cfg.stage = stage
    cfg.recipe = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    check(cfg)
    return cfg


def check(cfg: DictConfig) -> None:
    """Values the schema's types cannot check."""
    choices = {"data.loader": ("map", "stream"),
               "data.sampler": ("shuffle", "balanced", "unknown_half"),
               "optim.preset": ("table10", "audiomae_code"),
               "train.precision": ("auto", "fp32", "bf16", "fp16"),
               "train.nonfinite": ("stop", "skip"), "stage2.target": ("fusion", "uni"),
               "finetune.mode": ("audio", "video", "av"),
               "finetune.loss": ("auto", "bce", "ce")}
    for key, allowed in choices.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: choose one of {', '.join(allowed)}")
    for key in ("data.batch_size", "optim.batch_size", "optim.epochs"):
        if OmegaConf.select(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1")
    bad = [m for m in cfg.model.inputs if m not in ("audio", "video")]
    if bad:
        raise ConfigError(f"model.inputs takes audio / video, not {bad}")


def git_revision() -> str:
    """HEAD's commit of the code that runs (``+dirty`` with uncommitted changes)."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "train",
                                "store"], capture_output=True, text=True, timeout=10).stdout
        return rev + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain nested dicts / lists (what checkpoints hold)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def from_plain(data: dict[str, Any]) -> DictConfig:
    """A saved plain config back under the schema (checks it still fits)."""
    return _merge(OmegaConf.structured(Config), data, "saved config")


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """``config.yaml`` written atomically."""
    from store.atomic import atomic_write_bytes

    atomic_write_bytes(Path(path), OmegaConf.to_yaml(cfg, resolve=True).encode())
