"""Audiovisual Masked Autoencoders (Georgescu et al., ICCV 2023, Sec. 3).

Tokens: audio [B,1,1024,128] -> 512 spectrogram patches (64 x 8, time-major); video
[B,8,3,224,224] -> 784 tubelets (4 x 14 x 14, tubelet 2x16x16). The paper uses 8 s of audio
(n_a = 400) and 16 frames (n_v = 1568); we use the store's layout shared with MAViL. Fixed
sin-cos positions per modality (2-D geometric audio, 3-D video, pos_embed.py; the paper's code
uses 1-D sinusoids; nothing here starts from an image checkpoint, so no separable layout),
random masking alpha_a = 0.5, alpha_v = 0.9 (Sec. 4.1), no [CLS] token.

Encoders (Sec. 3.2, Fig. 2), L layers in total:
  early     concatenate visible audio+video tokens, one Transformer;
  separate  one Transformer per modality;
  mid       L - S separate layers, then S joint layers on the concatenation (S = 2);
  shared    the same Transformer applied to each modality separately.
Decoders (Sec. 3.3): "shared" (one decoder, weights shared, each modality decoded alone),
"separate" (one per modality), "early" (one decoder over the concatenation). As in the
released Scenic code each modality has its own decoder projection, [MASK] token and
output head; the ViT-B decoder is 384-d, 4 layers, 6 heads (configs/*/pretrain.py).
Objectives (Sec. 3.4): "joint" reconstruction, Eq. 1 per modality with equal weights; or
modality inpainting - "inpaint_video" (video from audio), "inpaint_audio", "inpaint_both":
the decoder sequence of the target modality is [encoded visible tokens of the OTHER modality
|| (n_target - n_visible_other) target [MASK] tokens] plus the target's positions, and Eq. 1
is computed on the [MASK] positions only (against the target's patches at those positions).
Fine-tuning (Sec. 4.1): :class:`AVMAEClassifier` reuses the pre-training encoder (audio-only,
video-only or audiovisual) with mean pooling and a linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import losses
from .blocks import VIT_SIZES, LayerNorm6, init_mae_weights, make_blocks
from .masking import random_masking, unshuffle
from .patch_embed import AudioPatchEmbed, VideoPatchEmbed
from .pos_embed import sincos_pos_embed_for_grid

ENCODERS = ("early", "separate", "mid", "shared")
DECODERS = ("shared", "separate", "early")
OBJECTIVES = ("joint", "inpaint_video", "inpaint_audio", "inpaint_both")
SIZES = {  # encoder (ViT) + decoder (Scenic av_mae configs)
    "tiny": dict(dim=64, depth=3, heads=4, decoder_dim=32, decoder_depth=1, decoder_heads=4),
    "base": dict(**VIT_SIZES["base"], decoder_dim=384, decoder_depth=4, decoder_heads=6),
    "large": dict(**VIT_SIZES["large"], decoder_dim=512, decoder_depth=4, decoder_heads=8),
}


class Stack(nn.Module):
    """Transformer layers followed by a LayerNorm (Scenic's Encoder with normalise_output)."""

    def __init__(self, dim: int, depth: int, heads: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.blocks = make_blocks(dim, depth, heads, drop_path=drop_path)
        self.norm = LayerNorm6(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


AUDIO_POS, VIDEO_POS = "geometric", "3d"


def _split(x: torch.Tensor, n_first: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, :n_first], x[:, n_first:]


class AVMAEEncoder(nn.Module):
    """Tokenisers, positions and the encoder variants of Fig. 2 (shared by pre-training and
    fine-tuning, with the same parameter names so a pre-trained state dict loads by key)."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, encoder: str = "mid",
                 fusion_layers: int = 2, modality_tokens: bool = False,
                 audio_size: tuple[int, int] = (1024, 128), num_frames: int = 8,
                 img_size: int = 224, patch_size: int = 16, tubelet: int = 2,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if encoder == "mid" and not 1 <= fusion_layers < depth:
            raise ValueError(f"mid-fusion needs 1 <= S < L, got S={fusion_layers}, L={depth}")
        self.encoder_kind = encoder
        self.patch_embed_a = AudioPatchEmbed(audio_size, patch_size, 1, dim)
        self.patch_embed_v = VideoPatchEmbed(num_frames, img_size, patch_size, tubelet, 3, dim)
        ga, gv = self.patch_embed_a.grid_size, self.patch_embed_v.grid_size
        self.register_buffer("pos_embed_a",
                             sincos_pos_embed_for_grid(dim, ga, layout=AUDIO_POS)[None])
        self.register_buffer("pos_embed_v",
                             sincos_pos_embed_for_grid(dim, gv, layout=VIDEO_POS)[None])
        if modality_tokens:  # Scenic use_modality_tokens (off by default)
            self.modality_a = nn.Parameter(torch.zeros(1, 1, dim))
            self.modality_v = nn.Parameter(torch.zeros(1, 1, dim))
        if encoder in ("early", "shared"):
            self.encoder = Stack(dim, depth, heads, drop_path)
        else:
            n_sep = depth if encoder == "separate" else depth - fusion_layers
            self.encoder_a = Stack(dim, n_sep, heads, drop_path)
            self.encoder_v = Stack(dim, n_sep, heads, drop_path)
            if encoder == "mid":
                self.encoder_joint = Stack(dim, fusion_layers, heads, drop_path)

    def _init(self) -> None:
        for name, module in self.named_children():
            if not name.startswith("patch_embed"):
                module.apply(init_mae_weights)
        for name, p in self.named_parameters():
            if name.startswith(("mask_token", "modality", "decoder_modality")):
                nn.init.normal_(p, std=0.02)

    def embed(self, audio: torch.Tensor | None, video: torch.Tensor | None
              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        a = v = None
        if audio is not None:
            a = self.patch_embed_a(audio) + self.pos_embed_a
            a = a + self.modality_a if hasattr(self, "modality_a") else a
        if video is not None:
            v = self.patch_embed_v(video) + self.pos_embed_v
            v = v + self.modality_v if hasattr(self, "modality_v") else v
        return a, v

    def encode_visible(self, a: torch.Tensor, v: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Visible audio [B,Ka,D] and video [B,Kv,D] tokens -> encoded e_a, e_v (Fig. 2)."""
        ka = a.shape[1]
        if self.encoder_kind == "early":
            return _split(self.encoder(torch.cat([a, v], dim=1)), ka)
        if self.encoder_kind == "shared":
            return self.encoder(a), self.encoder(v)
        a, v = self.encoder_a(a), self.encoder_v(v)
        if self.encoder_kind == "mid":
            return _split(self.encoder_joint(torch.cat([a, v], dim=1)), ka)
        return a, v

    def encode_one(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """One modality alone through the same encoder (unimodal fine-tuning, Sec. 4.1)."""
        if self.encoder_kind in ("early", "shared"):
            return self.encoder(x)
        x = (self.encoder_a if modality == "audio" else self.encoder_v)(x)
        return self.encoder_joint(x) if self.encoder_kind == "mid" else x


class AudiovisualMAE(AVMAEEncoder):
    """Audiovisual MAE pre-training model; see the module docstring for the variants."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12,
                 decoder_dim: int = 384, decoder_depth: int = 4, decoder_heads: int = 6,
                 encoder: str = "mid", decoder: str = "shared", objective: str = "joint",
                 fusion_layers: int = 2, mask_ratio_audio: float = 0.5,
                 mask_ratio_video: float = 0.9, loss_weights: tuple[float, float] = (0.5, 0.5),
                 modality_tokens: bool = False, norm_pix_loss: bool = False,
                 audio_size: tuple[int, int] = (1024, 128), num_frames: int = 8,
                 img_size: int = 224, patch_size: int = 16, tubelet: int = 2,
                 drop_path: float = 0.0) -> None:
        for name, value, allowed in (("decoder", decoder, DECODERS),
                                     ("objective", objective, OBJECTIVES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if encoder == "separate" and decoder == "separate":
            raise ValueError("separate encoders with separate decoders are two uncoupled "
                             "MAEs (Sec. 3.3); pick another decoder")
        if objective != "joint" and encoder in ("separate", "shared"):
            raise ValueError("modality inpainting needs cross-modal encoding: use the 'early' "
                             "or 'mid' encoder (Sec. 3.4)")
        super().__init__(dim, depth, heads, encoder, fusion_layers, modality_tokens,
                         audio_size, num_frames, img_size, patch_size, tubelet, drop_path)
        self.decoder_kind, self.objective = decoder, objective
        self.mask_ratio_audio, self.mask_ratio_video = mask_ratio_audio, mask_ratio_video
        self.loss_weights, self.norm_pix_loss = loss_weights, norm_pix_loss
        ga, gv = self.patch_embed_a.grid_size, self.patch_embed_v.grid_size
        self.register_buffer("decoder_pos_embed_a",
                             sincos_pos_embed_for_grid(decoder_dim, ga, layout=AUDIO_POS)[None])
        self.register_buffer("decoder_pos_embed_v",
                             sincos_pos_embed_for_grid(decoder_dim, gv, layout=VIDEO_POS)[None])
        if modality_tokens:
            self.decoder_modality_a = nn.Parameter(torch.zeros(1, 1, decoder_dim))
            self.decoder_modality_v = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_embed_a = nn.Linear(dim, decoder_dim)
        self.decoder_embed_v = nn.Linear(dim, decoder_dim)
        self.mask_token_a = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.mask_token_v = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        if decoder == "separate":
            self.decoder_a = Stack(decoder_dim, decoder_depth, decoder_heads)
            self.decoder_v = Stack(decoder_dim, decoder_depth, decoder_heads)
        else:
            self.decoder = Stack(decoder_dim, decoder_depth, decoder_heads)
        self.decoder_pred_a = nn.Linear(decoder_dim, self.patch_embed_a.patch_dim)
        self.decoder_pred_v = nn.Linear(decoder_dim, self.patch_embed_v.patch_dim)
        self._init()

    def encode(self, audio: torch.Tensor, video: torch.Tensor,
               noise_a: torch.Tensor | None = None, noise_v: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        a, v = self.embed(audio, video)
        a, mask_a, restore_a, _ = random_masking(a, self.mask_ratio_audio, noise_a)
        v, mask_v, restore_v, _ = random_masking(v, self.mask_ratio_video, noise_v)
        e_a, e_v = self.encode_visible(a, v)
        return {"e_a": e_a, "e_v": e_v, "mask_a": mask_a, "mask_v": mask_v,
                "ids_restore_a": restore_a, "ids_restore_v": restore_v}

    # ------------------------------------------------------------------ decoder
    def _inpaint(self, other: torch.Tensor, mask_token: torch.Tensor, n: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """[other modality's encoded tokens || n - K target [MASK] tokens] and its loss mask."""
        b, k, d = other.shape
        if k >= n:
            raise ValueError(f"{k} visible tokens of the other modality leave no room for the "
                             f"{n} target positions; lower its visible share")
        z = torch.cat([other, mask_token.to(other.dtype).expand(b, n - k, d)], dim=1)
        loss_mask = torch.cat([other.new_zeros(b, k), other.new_ones(b, n - k)], dim=1)
        return z, loss_mask

    def decoder_inputs(self, enc: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder sequences z_a, z_v (with positions) and the masks their loss uses."""
        n_a, n_v = enc["ids_restore_a"].shape[1], enc["ids_restore_v"].shape[1]
        pa, pv = self.decoder_embed_a(enc["e_a"]), self.decoder_embed_v(enc["e_v"])
        if self.objective in ("inpaint_audio", "inpaint_both"):
            z_a, m_a = self._inpaint(pv, self.mask_token_a, n_a)     # z_a = [e_v || m_a]
        else:
            z_a, m_a = unshuffle(pa, self.mask_token_a, enc["ids_restore_a"]), enc["mask_a"]
        if self.objective in ("inpaint_video", "inpaint_both"):
            z_v, m_v = self._inpaint(pa, self.mask_token_v, n_v)     # z_v = [e_a || m_v]
        else:
            z_v, m_v = unshuffle(pv, self.mask_token_v, enc["ids_restore_v"]), enc["mask_v"]
        z_a, z_v = z_a + self.decoder_pos_embed_a, z_v + self.decoder_pos_embed_v
        if hasattr(self, "decoder_modality_a"):
            z_a, z_v = z_a + self.decoder_modality_a, z_v + self.decoder_modality_v
        return z_a, z_v, m_a, m_v

    def decode(self, z_a: torch.Tensor, z_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.decoder_kind == "separate":
            y_a, y_v = self.decoder_a(z_a), self.decoder_v(z_v)
        elif self.decoder_kind == "shared":
            y_a, y_v = self.decoder(z_a), self.decoder(z_v)
        else:  # "early": one decoder over the concatenated sequence
            y_a, y_v = _split(self.decoder(torch.cat([z_a, z_v], dim=1)), z_a.shape[1])
        return self.decoder_pred_a(y_a), self.decoder_pred_v(y_v)

    # ------------------------------------------------------------------ objective
    def forward(self, audio: torch.Tensor, video: torch.Tensor,
                noise_a: torch.Tensor | None = None, noise_v: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Returns ``loss`` and per-modality ``loss_a`` / ``loss_v`` (zero when a modality is
        not a target), predictions, and the masks the losses used (1 = reconstructed)."""
        enc = self.encode(audio, video, noise_a, noise_v)
        z_a, z_v, m_a, m_v = self.decoder_inputs(enc)
        pred_a, pred_v = self.decode(z_a, z_v)
        t_a = self.patch_embed_a.patchify(audio)
        t_v = self.patch_embed_v.patchify(video)
        if self.norm_pix_loss:
            t_a, t_v = losses.normalize_patches(t_a), losses.normalize_patches(t_v)
        zero = pred_a.new_zeros(())
        loss_a = losses.masked_mse(pred_a, t_a, m_a) if self.objective != "inpaint_video" else zero
        loss_v = losses.masked_mse(pred_v, t_v, m_v) if self.objective != "inpaint_audio" else zero
        w_a, w_v = self.loss_weights
        return {"loss": w_a * loss_a + w_v * loss_v, "loss_a": loss_a, "loss_v": loss_v,
                "pred_a": pred_a, "pred_v": pred_v, "mask_a": m_a, "mask_v": m_v}


def build_av_mae(size: str = "base", **kw) -> AudiovisualMAE:
    """Audiovisual MAE; default mid-fusion encoder + shared decoder + joint reconstruction."""
    return AudiovisualMAE(**{**SIZES[size], **kw})


class AVMAEClassifier(AVMAEEncoder):
    """Fine-tuning with the pre-training encoder structure (Sec. 4.1): audio-only (AST-like),
    video-only (unfactorised ViViT) or audiovisual; mean pooling, LayerNorm, linear head.

    The paper's best audiovisual fine-tuning initialises MBT from these weights instead;
    this reuse of the pre-training encoder is its stated alternative.
    """

    def __init__(self, num_classes: int = 527, mode: str = "av", dim: int = 768,
                 depth: int = 12, heads: int = 12, encoder: str = "mid",
                 fusion_layers: int = 2, drop_path: float = 0.1, **kw) -> None:
        if mode not in ("av", "audio", "video"):
            raise ValueError(f"mode must be 'av', 'audio' or 'video', got {mode!r}")
        super().__init__(dim, depth, heads, encoder, fusion_layers, drop_path=drop_path, **kw)
        self.mode = mode
        self.fc_norm = LayerNorm6(dim)
        self.head = nn.Linear(dim, num_classes)
        self._init()
        nn.init.trunc_normal_(self.head.weight, std=2e-5)

    def forward(self, audio: torch.Tensor | None = None, video: torch.Tensor | None = None
                ) -> torch.Tensor:
        a, v = self.embed(audio if self.mode != "video" else None,
                          video if self.mode != "audio" else None)
        if self.mode == "av":
            if a is None or v is None:
                raise ValueError("audiovisual fine-tuning needs audio and video")
            x = torch.cat(self.encode_visible(a, v), dim=1)
        elif self.mode == "audio":
            x = self.encode_one(a, "audio")
        else:
            x = self.encode_one(v, "video")
        return self.head(self.fc_norm(x.mean(dim=1)))


def build_av_mae_ft(size: str = "base", **kw) -> AVMAEClassifier:
    """Audiovisual-MAE fine-tuning model; load pre-trained weights with strict=False."""
    cfg = {k: v for k, v in SIZES[size].items() if not k.startswith("decoder")}
    return AVMAEClassifier(**{**cfg, **kw})
