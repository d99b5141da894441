"""Multi-view scoring of one batch of clips: the audio once, each video view once.

MAViL supplement B.3: the ten 4-s video windows are each fed forward with the same 10-s
audio, and the ten predictions are averaged. Since the uni-modal audio encoder does not see
the video, its output is the same for all ten windows: we encode the audio once per clip
and repeat its tokens for the fusion layers (``repeat_interleave``), which gives the same
logits as ten full forward passes (tests/test_eval_infer.py checks it) for a tenth of the
audio cost. CAV-MAE's modality-specific audio layers are shared the same way before its
joint layer. Audiovisual-MAE runs its full forward per view (its early/mid fusion mixes
the modalities inside the encoder; a clip's audio is re-encoded per view there).

What is averaged: probabilities - sigmoid for multi-label, softmax for single-label - as
CAV-MAE's ``run_cavmae_ft.py`` multi-frame evaluation does (it applies sigmoid / softmax to
each frame's output, then ``np.mean`` over frames); MAViL publishes no code, and the video
practice it cites (SlowFast multi-view testing) also averages softmax scores.
"""

from __future__ import annotations

import torch
from torch import nn


def probabilities(logits: torch.Tensor, single_label: bool) -> torch.Tensor:
    logits = logits.float()
    return logits.softmax(dim=-1) if single_label else logits.sigmoid()


def _flat_views(video: torch.Tensor, per_view_dims: int) -> tuple[torch.Tensor, int]:
    """[B, K, *view] -> ([B*K, *view], K); a single view [B, *view] -> ([B, *view], 1)."""
    if video.dim() == per_view_dims + 1:
        return video, 1
    b, k = video.shape[:2]
    return video.reshape(b * k, *video.shape[2:]), k


def mavil_logits(model: nn.Module, audio: torch.Tensor | None, video: torch.Tensor | None
                 ) -> tuple[torch.Tensor, int]:
    """MAViLClassifier -> (logits [B*K, C], K): the layers of ``forward_features`` with the
    audio encoder run once per clip."""
    encoded = []
    k = 1
    if "audio" in model.modalities:
        enc = model.audio_encoder
        encoded.append(enc.forward_tokens(enc.embed(audio)))
    if "video" in model.modalities:
        flat, k = _flat_views(video, 4)
        enc = model.video_encoder
        encoded.append(enc.forward_tokens(enc.embed(flat)))
    if model.fusion is not None:
        a, v = encoded
        encoded = list(model.fusion(a.repeat_interleave(k, dim=0), v))
    pooled = [x[:, 1:].mean(dim=1) for x in encoded]  # patch tokens, no [CLS] (as forward)
    return model.head(model.fc_norm(torch.cat(pooled, dim=-1))), k


def cav_mae_logits(model: nn.Module, audio: torch.Tensor | None, video: torch.Tensor | None
                   ) -> tuple[torch.Tensor, int]:
    """CAVMAEFT -> (logits [B*K, C], K); audio layers once per clip, joint layer per frame."""
    if model.mode == "audio":
        return model(audio, None), 1
    flat, k = _flat_views(video, 3)
    if model.mode == "video":
        return model(None, flat), k
    a = model.encode_audio(model.embed_audio(audio)).repeat_interleave(k, dim=0)
    v = model.encode_video(model.embed_video(flat))
    return model.mlp_head(model.joint(torch.cat([a, v], dim=1), "av").mean(1)), k


def full_forward_logits(model: nn.Module, audio: torch.Tensor | None,
                        video: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Any classifier ``model(audio=, video=)``: one full forward per view."""
    if video is None:
        return model(audio=audio, video=None), 1
    flat, k = _flat_views(video, 4)
    if audio is not None:
        audio = audio.repeat_interleave(k, dim=0)
    return model(audio=audio, video=flat), k


LOGITS = {"mavil": mavil_logits, "cav_mae": cav_mae_logits, "av_mae": full_forward_logits}


@torch.no_grad()
def score_batch(model: nn.Module, family: str, audio: torch.Tensor | None,
                video: torch.Tensor | None, single_label: bool) -> torch.Tensor:
    """Clip-level scores [B, C]: the mean over the clip's views of the per-view probabilities."""
    logits, k = LOGITS[family](model, audio, video)
    probs = probabilities(logits, single_label)
    return probs.view(-1, k, probs.shape[-1]).mean(dim=1)
