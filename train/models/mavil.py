"""MAViL: Masked Audio-Video Learners (Huang et al.), the pre-training model.

Layout (Sec. 3.1, appendix B): separate ViT audio encoder f_a and video encoder f_v (each with
its own patch embedding, fixed sin-cos positional embedding and [CLS]), a shallow fusion
encoder g_av (L = 2, vanilla or MBT; fusion.py) and separate 8-layer 512-d decoders
f_a^{-1}, f_v^{-1} that put [MASK] tokens back in place and predict every patch.

One forward = one training step's loss:
  a' , v'   = 20 % visible tokens (80 % random masking, masking.py)
  a_um, v_um = f_a(a'), f_v(v')                      uni-modal encodings
  a_mm, v_mm = g_av(a_um || v_um)                     fused encodings
  a^, v^     = f_a^{-1}(a_mm), f_v^{-1}(v_mm)         predictions for all patches
  L_r       = Eq. 1 (stage 1: raw spectrogram patches / pixels) or Eq. 5 (stage 2: teacher
              features, passed in as ``targets``), over masked patches only
  L_inter   = L_c(Avg(a_um), Avg(v_um)), tau 0.1      Eq. 3, uni-modal outputs only
  L_intra   = 1/2 [L_c(Avg(a_um), Avg(a~_um)) + L_c(Avg(v_um), Avg(v~_um))], tau 1.0, where the
              second views a~, v~ are another 20 % of tokens disjoint from a', v'
  loss      = L_r + alpha L_inter + beta L_intra      Eq. 4 / Eq. 6 (alpha 0.1, beta 0.01)
Avg is the mean over the visible patch tokens ([CLS] excluded). The fused a_mm / v_mm never
enter the contrastive terms (Sec. 3.2: fusion would be a shortcut). InfoNCE follows Eq. 2 as
written (one direction, audio / first view as anchors); ``symmetric_nce=True`` averages both
directions. Negatives are the global batch under DDP (losses.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import losses
from .blocks import decoder_size, vit_size
from .encoder import MaskedDecoder, ModalityEncoder, build_audio_encoder, build_video_encoder
from .fusion import FusionEncoder
from .masking import disjoint_view_ids, gather_tokens, num_kept, random_masking


class MAViL(nn.Module):
    """MAViL pre-training model (stage 1 raw targets, or stage-2 student with feature targets).

    ``target="raw"`` (stage 1): decoders predict patches (audio 256, video 2*16*16*3 values).
    ``target="features"`` (stage 2): decoders predict ``target_dim``-d teacher features
    (default: the encoder width) and :meth:`forward` needs ``targets``.
    ``fusion`` is "vanilla" (default, Table 2) or "mbt"; ``mbt_weights`` picks one g_av^l for
    both modalities ("shared", Sec. 3.1 as written) or MBT's per-modality layers ("separate").
    ``audio_pos`` / ``video_pos``: position-table layouts (pos_embed.py); the defaults are
    AudioMAE's own audio table and the separable video table an ImageNet MAE carries into.
    """

    def __init__(
        self,
        size: str | dict = "base",
        decoder: str | dict | None = None,
        fusion: str = "vanilla",
        fusion_depth: int = 2,
        num_bottlenecks: int = 4,
        mbt_weights: str = "shared",
        mask_ratio: float = 0.8,
        video_mask_ratio: float | None = None,
        audio_size: tuple[int, int] = (1024, 128),
        num_frames: int = 8,
        img_size: int = 224,
        patch_size: int = 16,
        tubelet: int = 2,
        target: str = "raw",
        target_dim: int | None = None,
        norm_pix_loss: bool = False,
        alpha: float = 0.1,
        beta: float = 0.01,
        tau_inter: float = 0.1,
        tau_intra: float = 1.0,
        symmetric_nce: bool = False,
        drop_path: float = 0.0,
        with_decoders: bool = True,
        audio_pos: str = "audiomae",
        video_pos: str = "separable",
    ) -> None:
        super().__init__()
        if target not in ("raw", "features"):
            raise ValueError(f"target must be 'raw' or 'features', got {target!r}")
        s = vit_size(size)
        self.dim = s["dim"]
        self.audio_encoder = build_audio_encoder(s, audio_size, patch_size, drop_path, audio_pos)
        self.video_encoder = build_video_encoder(
            s, num_frames, img_size, patch_size, tubelet, drop_path, video_pos
        )
        self.fusion = FusionEncoder(
            self.dim, fusion_depth, s["heads"], fusion, num_bottlenecks,
            drop_path=drop_path, mbt_weights=mbt_weights,
        )  # fmt: skip
        self.target = target
        self.target_dim = target_dim or self.dim
        self.audio_decoder = self.video_decoder = None
        if with_decoders:
            d = decoder_size(decoder, size)
            ape, vpe = self.audio_encoder.patch_embed, self.video_encoder.patch_embed
            out_a = ape.patch_dim if target == "raw" else self.target_dim
            out_v = vpe.patch_dim if target == "raw" else self.target_dim
            self.audio_decoder = MaskedDecoder(self.dim, ape.grid_size, out_a, **d,
                                               pos_layout=audio_pos)
            self.video_decoder = MaskedDecoder(self.dim, vpe.grid_size, out_v, **d,
                                               pos_layout=video_pos)
        self.mask_ratio = mask_ratio
        self.video_mask_ratio = mask_ratio if video_mask_ratio is None else video_mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.alpha, self.beta = alpha, beta
        self.tau_inter, self.tau_intra = tau_inter, tau_intra
        self.symmetric_nce = symmetric_nce

    # ------------------------------------------------------------------ complete view
    @torch.no_grad()
    def extract_targets(
        self, audio: torch.Tensor, video: torch.Tensor, kind: str = "fusion"
    ) -> dict[str, torch.Tensor]:
        """Teacher features of complete-view inputs (Sec. 3.3), [CLS] removed.

        ``kind="fusion"``: g_av(f_a(a) || f_v(v)) (MAViL-Fusion, default);
        ``kind="uni"``: f_a(a), f_v(v) (MAViL-Uni, Table 4).
        Returns {"audio": [B, N, D], "video": [B, M, D]}.
        """
        a_um = self.audio_encoder(audio)
        v_um = self.video_encoder(video)
        if kind == "uni":
            return {"audio": a_um[:, 1:], "video": v_um[:, 1:]}
        if kind != "fusion":
            raise ValueError(f"target kind must be 'fusion' or 'uni', got {kind!r}")
        a_mm, v_mm = self.fusion(a_um, v_um)
        return {"audio": a_mm[:, 1:], "video": v_mm[:, 1:]}

    # ------------------------------------------------------------------ masked view
    def _masked_encode(
        self, encoder: ModalityEncoder, x: torch.Tensor, ratio: float,
        noise: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        tokens = encoder.embed(x)
        b, length, _ = tokens.shape
        if noise is None:
            noise = torch.rand(b, length, device=tokens.device)
        visible, mask, ids_restore, _ = random_masking(tokens, ratio, noise)
        out = {"um": encoder.forward_tokens(visible), "mask": mask, "ids_restore": ids_restore}
        if self.beta:  # second, disjoint view for the intra-modal contrast (Sec. 3.2)
            view2 = disjoint_view_ids(noise, num_kept(length, ratio), 2)[1]
            out["um_view2"] = encoder.forward_tokens(gather_tokens(tokens, view2))
        return out

    def _recon_targets(
        self, audio: torch.Tensor, video: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ta = self.audio_encoder.patch_embed.patchify(audio)
        tv = self.video_encoder.patch_embed.patchify(video)
        if self.norm_pix_loss:
            ta, tv = losses.normalize_patches(ta), losses.normalize_patches(tv)
        return ta, tv

    def forward(
        self,
        audio: torch.Tensor,
        video: torch.Tensor,
        targets: dict[str, torch.Tensor] | None = None,
        noise_a: torch.Tensor | None = None,
        noise_v: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """audio [B, 1, T, F], video [B, T, 3, H, W] -> dict of losses and predictions.

        ``noise_a`` / ``noise_v`` ([B, N] / [B, M], optional) fix the masks: the tokens with
        the smallest noise stay visible, the next ones form the intra-modal second view.

        Keys: ``loss`` (Eq. 4 / 6), ``loss_recon`` (= audio + video terms of Eq. 1 / 5),
        ``loss_recon_audio``, ``loss_recon_video``, ``loss_inter``, ``loss_intra``
        (zero when their weight is 0), and ``pred_audio`` [B, N, P_a], ``pred_video``
        [B, M, P_v], ``mask_audio`` [B, N], ``mask_video`` [B, M] (1 = masked).
        """
        if self.audio_decoder is None:
            raise RuntimeError("this MAViL was built without decoders (teacher only)")
        a = self._masked_encode(self.audio_encoder, audio, self.mask_ratio, noise_a)
        v = self._masked_encode(self.video_encoder, video, self.video_mask_ratio, noise_v)
        a_mm, v_mm = self.fusion(a["um"], v["um"])
        pred_a = self.audio_decoder(a_mm, a["ids_restore"])
        pred_v = self.video_decoder(v_mm, v["ids_restore"])

        if self.target == "raw":  # Eq. 1
            ta, tv = self._recon_targets(audio, video)
        else:  # Eq. 5
            if targets is None:
                raise ValueError("a feature-target MAViL needs teacher targets")
            ta, tv = targets["audio"], targets["video"]
        rec_a = losses.masked_mse(pred_a, ta, a["mask"])
        rec_v = losses.masked_mse(pred_v, tv, v["mask"])
        recon = rec_a + rec_v

        zero = recon.new_zeros(())
        a_emb, v_emb = a["um"][:, 1:].mean(1), v["um"][:, 1:].mean(1)  # Avg over visible tokens
        inter = intra = zero
        if self.alpha:
            inter = losses.info_nce(a_emb, v_emb, self.tau_inter, self.symmetric_nce)
        if self.beta:
            intra = losses.intra_modal_nce(
                a_emb, a["um_view2"][:, 1:].mean(1),
                v_emb, v["um_view2"][:, 1:].mean(1),
                self.tau_intra, self.symmetric_nce,
            )  # fmt: skip
        loss = losses.mavil_objective(recon, inter, intra, self.alpha, self.beta)
        return {
            "loss": loss,
            "loss_recon": recon.detach(),
            "loss_recon_audio": rec_a.detach(),
            "loss_recon_video": rec_v.detach(),
            "loss_inter": inter.detach(),
            "loss_intra": intra.detach(),
            "pred_audio": pred_a,
            "pred_video": pred_v,
            "mask_audio": a["mask"],
            "mask_video": v["mask"],
        }

    @torch.no_grad()
    def reconstruct(self, audio: torch.Tensor, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage-1 reconstructions for viewing (appendix A, Fig. 3), in input layout.

        Returns ``{modality}_masked`` (input with removed patches zeroed), ``{modality}_pred``
        (decoder output for every patch; norm-pix predictions are mapped back with each
        patch's own mean / std) and ``{modality}_pasted`` (visible input + predicted patches).
        """
        if self.target != "raw":
            raise RuntimeError("only a raw-target (stage-1) MAViL reconstructs its inputs")
        out = self(audio, video)
        result = {}
        for name, x in (("audio", audio), ("video", video)):
            embed = getattr(self, f"{name}_encoder").patch_embed
            patches = embed.patchify(x)
            pred = out[f"pred_{name}"].float()
            if self.norm_pix_loss:
                mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
                pred = pred * (var + 1e-6) ** 0.5 + mean
            removed = out[f"mask_{name}"].unsqueeze(-1)
            result[f"{name}_masked"] = embed.unpatchify(patches * (1 - removed))
            result[f"{name}_pred"] = embed.unpatchify(pred)
            result[f"{name}_pasted"] = embed.unpatchify(patches * (1 - removed) + pred * removed)
        return result


def build_mavil(size: str = "base", **kw) -> MAViL:
    """Stage-1 MAViL (raw targets) by default; pass ``target="features"`` for a student."""
    return MAViL(size=size, **kw)
