"""Audio-MAE and Video-MAE: the uni-modal baselines of MAViL Table 2 (the "None" column).

One modality, no fusion and no contrast: the MAViL encoder of that modality (ViT with [CLS],
fixed sin-cos positions; encoder.py), 80 % random masking, and an 8-layer 512-d MAE decoder
that predicts the raw patches (spectrogram patches 16x16 = 256 values, or video tubelets
2x16x16x3 = 1536 values); the loss is the MSE over masked patches only (MAViL Eq. 1 with one
modality; MAE / AudioMAE). CAV-MAE Sec. 3 and Georgescu et al. Table 3 use the same
baselines.

Attribute names are MAViL's (``audio_encoder`` / ``audio_decoder`` or ``video_*``), so a
pre-trained Audio-MAE / Video-MAE fine-tunes with the MAViL audio-only / video-only
classifiers (``mavil_audio_ft`` / ``mavil_video_ft``; ``MAViLClassifier.load_pretrained``).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import losses
from .blocks import decoder_size, vit_size
from .encoder import MaskedDecoder, ModalityEncoder, build_audio_encoder, build_video_encoder
from .masking import random_masking

MODALITIES = ("audio", "video")


class UniModalMAE(nn.Module):
    """Masked autoencoder over one modality ("audio": [B,1,1024,128]; "video": [B,8,3,224,224])."""

    def __init__(self, modality: str = "audio", size: str | dict = "base",
                 decoder: str | dict | None = None, mask_ratio: float = 0.8,
                 norm_pix_loss: bool = False, audio_size: tuple[int, int] = (1024, 128),
                 num_frames: int = 8, img_size: int = 224, patch_size: int = 16,
                 tubelet: int = 2, drop_path: float = 0.0, pos_layout: str | None = None
                 ) -> None:
        super().__init__()
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        s = vit_size(size)
        self.modality = modality
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        # pos_layout: pos_embed.py; default "audiomae" for audio, "separable" for video
        if modality == "audio":
            pos_layout = pos_layout or "audiomae"
            encoder = build_audio_encoder(s, audio_size, patch_size, drop_path, pos_layout)
        else:
            pos_layout = pos_layout or "separable"
            encoder = build_video_encoder(s, num_frames, img_size, patch_size, tubelet,
                                          drop_path, pos_layout)
        pe = encoder.patch_embed
        dec = MaskedDecoder(s["dim"], pe.grid_size, pe.patch_dim, **decoder_size(decoder, size),
                            pos_layout=pos_layout)
        setattr(self, f"{modality}_encoder", encoder)
        setattr(self, f"{modality}_decoder", dec)

    @property
    def encoder(self) -> ModalityEncoder:
        return getattr(self, f"{self.modality}_encoder")

    @property
    def decoder(self) -> MaskedDecoder:
        return getattr(self, f"{self.modality}_decoder")

    def forward(self, x: torch.Tensor, mask_ratio: float | None = None,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Returns ``loss`` (masked-patch MSE), ``pred`` [B, L, P], ``mask`` [B, L] (1 = masked)
        and ``latent`` [B, 1 + K, D] (encoded [CLS] + visible tokens)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        tokens = self.encoder.embed(x)
        visible, mask, ids_restore, _ = random_masking(tokens, ratio, noise)
        latent = self.encoder.forward_tokens(visible)
        pred = self.decoder(latent, ids_restore)
        target = self.encoder.patch_embed.patchify(x)
        if self.norm_pix_loss:
            target = losses.normalize_patches(target)
        return {"loss": losses.masked_mse(pred, target, mask), "pred": pred, "mask": mask,
                "latent": latent}


def build_audio_mae(size: str = "base", **kw) -> UniModalMAE:
    """Audio-MAE baseline (MAViL Table 2 "None", audio row)."""
    return UniModalMAE("audio", size, **kw)


def build_video_mae(size: str = "base", **kw) -> UniModalMAE:
    """Video-MAE baseline (MAViL Table 2 "None", video row)."""
    return UniModalMAE("video", size, **kw)
