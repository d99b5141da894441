"""MAViL fine-tuning models: audio-only, video-only and audio+video classifiers (B.3).

Following MAE / AudioMAE fine-tuning, only the pre-trained encoders are kept (same attribute
names as :class:`~train.models.mavil.MAViL`, so a pre-training state dict loads by key):
- uni-modal: encoder blocks (final encoder norm dropped) -> mean over patch tokens ([CLS]
  excluded, AudioMAE ``global_pool``) -> ``fc_norm`` LayerNorm -> linear ``head``;
- audio+video: both encoders -> a NEW vanilla fusion Transformer (2 layers in the supplement,
  3 in the main paper's appendix; ``fusion_depth``) -> per-modality mean pooling -> concat ->
  LayerNorm -> linear head.
Fine-tuning masking is active in training mode only: audio drops 20 % of the time rows and
20 % of the frequency columns of the patch grid (AudioMAE ``random_masking_2d``), video drops
20 % of its space-time tokens. Drop path 0.1 (Table 10). Head weights: trunc-normal std 2e-5,
bias 0 (MAE main_finetune.py).

Two choices the papers leave open (MAViL's code was never released):
- audio+video head: the supplement says only "a 2-layer vanilla Transformer on top of the audio
  and video encoder". We pool each modality separately (mean over its patch tokens, [CLS]
  excluded, as the uni-modal AudioMAE / MAE ``global_pool`` head), concatenate the two
  pooled vectors, then LayerNorm + linear - so each modality keeps its own pooled summary
  and the head's input scale does not depend on the token counts (512 audio vs 784 video).
- video fine-tuning masking: "20 % for space and time in video clips" (supplement B.3,
  citing AudioMAE's fine-tuning masking). We read it as 20 % random space-time tokens
  (``random_token_dropping``), the video analogue of AudioMAE's unstructured token masking;
  a structured (whole time-step / whole spatial position) variant is not implemented
  because nothing in the papers asks for it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checkpoints import strip_prefixes
from .blocks import LayerNorm6, vit_size
from .encoder import build_audio_encoder, build_video_encoder
from .fusion import FusionEncoder
from .masking import random_token_dropping, time_freq_masking

MODALITIES = ("audio", "video")


class MAViLClassifier(nn.Module):
    def __init__(
        self,
        modalities: tuple[str, ...] = ("audio",),
        size: str | dict = "base",
        num_classes: int = 527,
        drop_path: float = 0.1,
        fusion_depth: int = 2,
        mask_t_prob: float = 0.2,
        mask_f_prob: float = 0.2,
        video_mask_ratio: float = 0.2,
        audio_size: tuple[int, int] = (1024, 128),
        num_frames: int = 8,
        img_size: int = 224,
        patch_size: int = 16,
        tubelet: int = 2,
        audio_pos: str = "audiomae",
        video_pos: str = "separable",
    ) -> None:
        super().__init__()
        modalities = tuple(modalities)
        if not modalities or any(m not in MODALITIES for m in modalities):
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}")
        s = vit_size(size)
        self.modalities = modalities
        self.dim = s["dim"]
        self.num_classes = num_classes
        self.mask_t_prob, self.mask_f_prob = mask_t_prob, mask_f_prob
        self.video_mask_ratio = video_mask_ratio
        if "audio" in modalities:
            self.audio_encoder = build_audio_encoder(s, audio_size, patch_size, drop_path,
                                                     audio_pos)
        if "video" in modalities:
            self.video_encoder = build_video_encoder(
                s, num_frames, img_size, patch_size, tubelet, drop_path, video_pos
            )
        self.fusion = None
        if len(modalities) == 1:  # AudioMAE / MAE global_pool: fc_norm replaces the final norm
            getattr(self, f"{modalities[0]}_encoder").norm = nn.Identity()
        else:
            self.fusion = FusionEncoder(
                self.dim, fusion_depth, s["heads"], "vanilla", drop_path=drop_path,
                final_norm=False,
            )  # fmt: skip
        width = self.dim * len(modalities)
        self.fc_norm = LayerNorm6(width)
        self.head = nn.Linear(width, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def _tokens(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        enc = self.audio_encoder if modality == "audio" else self.video_encoder
        tokens = enc.embed(x)
        if self.training and modality == "audio" and (self.mask_t_prob or self.mask_f_prob):
            tokens, _ = time_freq_masking(tokens, enc.grid_size, self.mask_t_prob, self.mask_f_prob)
        elif self.training and modality == "video" and self.video_mask_ratio:
            tokens, _ = random_token_dropping(tokens, self.video_mask_ratio)
        return enc.forward_tokens(tokens)

    def forward_features(
        self, audio: torch.Tensor | None = None, video: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pooled, normalised clip embedding [B, dim * num_modalities]."""
        inputs = {"audio": audio, "video": video}
        for m in self.modalities:
            if inputs[m] is None:
                raise ValueError(f"this classifier needs {m!r} input")
        encoded = [self._tokens(m, inputs[m]) for m in self.modalities]
        if self.fusion is not None:
            encoded = list(self.fusion(*encoded))
        pooled = [x[:, 1:].mean(dim=1) for x in encoded]  # mean over patch tokens, no [CLS]
        return self.fc_norm(torch.cat(pooled, dim=-1))

    def forward(
        self, audio: torch.Tensor | None = None, video: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, num_classes]."""
        return self.head(self.forward_features(audio, video))

    def param_groups(self, weight_decay: float = 1e-5, video_lr_scale: float = 0.5) -> list[dict]:
        """AdamW groups: no weight decay on biases, norms and tokens (MAE convention); the video
        encoder's learning rate scaled by ``video_lr_scale`` when fine-tuning audio+video
        (MAViL B.3: "a 50% learning rate reduction for the weights of the video encoder").
        Each group carries ``lr_scale`` for the trainer's schedule to multiply in.
        """
        groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            decay = p.ndim > 1 and not name.endswith(("cls_token", "pos_embed"))
            scale = video_lr_scale if self.fusion is not None and name.startswith("video_") else 1.0
            groups.setdefault((decay, scale), []).append(p)
        return [
            {"params": ps, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
            for (decay, scale), ps in groups.items()
        ]

    def load_pretrained(self, state: dict) -> dict[str, list[str]]:
        """Load the encoders of a MAViL state dict (stage 1 or 2; ``student.`` prefix ok).

        Returns ``{"missing": [...], "unexpected": [...]}`` restricted to the encoders; the
        head, ``fc_norm`` and the (new) fine-tuning fusion stay freshly initialised.
        """
        prefixes = tuple(f"{m}_encoder." for m in self.modalities)
        cleaned = strip_prefixes(state, ("module.", "student."))
        wanted = {k: v for k, v in cleaned.items() if k.startswith(prefixes)}
        if self.fusion is None:  # the encoder's final norm is replaced by fc_norm (see above)
            wanted = {
                k: v
                for k, v in wanted.items()
                if not k.endswith(("_encoder.norm.weight", "_encoder.norm.bias"))
            }
        missing, unexpected = self.load_state_dict(wanted, strict=False)
        missing = [k for k in missing if k.startswith(prefixes)]
        if not wanted:
            raise KeyError("no audio_encoder./video_encoder. weights in the given state dict")
        return {"missing": missing, "unexpected": list(unexpected)}


def build_audio_classifier(size: str = "base", **kw) -> MAViLClassifier:
    return MAViLClassifier(("audio",), size, **kw)


def build_video_classifier(size: str = "base", **kw) -> MAViLClassifier:
    return MAViLClassifier(("video",), size, **kw)


def build_av_classifier(size: str = "base", **kw) -> MAViLClassifier:
    return MAViLClassifier(("audio", "video"), size, **kw)
