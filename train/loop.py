"""The training loop: one function, read top to bottom (nanoGPT's train.py shape).

    prepare   store -> loader (this rank's), stage model (+ teacher / init), optimizer
    resume    RUN/checkpoints/last.pt: model, optimizer, scheduler, scaler, loader and RNG
              state per rank, step, epoch (refuses a different world size: the sample order
              would differ)
    loop      per optimizer step: lr from the schedule; ``accum`` micro-batches, each
              forward under autocast (bf16 on GPU, fp32 on CPU) and backward (DDP syncs on
              the last one only); a non-finite loss stops the run naming the step and the
              loss terms (or skips the step with train.nonfinite=skip); optional gradient
              clipping; optimizer step; log; checkpoint every ``ckpt_every`` steps and at
              each epoch end (rank 0 writes, atomically)
    finish    summary.json (the last checkpoint is the result, supplement B.3)
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from train import distributed, optim
from train.config import save_config, to_plain
from train.data import (
    accumulation,
    build_loader,
    fill_from_store,
    open_train_store,
    steps_per_epoch,
)
from train.resume import (
    FORMAT_VERSION,
    clear_run,
    load_resume_state,
    remove_stale_temps,
    rng_state,
    save_training_state,
    set_rng_state,
)
from train.stages import MODE_INPUTS, build_finetune, build_stage1, build_stage2

# keys a resumed run may change; every other config value must equal the saved one
RESUME_MAY_CHANGE = ("meta", "train.max_steps", "train.log_every", "train.ckpt_every",
                     "train.keep_last", "train.image_every", "data.num_workers")


class TrainingError(RuntimeError):
    """The run cannot go on (non-finite loss, resume mismatch); the message says why."""


def _logger(run_dir: Path, rank: int, start_step: int, log_every: int) -> Any:
    from train.observe import make_logger  # TensorBoard, metrics.jsonl, tqdm, summary

    return make_logger(run_dir, rank, start_step=start_step, log_every=log_every)


def _precision(cfg: DictConfig, device: torch.device) -> torch.dtype | None:
    p = cfg.train.precision
    if p == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[p]


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def _check_same_run(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    a, b = _flat(saved), _flat(now)
    diff = [k for k in sorted(set(a) | set(b)) if not k.startswith(RESUME_MAY_CHANGE)
            and a.get(k) != b.get(k)]
    if diff:
        k = diff[0]
        raise TrainingError(f"{path} was saved with {k}={a.get(k)!r}, this command gives "
                            f"{b.get(k)!r} ({len(diff)} key(s) differ); resume with the same "
                            "recipe and overrides, or use --fresh / another --out")


def _loss_fn(cfg: DictConfig, view_mixup: bool):
    multi = cfg.data.multi_label or view_mixup
    kind = cfg.finetune.loss if cfg.finetune.loss != "auto" else ("bce" if multi else "ce")
    eps = float(cfg.finetune.label_smoothing)

    def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.float()
        if eps:  # timm BinaryCrossEntropy smoothing: off = eps / C, on = 1 - eps + off
            y = y * (1.0 - eps) + eps / y.shape[-1]
        return F.binary_cross_entropy_with_logits(logits.float(), y)

    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=eps)

    return (bce if kind == "bce" else ce), kind


def train(cfg: DictConfig, run_dir: str | Path, device: str = "auto", fresh: bool = False
          ) -> dict[str, Any]:
    """Run (or resume) one stage into ``run_dir``; returns the summary (rank 0).
    ``fresh``: discard what RUN holds first (rank 0, before any rank looks at it)."""
    run_dir = Path(run_dir)
    d = distributed.setup(device)
    try:
        if fresh and d.is_main:
            clear_run(run_dir)
        distributed.barrier(d)
        return _train(cfg, run_dir, d)
    finally:
        distributed.teardown()


def _train(cfg: DictConfig, run_dir: Path, d: distributed.Dist) -> dict[str, Any]:
    # ---------------------------------------------------------------- prepare (no GPU work)
    store = open_train_store(cfg.data.store)
    fill_from_store(cfg, store)  # backend, clip length, vocabulary
    num_classes = cfg.data.num_classes if cfg.stage == "finetune" else None
    if cfg.stage == "finetune":
        cfg.model.inputs = MODE_INPUTS[cfg.finetune.mode]
    loader = build_loader(cfg, store, d.rank, d.world_size, num_classes)
    view = loader.dataset.view
    audio_view = view.audio
    cfg.data.norm_values = audio_view.norm.to_dict() if audio_view is not None else {}
    accum = accumulation(cfg.optim.batch_size, cfg.data.batch_size, d.world_size)
    spe = steps_per_epoch(loader, cfg.data.batch_size, accum)
    if spe < 1:
        raise TrainingError(
            f"split {cfg.data.split!r} gives {loader.per_rank} samples per rank, fewer than one "
            f"optimizer step ({cfg.data.batch_size} x {accum} micro-batches); lower "
            "data.batch_size / optim.batch_size")
    torch.manual_seed(cfg.train.seed)  # model init: the same on every rank
    if cfg.stage == "stage1":
        model, saved_module, notes = build_stage1(cfg)
    elif cfg.stage == "stage2":
        model, saved_module, notes = build_stage2(cfg)
    else:
        model, saved_module, notes = build_finetune(cfg, cfg.data.num_classes)
    distributed.seed_everything(cfg.train.seed, d.rank)  # masking noise etc.: per rank
    cfg.optim.lr = optim.peak_lr(cfg.optim.base_lr, cfg.optim.batch_size)
    cfg.meta.world_size, cfg.meta.accum_steps, cfg.meta.steps_per_epoch = d.world_size, accum, spe
    model.to(d.device)
    if not (cfg.stage == "finetune" and cfg.finetune.mode == "av"):
        cfg.optim.video_lr_scale = 1.0  # the 0.5 of B.3 is for audio+video fine-tuning only
    optimizer = optim.build_optimizer(model, cfg.optim, cfg.stage)
    amp_dtype = _precision(cfg, d.device)
    scaler = torch.amp.GradScaler(d.device.type, enabled=amp_dtype == torch.float16)
    loss_fn, loss_kind = _loss_fn(cfg, bool(getattr(loader.dataset.view, "mixup", None)))
    total_steps = cfg.optim.epochs * spe
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, int(cfg.train.max_steps))

    # ---------------------------------------------------------------- resume
    step, epoch = 0, 0
    remove_stale_temps(run_dir) if d.is_main else None
    resumed = load_resume_state(run_dir)
    plain = to_plain(cfg)
    if resumed is not None:
        state, path = resumed
        _check_same_run(state["config"], plain, path)
        if state["world_size"] != d.world_size:
            raise TrainingError(
                f"{path} was written by {state['world_size']} process(es), this run has "
                f"{d.world_size}: the per-rank sample order and RNG streams would differ, so it "
                "cannot continue exactly; resume with the same number of processes")
        saved_module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, epoch = int(state["step"]), int(state["epoch"])
        loader.set_epoch(epoch)
        if state["epoch_step"] > 0:
            loader.load_state_dict(state["loader"][d.rank])
        set_rng_state(state["rng"][d.rank])
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    train_model = distributed.wrap(model, d)
    forward_model = torch.compile(train_model) if cfg.train.compile else train_model
    log = _logger(run_dir, d.rank, step, cfg.train.log_every)

    def checkpoint(epoch_end: int | None = None) -> Path | None:
        epoch_step = 0 if epoch_end is not None else step - epoch * spe
        mine = {"loader": loader.state_dict(), "rng": rng_state()}
        everyone = distributed.gather_objects(mine, d)
        path = None
        if d.is_main:
            state = {
                "format_version": FORMAT_VERSION, "model": saved_module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"kind": "warmup_half_cosine", "step": step,
                              "steps_per_epoch": spe, "lr": float(cfg.optim.lr)},
                "scaler": scaler.state_dict(), "loader": [e["loader"] for e in everyone],
                "rng": [e["rng"] for e in everyone], "step": step,
                "epoch": epoch if epoch_end is None else epoch_end, "epoch_step": epoch_step,
                "world_size": d.world_size, "config": to_plain(cfg),
            }
            path = save_training_state(run_dir, state, cfg.train.keep_last, epoch_end)
        distributed.barrier(d)
        return path

    # ---------------------------------------------------------------- loop
    last_path = None
    skipped = 0
    model.train()
    while step < total_steps:
        done = step - epoch * spe
        if done == 0:
            loader.set_epoch(epoch)
        log.start_epoch(epoch, spe, done=done)
        batches = iter(loader)
        while step < min(total_steps, (epoch + 1) * spe):
            t0 = time.perf_counter()
            lr = optim.lr_at(step, spe, cfg.optim.lr, cfg.optim.min_lr,
                             cfg.optim.warmup_epochs, cfg.optim.epochs)
            optim.set_lr(optimizer, lr)
            terms: dict[str, torch.Tensor] = {}
            bad = False
            data_s = 0.0
            for micro in range(accum):
                t_wait = time.perf_counter()
                # model inputs on the device; uint8 video is normalised there (once)
                batch = view.to_device(next(batches), d.device)
                data_s += time.perf_counter() - t_wait
                inputs = [batch[k] for k in cfg.model.inputs]
                sync = micro == accum - 1 or not d.enabled
                with (contextlib.nullcontext() if sync else train_model.no_sync()), \
                        torch.autocast(d.device.type, amp_dtype or torch.float32,
                                       enabled=amp_dtype is not None):
                    if cfg.stage == "finetune":  # classifiers take audio= / video=
                        logits = forward_model(**dict(zip(cfg.model.inputs, inputs, strict=True)))
                        out = {"loss": loss_fn(logits, batch["label"].to(d.device))}
                    else:
                        out = forward_model(*inputs)
                    loss = out["loss"]
                    bad = distributed.any_rank(not bool(torch.isfinite(loss.detach())), d)
                    if bad:
                        break
                    scaler.scale(loss / accum).backward()
                for k, v in out.items():
                    if k.startswith("loss") and torch.is_tensor(v) and v.ndim == 0:
                        terms[k] = terms.get(k, 0.0) + v.detach().float() / accum
            if bad:
                values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in out.items()
                                   if k.startswith("loss") and torch.is_tensor(v) and v.ndim == 0)
                if cfg.train.nonfinite == "stop":
                    raise TrainingError(
                        f"step {step + 1} (epoch {epoch}): non-finite loss ({values}); stopped "
                        f"before the optimizer step (train.nonfinite=skip skips such steps)")
                skipped += 1
                log.print(f"step {step + 1}: non-finite loss ({values}); step skipped")
                optimizer.zero_grad(set_to_none=True)
                while micro < accum - 1:  # keep the data stream aligned with the step count
                    next(batches)
                    micro += 1
            else:
                if cfg.optim.clip_grad is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            log.step(step, terms, lr=lr, samples=cfg.optim.batch_size, data_s=data_s,
                     step_s=time.perf_counter() - t0)
            if d.is_main and cfg.train.image_every:  # Fig. 3-style PNG (train/recon_figure.py)
                from train.recon_figure import maybe_save_reconstructions

                maybe_save_reconstructions(step, cfg.train.image_every, model, batch, run_dir,
                                           log, view=loader.dataset.view)
            end_of_epoch = step == (epoch + 1) * spe
            if cfg.train.ckpt_every and step % cfg.train.ckpt_every == 0 and not end_of_epoch:
                last_path = checkpoint()
        if step == (epoch + 1) * spe:
            epoch += 1
            last_path = checkpoint(epoch_end=epoch)
        elif step >= total_steps:  # max_steps stopped mid-epoch
            last_path = checkpoint()
        log.end_epoch()

    # ---------------------------------------------------------------- finish
    if last_path is None and d.is_main and resumed is not None:
        last_path = resumed[1]  # nothing left to do: the run had already finished
    extra = {"stage": cfg.stage, "model": f"{cfg.model.name}/{cfg.model.size}",
             "loss": loss_kind if cfg.stage == "finetune" else "eq4" if cfg.stage == "stage1"
             else "eq6", "skipped_steps": skipped, "world_size": d.world_size,
             "total_steps": total_steps, "lr": cfg.optim.lr, **notes}
    if cfg.stage == "stage2":
        extra["teacher_chain"] = list(cfg.stage2.chain)
    summary = log.finish(checkpoint=(run_dir / "checkpoints" / "last.pt") if last_path else None,
                         extra=extra)
    return summary


def config_summary(cfg: DictConfig) -> str:
    """One line for the start of a run."""
    what = {"stage1": f"stage1 {cfg.model.name}/{cfg.model.size}",
            "stage2": f"stage2 mavil/{cfg.model.size} taught by {cfg.stage2.teacher}",
            "finetune": f"finetune {cfg.finetune.mode} from {cfg.finetune.init}"}[cfg.stage]
    return (f"{what}, recipe {cfg.recipe}, "
            f"store {cfg.data.store}, batch {cfg.optim.batch_size}, {cfg.optim.epochs} epochs, "
            f"base lr {cfg.optim.base_lr:g}")

