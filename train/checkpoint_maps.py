"""Key-by-key plans that carry public checkpoints onto our models (see train/checkpoints.py).

A *plan* maps each source key to a list of ``(target key, transform, note)`` steps, or to a
string saying why the key is ignored. Our models describe where their ViT branches live
with :class:`VitBranch` (method ``vit_branches()``); for models that do not define it the
branches are found from the shared ``ModalityEncoder`` / ``MaskedDecoder`` modules they
contain (:func:`encoder_branches`).

Layout facts the transforms encode:

* facebookresearch/mae and AudioMAE put a [CLS] position first in ``pos_embed`` /
  ``decoder_pos_embed``. ``ModalityEncoder`` / ``MaskedDecoder`` (MAViL, Audio/Video-MAE)
  have that row too and take the tables whole when the grids match; CAV-MAE has no [CLS]
  token, so the row is dropped there.
* AudioMAE feeds the fbank as [B,1,T,F] (time-major tokens) like we do, so its audio
  weights copy straight across (its position table is our default "audiomae" layout).
* An image MAE's ``pos_embed`` [1, 1 + H*W, D] given to a video encoder of T time steps
  becomes the separable table ``image[s] + emb_D(t)`` (train/models/pos_embed.py), whatever
  layout the model was built with: the ImageNet-initialised blocks keep the spatial code
  they were trained with.
* CAV-MAE transposes the fbank to [B,1,F,T] before its Conv2d (src/models/cav_mae.py,
  ``a.transpose(2, 3)``), so its audio tokens are frequency-major (8 x 64) and its patch
  vectors are (freq-in-patch, time-in-patch). We undo that: kernel transpose, pos-embed
  reorder, decoder_pred_a row reorder - also for ``decoder_pred[:256]`` of an image MAE
  (adapt_vmae_weights.py), whose rows CAV-MAE reads as (freq, time) pixels.
* An image MAE kernel used for audio is summed over RGB and read with image rows =
  frequency, as CAV-MAE's adapt_vmae_weights.py initialises its audio branch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

Step = tuple[str, Callable[[torch.Tensor], torch.Tensor], str]
Plan = dict[str, "list[Step] | str"]


@dataclass(frozen=True)
class DecoderTarget:
    """Where an MAE decoder's tensors go in our model."""

    embed: str
    mask_token: str
    pos_embed: str | None
    blocks: tuple[str, ...]
    norm: str
    pred: str


@dataclass(frozen=True)
class VitBranch:
    """Where one single-modality ViT encoder (+ optional MAE decoder) lives in our model.

    ``blocks[i]`` lists the (target block prefix, LayerNorm suffix) pairs that source block
    ``i`` fills; a suffix such as ``"_a"`` copies ``norm1``/``norm2`` into ``norm1_a`` /
    ``norm2_a`` (CAV-MAE's per-stream LayerNorms).
    """

    modality: str                      # "audio" or "video" / "image"
    sources: tuple[str, ...]           # layouts allowed to fill this branch
    patch_embed: str                   # module path of the Conv2d/Conv3d
    blocks: tuple[tuple[tuple[str, str], ...], ...]
    norms: tuple[str, ...] = ()
    pos_embed: str | None = None
    decoder: DecoderTarget | None = None
    cls_token: str | None = None


def identity(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


def _branches(model: nn.Module) -> list[VitBranch]:
    if hasattr(model, "vit_branches"):
        return list(model.vit_branches())
    found = encoder_branches(model)
    if not found:
        raise ValueError(f"{type(model).__name__} has no ModalityEncoder and no "
                         "vit_branches(); cannot place ViT weights")
    return found


def encoder_branches(model: nn.Module) -> list[VitBranch]:
    """Branches found from the shared ``ModalityEncoder`` / ``MaskedDecoder`` modules.

    An audio encoder (AudioPatchEmbed) takes AudioMAE weights; a video encoder
    (VideoPatchEmbed) takes image MAE weights, inflated (MAViL Sec. 4.2: audio from scratch
    or AudioMAE, video from ImageNet MAE). A decoder is paired with an encoder when it is
    the only one on its grid.
    """
    from train.models.encoder import MaskedDecoder, ModalityEncoder
    from train.models.patch_embed import AudioPatchEmbed

    mods = dict(model.named_modules())
    decoders = [(n, m) for n, m in mods.items() if isinstance(m, MaskedDecoder)]
    out = []
    for name, enc in mods.items():
        if not isinstance(enc, ModalityEncoder):
            continue
        pre = f"{name}." if name else ""
        audio = isinstance(enc.patch_embed, AudioPatchEmbed)
        same_grid = [(n, d) for n, d in decoders if tuple(d.grid_size) == tuple(enc.grid_size)]
        decoder = None
        if len(same_grid) == 1:
            dn = f"{same_grid[0][0]}." if same_grid[0][0] else ""
            decoder = DecoderTarget(
                f"{dn}embed", f"{dn}mask_token", f"{dn}pos_embed",
                tuple(f"{dn}blocks.{i}" for i in range(len(same_grid[0][1].blocks))),
                f"{dn}norm", f"{dn}pred")
        out.append(VitBranch(
            "audio" if audio else "video",
            ("audio_mae",) if audio else ("image_mae",),
            f"{pre}patch_embed.proj", _vit_stack(f"{pre}blocks", len(enc.blocks)),
            (f"{pre}norm",), f"{pre}pos_embed", decoder, f"{pre}cls_token"))
    return out


# --------------------------------------------------------------------------- ViT sources
def _patch_steps(w: torch.Tensor, tgt: torch.Tensor, modality: str, layout: str
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], str] | str:
    notes, fns = [], []
    if tgt.shape[1] == 1 and w.shape[1] == 3:
        fns.append(lambda x: x.sum(dim=1, keepdim=True))
        notes.append("RGB summed to 1 channel")
        if modality == "audio" and layout == "image_mae":
            fns.append(lambda x: x.transpose(-1, -2))
            notes.append("image rows read as frequency")
    if tgt.dim() == 5 and w.dim() == 4:
        from train.models.patch_embed import inflate_patch_embed_weight

        t = tgt.shape[2]
        fns.append(lambda x: inflate_patch_embed_weight(x, t))
        notes.append(f"2-D kernel inflated to {t} frames, divided by {t}")
    if w.shape[1] != tgt.shape[1] and not notes:
        return f"channels differ ({w.shape[1]} vs {tgt.shape[1]})"

    def apply(x: torch.Tensor) -> torch.Tensor:
        for fn in fns:
            x = fn(x)
        return x.clone()

    return apply, ", ".join(notes)


def _pos_steps(src: torch.Tensor, tgt: torch.Tensor, modality: str = ""
               ) -> tuple[Callable, str] | str:
    n_src = src.shape[1] - 1                       # minus the [CLS] row
    if tuple(tgt.shape) == tuple(src.shape):
        return identity, ""
    if tuple(tgt.shape) == (1, n_src, src.shape[2]):
        return (lambda x: x[:, 1:].clone()), "[CLS] row dropped"
    n_tgt = tgt.shape[1] - 1
    if (modality == "video" and tgt.shape[2] == src.shape[2] and n_src > 0
            and n_tgt % n_src == 0 and n_tgt > n_src):
        from train.models.pos_embed import separable_video_pos_embed

        steps = n_tgt // n_src

        def separable(x: torch.Tensor) -> torch.Tensor:
            table = separable_video_pos_embed(x[0, 1:].float(), steps).to(x.dtype)
            return torch.cat([x[:, :1], table[None]], dim=1).clone()

        return separable, (f"image table over space + temporal term over {steps} steps "
                           "(separable layout)")
    return (f"token grid differs ({n_src} vs {tgt.shape[1]} positions); "
            "the model keeps its own sin-cos table")


def plan_vit(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
             model: nn.Module, layout: str, with_decoder: bool = False) -> Plan:
    """Plan for facebookresearch/mae (image) and AudioMAE checkpoints.

    The encoder always maps; the MAE decoder only with ``with_decoder`` (CAV-MAE initialises
    its decoder from MAE too; MAViL initialises the video encoder only).
    """
    plan: dict[str, list[Step] | str] = {}

    def add(src: str, tgt: str, fn=identity, how: str = "") -> None:
        entry = plan.get(src)
        if tgt not in target:
            if not entry:
                plan[src] = f"model has no {tgt}"
            return
        if tuple(fn(state[src]).shape) != tuple(target[tgt].shape):
            if not entry:
                plan[src] = (f"shape {tuple(state[src].shape)} does not fit {tgt} "
                             f"{tuple(target[tgt].shape)}")
            return
        plan[src] = (entry if isinstance(entry, list) else []) + [(tgt, fn, how)]

    branches = [b for b in _branches(model) if layout in b.sources]
    if not branches:
        raise ValueError(f"{type(model).__name__} has no branch that a {layout} checkpoint "
                         "initialises")
    swin = any(".attn.tau" in k or ".meta_mlp." in k for k in state if k.startswith("decoder"))
    n_dec_src = len({k.split(".")[1] for k in state if k.startswith("decoder_blocks.")})
    for b in branches:
        for key in state:
            m = re.match(r"blocks\.(\d+)\.(.+)$", key)
            if m:
                i, rest = int(m.group(1)), m.group(2)
                if i >= len(b.blocks):
                    plan.setdefault(key, f"model has only {len(b.blocks)} layers here")
                    continue
                for prefix, suffix in b.blocks[i]:
                    if suffix and re.match(r"norm[12]\.", rest):
                        add(key, f"{prefix}.{rest[:5]}{suffix}{rest[5:]}",
                            how=f"per-stream LayerNorm {suffix}")
                    elif not suffix:
                        add(key, f"{prefix}.{rest}")
            elif key.startswith("norm."):
                for n in b.norms:
                    add(key, f"{n}.{key[5:]}")
            elif key.startswith("patch_embed.proj."):
                tgt = f"{b.patch_embed}.{key.removeprefix('patch_embed.proj.')}"
                if key.endswith("bias"):
                    add(key, tgt)
                elif tgt in target:
                    got = _patch_steps(state[key], target[tgt], b.modality, layout)
                    if isinstance(got, str):
                        plan.setdefault(key, got)
                    else:
                        add(key, tgt, *got)
            elif key == "pos_embed" and b.pos_embed:
                got = _pos_steps(state[key], target[b.pos_embed], b.modality)
                if isinstance(got, str):
                    plan.setdefault(key, got)
                else:
                    add(key, b.pos_embed, *got)
            elif key == "cls_token" and b.cls_token:
                add(key, b.cls_token)
            elif key == "cls_token":
                plan.setdefault(key, "this encoder mean-pools tokens; it has no [CLS] token")
            elif key.startswith(("decoder", "mask_token")) and not with_decoder:
                plan.setdefault(key, "decoder weights not requested (with_decoder=False)")
            elif key.startswith(("decoder", "mask_token")):
                _plan_decoder(key, state, target, b, swin, n_dec_src, add, plan)
    return plan


def _plan_decoder(key, state, target, b: VitBranch, swin: bool, n_src: int, add, plan) -> None:
    d = b.decoder
    if d is None:
        plan.setdefault(key, "model has no decoder for this branch")
        return
    if swin and key.startswith("decoder_blocks."):
        plan.setdefault(key, "Swin decoder (AudioMAE decoder_mode=1) has no counterpart")
        return
    m = re.match(r"decoder_blocks\.(\d+)\.(.+)$", key)
    if m:
        if n_src != len(d.blocks):
            plan.setdefault(key, f"decoder depth differs ({n_src} vs {len(d.blocks)})")
        else:
            add(key, f"{d.blocks[int(m.group(1))]}.{m.group(2)}")
    elif key.startswith("decoder_embed."):
        add(key, f"{d.embed}.{key.split('.', 1)[1]}")
    elif key.startswith("decoder_norm."):
        add(key, f"{d.norm}.{key.split('.', 1)[1]}")
    elif key == "mask_token":
        add(key, d.mask_token)
    elif key == "decoder_pos_embed" and d.pos_embed:
        got = _pos_steps(state[key], target[d.pos_embed], b.modality)
        if isinstance(got, str):
            plan.setdefault(key, got)
        else:
            add(key, d.pos_embed, *got)
    elif key.startswith("decoder_pred."):
        tgt = f"{d.pred}.{key.split('.', 1)[1]}"
        rows = target[tgt].shape[0] if tgt in target else 0
        if 0 < rows < state[key].shape[0] and b.modality == "audio":
            # CAV-MAE adapt_vmae_weights.py: decoder_pred_a <- decoder_pred[:256]; those rows
            # are CAV-MAE's (freq, time) patch pixels, ours (time, freq): reorder as the kernel
            p = int(round(rows ** 0.5))
            add(key, tgt, lambda x, r=rows, p=p: _swap_patch_axes(x[:r], p),
                f"first {rows} rows, patch pixels (f,t) -> (t,f)")
        elif 0 < rows < state[key].shape[0]:
            add(key, tgt, lambda x, r=rows: x[:r].clone(), f"first {rows} rows")
        else:
            add(key, tgt)
    else:
        plan.setdefault(key, "no counterpart in this model")


# --------------------------------------------------------------------------- CAV-MAE
_STREAM_NORM = re.compile(r"^(blocks_[av]|decoder_blocks)\.\d+\.norm[12]_[av]\.")


def plan_cav_mae(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                 model: nn.Module) -> Plan:
    """Plan for YuanGongND/cav-mae pre-trained (CAVMAE) or fine-tuned (CAVMAEFT) files."""
    n_t, n_f = getattr(model, "audio_grid", (64, 8))     # our (time, freq) patch grid
    p = getattr(model, "patch_size", 16)

    def reorder_tokens(x: torch.Tensor) -> torch.Tensor:  # freq-major -> time-major
        return x.reshape(1, n_f, n_t, -1).transpose(1, 2).reshape(1, n_t * n_f, -1).clone()

    def reorder_pixels(x: torch.Tensor) -> torch.Tensor:  # (f_in, t_in) -> (t_in, f_in)
        return _swap_patch_axes(x, p)

    special = {
        "patch_embed_a.proj.weight": (lambda x: x.transpose(-1, -2).clone(),
                                      "kernel (freq,time) -> (time,freq)"),
        "pos_embed_a": (reorder_tokens, "freq-major -> time-major tokens"),
        "decoder_pos_embed_a": (reorder_tokens, "freq-major -> time-major tokens"),
        "decoder_pred_a.weight": (reorder_pixels, "patch pixels (f,t) -> (t,f)"),
        "decoder_pred_a.bias": (reorder_pixels, "patch pixels (f,t) -> (t,f)"),
    }
    plan: Plan = {}
    for key, value in state.items():
        if _STREAM_NORM.match(key):
            plan[key] = ("the official Block carries per-stream LayerNorms in every layer; "
                         "only blocks_u uses them")
        elif key not in target:
            if key.startswith(("decoder", "mask_token")):
                plan[key] = "decoder is dropped for fine-tuning"
            elif key.startswith("mlp_head."):
                plan[key] = "classification head of a fine-tuned file; this model has none"
            else:
                plan[key] = "no counterpart in this model"
        else:
            fn, how = special.get(key, (identity, ""))
            if tuple(fn(value).shape) != tuple(target[key].shape):
                if key.startswith("mlp_head."):
                    plan[key] = (f"head size differs ({tuple(value.shape)} vs "
                                 f"{tuple(target[key].shape)}); the head starts fresh")
                    continue
            plan[key] = [(key, fn, how)]
    return plan


# --------------------------------------------------------------------------- helpers
def _swap_patch_axes(x: torch.Tensor, p: int) -> torch.Tensor:
    """Rows indexed (a * p + b) -> (b * p + a): a 1-channel p x p patch read transposed."""
    tail = x.shape[1:]
    return x.reshape(p, p, *tail).transpose(0, 1).reshape(p * p, *tail).clone()


def _vit_stack(prefix: str, depth: int) -> tuple[tuple[tuple[str, str], ...], ...]:
    return tuple(((f"{prefix}.{i}", ""),) for i in range(depth))

