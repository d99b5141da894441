"""State dicts with the exact key names and shapes of the public checkpoints.

Written from the official model definitions (read, not copied):
- facebookresearch/mae models_mae.py ``MaskedAutoencoderViT`` (mae_pretrain_vit_base_full.pth;
  the encoder-only mae_pretrain_vit_base.pth lacks the decoder_* / mask_token entries);
- facebookresearch/AudioMAE models_mae.py with ``decoder_mode=1`` (the released AS-2M
  pretrained.pth: a 16-block Swin decoder, timm_patch/swin_transformer.py block keys);
- YuanGongND/cav-mae src/models/cav_mae.py ``CAVMAE`` / ``CAVMAEFT`` saved from
  DataParallel (``module.`` prefix); its Block class has norm1_a/_v, norm2_a/_v in EVERY
  block, pos embeddings are (frozen) Parameters, audio tokens are frequency-major.

Every tensor holds a distinct marker (its index in the dict, plus a small ramp) so a test
can tell where each value landed.
"""

from __future__ import annotations

import torch


def _block(prefix: str, d: int, mlp: int, stream_norms: bool = False) -> dict[str, tuple]:
    shapes = {
        "norm1.weight": (d,), "norm1.bias": (d,),
        "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
        "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
        "norm2.weight": (d,), "norm2.bias": (d,),
        "mlp.fc1.weight": (mlp, d), "mlp.fc1.bias": (mlp,),
        "mlp.fc2.weight": (d, mlp), "mlp.fc2.bias": (d,),
    }
    if stream_norms:
        for n in ("norm1_a", "norm1_v", "norm2_a", "norm2_v"):
            shapes[f"{n}.weight"] = (d,)
            shapes[f"{n}.bias"] = (d,)
    return {f"{prefix}.{k}": v for k, v in shapes.items()}


def _swin_block(prefix: str, d: int, heads: int) -> dict[str, tuple]:
    shapes = {
        "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
        "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
        "attn.meta_mlp.fc1.weight": (384, 2), "attn.meta_mlp.fc1.bias": (384,),
        "attn.meta_mlp.fc2.weight": (heads, 384), "attn.meta_mlp.fc2.bias": (heads,),
        "attn.tau": (heads,),
        "norm1.weight": (d,), "norm1.bias": (d,),
        "mlp.fc1.weight": (4 * d, d), "mlp.fc1.bias": (4 * d,),
        "mlp.fc2.weight": (d, 4 * d), "mlp.fc2.bias": (d,),
        "norm2.weight": (d,), "norm2.bias": (d,),
    }
    return {f"{prefix}.{k}": v for k, v in shapes.items()}


def materialise(shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """Marker tensors: entry k is ``k + ramp`` (ramp in [0, 0.5)) so values are traceable."""
    out = {}
    for k, (name, shape) in enumerate(shapes.items()):
        n = 1
        for s in shape:
            n *= s
        out[name] = (k + torch.arange(n, dtype=torch.float32) / (2 * n)).reshape(shape)
    return out


def image_mae_shapes(dim: int = 768, depth: int = 12, dec_dim: int = 512, dec_depth: int = 8,
                     img: int = 224, patch: int = 16, full: bool = True) -> dict[str, tuple]:
    n = (img // patch) ** 2
    s = {"cls_token": (1, 1, dim), "pos_embed": (1, n + 1, dim),
         "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        s.update(_block(f"blocks.{i}", dim, 4 * dim))
    s.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    if full:
        s.update({"mask_token": (1, 1, dec_dim), "decoder_pos_embed": (1, n + 1, dec_dim),
                  "decoder_embed.weight": (dec_dim, dim), "decoder_embed.bias": (dec_dim,)})
        for i in range(dec_depth):
            s.update(_block(f"decoder_blocks.{i}", dec_dim, 4 * dec_dim))
        s.update({"decoder_norm.weight": (dec_dim,), "decoder_norm.bias": (dec_dim,),
                  "decoder_pred.weight": (patch * patch * 3, dec_dim),
                  "decoder_pred.bias": (patch * patch * 3,)})
    return s


def audio_mae_shapes(dim: int = 768, depth: int = 12, dec_dim: int = 512, dec_depth: int = 16,
                     frames: int = 1024, mels: int = 128, patch: int = 16,
                     swin_decoder: bool = True) -> dict[str, tuple]:
    n = (frames // patch) * (mels // patch)
    s = {"cls_token": (1, 1, dim), "pos_embed": (1, n + 1, dim),
         "patch_embed.proj.weight": (dim, 1, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        s.update(_block(f"blocks.{i}", dim, 4 * dim))
    s.update({"norm.weight": (dim,), "norm.bias": (dim,),
              "decoder_embed.weight": (dec_dim, dim), "decoder_embed.bias": (dec_dim,),
              "mask_token": (1, 1, dec_dim), "decoder_pos_embed": (1, n + 1, dec_dim)})
    for i in range(dec_depth):
        s.update(_swin_block(f"decoder_blocks.{i}", dec_dim, 16) if swin_decoder
                 else _block(f"decoder_blocks.{i}", dec_dim, 4 * dec_dim))
    s.update({"decoder_norm.weight": (dec_dim,), "decoder_norm.bias": (dec_dim,),
              "decoder_pred.weight": (patch * patch, dec_dim), "decoder_pred.bias": (patch**2,)})
    return s


def cav_mae_shapes(dim: int = 768, specific: int = 11, joint: int = 1, dec_dim: int = 512,
                   dec_depth: int = 8, frames: int = 1024, img: int = 224, patch: int = 16,
                   finetuned_classes: int | None = None) -> dict[str, tuple]:
    """``CAVMAE`` (pre-trained) or, with ``finetuned_classes``, ``CAVMAEFT`` keys."""
    na, nv = frames * 128 // patch**2, (img // patch) ** 2
    s = {"module.modality_a": (1, 1, dim), "module.modality_v": (1, 1, dim),
         "module.pos_embed_a": (1, na, dim), "module.pos_embed_v": (1, nv, dim),
         "module.patch_embed_a.proj.weight": (dim, 1, patch, patch),
         "module.patch_embed_a.proj.bias": (dim,),
         "module.patch_embed_v.proj.weight": (dim, 3, patch, patch),
         "module.patch_embed_v.proj.bias": (dim,)}
    for branch, depth in (("blocks_a", specific), ("blocks_v", specific), ("blocks_u", joint)):
        for i in range(depth):
            s.update(_block(f"module.{branch}.{i}", dim, 4 * dim, stream_norms=True))
    for n in ("norm_a", "norm_v", "norm"):
        s.update({f"module.{n}.weight": (dim,), f"module.{n}.bias": (dim,)})
    if finetuned_classes:
        s.update({"module.mlp_head.0.weight": (dim,), "module.mlp_head.0.bias": (dim,),
                  "module.mlp_head.1.weight": (finetuned_classes, dim),
                  "module.mlp_head.1.bias": (finetuned_classes,)})
        return s
    s.update({"module.decoder_embed.weight": (dec_dim, dim),
              "module.decoder_embed.bias": (dec_dim,),
              "module.mask_token": (1, 1, dec_dim),
              "module.decoder_modality_a": (1, 1, dec_dim),
              "module.decoder_modality_v": (1, 1, dec_dim),
              "module.decoder_pos_embed_a": (1, na, dec_dim),
              "module.decoder_pos_embed_v": (1, nv, dec_dim)})
    for i in range(dec_depth):
        s.update(_block(f"module.decoder_blocks.{i}", dec_dim, 4 * dec_dim, stream_norms=True))
    s.update({"module.decoder_norm.weight": (dec_dim,), "module.decoder_norm.bias": (dec_dim,),
              "module.decoder_pred_a.weight": (patch**2, dec_dim),
              "module.decoder_pred_a.bias": (patch**2,),
              "module.decoder_pred_v.weight": (patch**2 * 3, dec_dim),
              "module.decoder_pred_v.bias": (patch**2 * 3,)})
    return s
