"""CAV-MAE: Contrastive Audio-Visual Masked Autoencoder (Gong et al., ICLR 2023, Sec. 2.3).

Audio [B, 1, 1024, 128] -> 512 tokens (64 time x 8 freq, time-major); one RGB frame
[B, 3, 224, 224] -> 196 tokens. Each modality gets a linear projection, a modality-type
embedding E_a / E_v and a fixed 2-D sin-cos position embedding (audio: the official
``get_2d_sincos_pos_embed(D, 8, 64)`` over frequency-major tokens, i.e. ``[emb(time),
emb(freq)]`` per patch, pos_embed.py layout "cavmae"), then 75 % of each is masked
(Eq. 2-3). Modality-specific encoders (11 layers) feed one joint layer that is run three
times - audio alone, video alone, and both concatenated - with stream-specific LayerNorms
and shared attention/MLP weights (Eq. 4-6). The audio / video streams are mean-pooled for the
contrastive loss (Eq. 7, tau = 0.05); the joint stream goes through an 8-layer 512-d decoder
with modality embeddings and per-modality prediction heads (Eq. 8) for the masked-patch MSE
(Eq. 9). Loss = L_r + c * L_c with c = 0.01.

Parameter names follow YuanGongND/cav-mae (``patch_embed_a``, ``blocks_u``, ``norm_a`` ...)
so its checkpoints map by name; only its audio orientation differs (it transposes the fbank
to frequency-major), which ``train/checkpoint_maps.py`` undoes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from .blocks import Block, init_mae_weights
from .masking import random_masking, unshuffle
from .patch_embed import AudioPatchEmbed
from .pos_embed import audio_pos_embed, get_2d_sincos_pos_embed

# The official code uses torch's default LayerNorm (eps 1e-5), unlike MAE's 1e-6.
LayerNorm5 = partial(nn.LayerNorm, eps=1e-5)

SIZES = {  # encoder layers: modality-specific + joint = 12 (Sec. 2.3.1)
    "tiny": dict(dim=64, heads=4, modality_depth=1, joint_depth=1,
                 decoder_dim=32, decoder_depth=1, decoder_heads=4),
    "base": dict(dim=768, heads=12, modality_depth=11, joint_depth=1,
                 decoder_dim=512, decoder_depth=8, decoder_heads=16),
}


class MultiStreamBlock(Block):
    """The joint layer E_j: shared MSA/MLP, LayerNorms per stream {a, v, av} (Eq. 4-6)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = LayerNorm5) -> None:
        super().__init__(dim, heads, mlp_ratio, qkv_bias=True, drop_path=drop_path,
                         norm_layer=norm_layer)
        self.norm1_a, self.norm2_a = norm_layer(dim), norm_layer(dim)
        self.norm1_v, self.norm2_v = norm_layer(dim), norm_layer(dim)

    def forward(self, x: torch.Tensor, stream: str = "av") -> torch.Tensor:  # type: ignore[override]
        n1, n2 = {"av": (self.norm1, self.norm2), "a": (self.norm1_a, self.norm2_a),
                  "v": (self.norm1_v, self.norm2_v)}[stream]
        x = x + self.drop_path(self.attn(n1(x)))
        return x + self.drop_path(self.mlp(n2(x)))


def _fixed(table: torch.Tensor, trainable: bool) -> nn.Parameter:
    return nn.Parameter(table.unsqueeze(0), requires_grad=trainable)


class CAVMAEEncoder(nn.Module):
    """Projections, embeddings, modality-specific encoders and the multi-stream joint layer."""

    def __init__(self, audio_size: tuple[int, int] = (1024, 128), img_size: int = 224,
                 patch_size: int = 16, dim: int = 768, heads: int = 12,
                 modality_depth: int = 11, joint_depth: int = 1, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, trainable_pos: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed_a = AudioPatchEmbed(audio_size, patch_size, 1, dim)
        # an image is a 2-D grid just like a spectrogram: same Conv2d tokeniser, 3 channels
        self.patch_embed_v = AudioPatchEmbed((img_size, img_size), patch_size, 3, dim)
        self.audio_grid = self.patch_embed_a.grid_size          # (64, 8): time x freq
        self.video_grid = self.patch_embed_v.grid_size          # (14, 14)
        self.modality_a = nn.Parameter(torch.zeros(1, 1, dim))  # E_a
        self.modality_v = nn.Parameter(torch.zeros(1, 1, dim))  # E_v
        self.pos_embed_a = _fixed(audio_pos_embed(dim, *self.audio_grid, "cavmae"), trainable_pos)
        self.pos_embed_v = _fixed(get_2d_sincos_pos_embed(dim, *self.video_grid), trainable_pos)
        n = modality_depth + joint_depth
        rates = [drop_path * i / max(n - 1, 1) for i in range(n)]  # stochastic depth ramp
        self.blocks_a = nn.ModuleList(Block(dim, heads, mlp_ratio, drop_path=r,
                                            norm_layer=LayerNorm5)
                                      for r in rates[:modality_depth])
        self.blocks_v = nn.ModuleList(Block(dim, heads, mlp_ratio, drop_path=r,
                                            norm_layer=LayerNorm5)
                                      for r in rates[:modality_depth])
        self.blocks_u = nn.ModuleList(MultiStreamBlock(dim, heads, mlp_ratio, r)
                                      for r in rates[modality_depth:])
        self.norm_a, self.norm_v, self.norm = LayerNorm5(dim), LayerNorm5(dim), LayerNorm5(dim)

    def _init_encoder(self) -> None:
        self.apply(init_mae_weights)  # Linear / LayerNorm; the patch convs init themselves
        nn.init.normal_(self.modality_a, std=0.02)
        nn.init.normal_(self.modality_v, std=0.02)

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, F] -> Proj_a(a) + E_a + E^p_a, [B, 512, D]."""
        if audio.dim() == 3:
            audio = audio.unsqueeze(1)
        return self.patch_embed_a(audio) + self.pos_embed_a + self.modality_a

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> Proj_v(v) + E_v + E^p_v, [B, 196, D]."""
        return self.patch_embed_v(video) + self.pos_embed_v + self.modality_v

    def encode_audio(self, a: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks_a:
            a = blk(a)
        return a

    def encode_video(self, v: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks_v:
            v = blk(v)
        return v

    def joint(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """E_j with the LayerNorms of ``stream`` ('a', 'v' or 'av') and its final norm."""
        for blk in self.blocks_u:
            x = blk(x, stream)
        return {"a": self.norm_a, "v": self.norm_v, "av": self.norm}[stream](x)

    def encoder_keys(self) -> list[str]:
        return [k for k in self.state_dict() if not k.startswith(("decoder", "mask_token"))]

    def vit_branches(self) -> list:
        """Where ImageNet-MAE / AudioMAE weights go (as CAV-MAE's adapt_vmae_weights.py)."""
        from train.checkpoint_maps import DecoderTarget, VitBranch

        n, u = len(self.blocks_a), len(self.blocks_u)
        dec = getattr(self, "decoder_blocks", None)
        out = []
        for m, tag in (("audio", "a"), ("video", "v")):
            blocks = tuple(((f"blocks_{tag}.{i}", ""),) for i in range(n)) + tuple(
                ((f"blocks_u.{j}", ""), (f"blocks_u.{j}", f"_{tag}")) for j in range(u))
            decoder = None if dec is None else DecoderTarget(
                "decoder_embed", "mask_token", f"decoder_pos_embed_{tag}",
                tuple(f"decoder_blocks.{i}" for i in range(len(dec))), "decoder_norm",
                f"decoder_pred_{tag}")
            out.append(VitBranch(m, ("image_mae",) + (("audio_mae",) if tag == "a" else ()),
                                 f"patch_embed_{tag}.proj", blocks, (f"norm_{tag}", "norm"),
                                 f"pos_embed_{tag}", decoder))
        return out


def matching_accuracy(c_a: torch.Tensor, c_v: torch.Tensor) -> torch.Tensor:
    """Share of videos whose most similar audio in the batch is their own (Sec. 2.3, item 3)."""
    sim = F.normalize(c_v, dim=-1) @ F.normalize(c_a, dim=-1).t()
    return (sim.argmax(dim=1) == torch.arange(sim.shape[0], device=sim.device)).float().mean()


class CAVMAE(CAVMAEEncoder):
    """CAV-MAE pre-training model (Fig. 1C)."""

    def __init__(self, audio_size: tuple[int, int] = (1024, 128), img_size: int = 224,
                 patch_size: int = 16, dim: int = 768, heads: int = 12,
                 modality_depth: int = 11, joint_depth: int = 1, decoder_dim: int = 512,
                 decoder_depth: int = 8, decoder_heads: int = 16, mlp_ratio: float = 4.0,
                 mask_ratio: float = 0.75, tau: float = 0.05, contrast_weight: float = 0.01,
                 mae_weight: float = 1.0, norm_pix_loss: bool = True,
                 bidirectional: bool = False) -> None:
        # bidirectional=False: Eq. 7 / the official default is one direction (video anchors).
        # norm_pix_loss=True: Eq. 9 reconstructs norm(a), norm(v), per-patch normalised
        # patches (the released pre-training recipes set norm_pix_loss=True).
        super().__init__(audio_size, img_size, patch_size, dim, heads, modality_depth,
                         joint_depth, mlp_ratio)
        self.mask_ratio, self.tau = mask_ratio, tau
        self.contrast_weight, self.mae_weight = contrast_weight, mae_weight
        self.norm_pix_loss, self.bidirectional = norm_pix_loss, bidirectional
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_modality_a = nn.Parameter(torch.zeros(1, 1, decoder_dim))  # E'_a
        self.decoder_modality_v = nn.Parameter(torch.zeros(1, 1, decoder_dim))  # E'_v
        self.decoder_pos_embed_a = _fixed(
            audio_pos_embed(decoder_dim, *self.audio_grid, "cavmae"), False)
        self.decoder_pos_embed_v = _fixed(
            get_2d_sincos_pos_embed(decoder_dim, *self.video_grid), False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio, norm_layer=LayerNorm5)
            for _ in range(decoder_depth))
        self.decoder_norm = LayerNorm5(decoder_dim)
        # D_j shares all weights across modalities except the last projection (Sec. 2.3)
        self.decoder_pred_a = nn.Linear(decoder_dim, self.patch_embed_a.patch_dim)
        self.decoder_pred_v = nn.Linear(decoder_dim, self.patch_embed_v.patch_dim)
        self._init_encoder()
        for p in (self.decoder_modality_a, self.decoder_modality_v, self.mask_token):
            nn.init.normal_(p, std=0.02)

    def forward_encoder(self, audio: torch.Tensor, video: torch.Tensor,
                        mask_ratio_a: float, mask_ratio_v: float,
                        noise_a: torch.Tensor | None = None,
                        noise_v: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        a, mask_a, restore_a, _ = random_masking(self.embed_audio(audio), mask_ratio_a, noise_a)
        v, mask_v, restore_v, _ = random_masking(self.embed_video(video), mask_ratio_v, noise_v)
        a, v = self.encode_audio(a), self.encode_video(v)
        return {
            "x": self.joint(torch.cat([a, v], dim=1), "av"),   # Eq. 6
            "c_a": self.joint(a, "a").mean(dim=1),              # Eq. 4
            "c_v": self.joint(v, "v").mean(dim=1),              # Eq. 5
            "mask_a": mask_a, "mask_v": mask_v,
            "ids_restore_a": restore_a, "ids_restore_v": restore_v,
        }

    def forward_decoder(self, x: torch.Tensor, mask_a: torch.Tensor, restore_a: torch.Tensor,
                        mask_v: torch.Tensor, restore_v: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 8: pad with [MASK] at the removed positions, add E' and E^p', decode."""
        x = self.decoder_embed(x)
        n_a = restore_a.shape[1]
        keep_a = n_a - int(mask_a[0].sum())  # every sample keeps the same number
        a = unshuffle(x[:, :keep_a], self.mask_token, restore_a)
        v = unshuffle(x[:, keep_a:], self.mask_token, restore_v)  # one [MASK] for both (D_j)
        a = a + self.decoder_pos_embed_a + self.decoder_modality_a
        v = v + self.decoder_pos_embed_v + self.decoder_modality_v
        x = torch.cat([a, v], dim=1)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        return self.decoder_pred_a(x[:, :n_a]), self.decoder_pred_v(x[:, n_a:])

    def targets(self, audio: torch.Tensor, video: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patchified inputs (optionally per-patch normalised) to reconstruct."""
        if audio.dim() == 3:
            audio = audio.unsqueeze(1)
        out = [self.patch_embed_a.patchify(audio), self.patch_embed_v.patchify(video)]
        if self.norm_pix_loss:
            out = [losses.normalize_patches(t) for t in out]
        return out[0], out[1]

    def forward(self, audio: torch.Tensor, video: torch.Tensor,
                mask_ratio_a: float | None = None, mask_ratio_v: float | None = None,
                noise_a: torch.Tensor | None = None, noise_v: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Returns the losses (L = L_r + c * L_c), predictions, masks and stream outputs."""
        ra = self.mask_ratio if mask_ratio_a is None else mask_ratio_a
        rv = self.mask_ratio if mask_ratio_v is None else mask_ratio_v
        enc = self.forward_encoder(audio, video, ra, rv, noise_a, noise_v)
        pred_a, pred_v = self.forward_decoder(enc["x"], enc["mask_a"], enc["ids_restore_a"],
                                              enc["mask_v"], enc["ids_restore_v"])
        tgt_a, tgt_v = self.targets(audio, video)
        loss_a = losses.masked_mse(pred_a, tgt_a, enc["mask_a"])      # Eq. 9, audio term
        loss_v = losses.masked_mse(pred_v, tgt_v, enc["mask_v"])      # Eq. 9, video term
        # Eq. 7: video i is the anchor, the batch's audios the candidates
        loss_c = losses.info_nce(enc["c_v"], enc["c_a"], self.tau, self.bidirectional)
        acc = matching_accuracy(enc["c_a"].detach(), enc["c_v"].detach())
        loss_mae = self.mae_weight * (loss_a + loss_v)
        loss = loss_mae + self.contrast_weight * loss_c
        return {"loss": loss, "loss_mae": loss_mae, "loss_mae_a": loss_a, "loss_mae_v": loss_v,
                "loss_c": loss_c, "c_acc": acc, "pred_a": pred_a, "pred_v": pred_v,
                "mask_a": enc["mask_a"], "mask_v": enc["mask_v"],
                "c_a": enc["c_a"], "c_v": enc["c_v"]}


def build_cav_mae(size: str = "base", **kw) -> CAVMAE:
    """CAV-MAE pre-training model; ``size`` 'base' is the paper's, 'tiny' is for tests."""
    return CAVMAE(**{**SIZES[size], **kw})


class CAVMAEFT(CAVMAEEncoder):
    """CAV-MAE fine-tuning model: the encoders, mean pooling and an LN + linear head.

    ``mode`` 'av' runs the joint stream on all audio+video tokens (the official default
    'multimodal'); 'audio' / 'video' run one modality through its encoder and the joint layer
    with that stream's LayerNorms. In 'av' mode a missing modality (``None``) falls back to
    the official 'missing*' inference: average of the joint-LN and stream-LN passes.
    """

    def __init__(self, num_classes: int = 527, mode: str = "av",
                 audio_size: tuple[int, int] = (1024, 128), img_size: int = 224,
                 patch_size: int = 16, dim: int = 768, heads: int = 12,
                 modality_depth: int = 11, joint_depth: int = 1, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0) -> None:
        if mode not in ("av", "audio", "video"):
            raise ValueError(f"mode must be 'av', 'audio' or 'video', got {mode!r}")
        # the official fine-tuning model learns its position embeddings (tr_pos=True)
        super().__init__(audio_size, img_size, patch_size, dim, heads, modality_depth,
                         joint_depth, mlp_ratio, drop_path, trainable_pos=True)
        self.mode = mode
        self.mlp_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))
        self._init_encoder()

    def features(self, audio: torch.Tensor | None, video: torch.Tensor | None) -> torch.Tensor:
        """Mean-pooled [B, D] representation for the configured mode."""
        a = None if audio is None else self.encode_audio(self.embed_audio(audio))
        v = None if video is None else self.encode_video(self.embed_video(video))
        if self.mode == "audio" or (self.mode == "av" and v is None):
            if a is None:
                raise ValueError("audio input is required")
            single = self.joint(a, "a").mean(1)
            return single if self.mode == "audio" else (single + self.joint(a, "av").mean(1)) / 2
        if self.mode == "video" or a is None:
            if v is None:
                raise ValueError("video input is required")
            single = self.joint(v, "v").mean(1)
            return single if self.mode == "video" else (single + self.joint(v, "av").mean(1)) / 2
        return self.joint(torch.cat([a, v], dim=1), "av").mean(1)

    def forward(self, audio: torch.Tensor | None, video: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits [B, num_classes]."""
        return self.mlp_head(self.features(audio, video))


def build_cav_mae_ft(size: str = "base", **kw) -> CAVMAEFT:
    """CAV-MAE fine-tuning model (mode 'av' | 'audio' | 'video')."""
    cfg = {k: v for k, v in SIZES[size].items() if not k.startswith("decoder")}
    return CAVMAEFT(**{**cfg, **kw})
