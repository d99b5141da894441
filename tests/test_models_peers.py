"""CAV-MAE, Audiovisual MAE and the uni-modal MAEs: shapes, parameter counts, loss properties."""

from __future__ import annotations

import math

import pytest
import torch

from train.checkpoints import encoder_state_dict
from train.models import build_model
from train.models.av_mae import DECODERS, ENCODERS, build_av_mae, build_av_mae_ft
from train.models.cav_mae import build_cav_mae, build_cav_mae_ft
from train.models.mavil_finetune import build_audio_classifier, build_video_classifier
from train.models.uni_mae import build_audio_mae, build_video_mae

torch.set_num_threads(1)
B = 3


def inputs(seed: int = 0, video_frames: int | None = 8):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(B, 1, 1024, 128, generator=g)
    if video_frames is None:  # CAV-MAE: one RGB frame
        return audio, torch.randn(B, 3, 224, 224, generator=g)
    return audio, torch.randn(B, video_frames, 3, 224, 224, generator=g)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(fn):
    with torch.device("meta"):
        return fn()


def block(d: int, extra_norms: int = 0) -> int:
    """Hand count of one ViT block: 2 LN + qkv + proj + MLP(4d) (+ extra LNs)."""
    return (2 + extra_norms) * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (8 * d * d + 5 * d)


# ------------------------------------------------------------------ CAV-MAE
def test_cav_mae_token_counts_and_shapes():
    audio, frame = inputs(video_frames=None)
    out = build_cav_mae("tiny")(audio, frame)
    assert out["pred_a"].shape == (B, 512, 256)          # 64 x 8 spectrogram patches
    assert out["pred_v"].shape == (B, 196, 768)          # 14 x 14 image patches
    # Sec. 2.3: 75 % of each modality masked -> 128 of 512 and 49 of 196 visible
    assert out["mask_a"].sum(1).tolist() == [384] * B
    assert out["mask_v"].sum(1).tolist() == [147] * B
    assert out["c_a"].shape == out["c_v"].shape == (B, 64)


def test_cav_mae_parameter_counts_match_paper():
    pre = n_params(on_meta(lambda: build_cav_mae("base")))
    ft = n_params(on_meta(lambda: build_cav_mae_ft("base", num_classes=527)))
    d, e = 768, 512
    embed = (256 * d + d) + (768 * d + d) + 2 * d + (512 + 196) * d
    encoder = embed + 22 * block(d) + block(d, extra_norms=4) + 3 * 2 * d
    decoder = (d * e + e) + 3 * e + (512 + 196) * e + 8 * block(e) + 2 * e \
        + (e * 256 + 256) + (e * 768 + 768)
    head = 2 * d + d * 527 + 527
    assert pre == encoder + decoder and ft == encoder + head
    # The official code (YuanGongND/cav-mae) counts 191.04 M / 164.91 M: its Block class
    # carries 4 unused per-stream LayerNorms in each of the 22 modality-specific and 8
    # decoder layers (0.168 M / 0.135 M). Paper: encoder 164 M + decoder 27 M (Sec. 2.3.1).
    unused_pre, unused_ft = 22 * 4 * 2 * d + 8 * 4 * 2 * e, 22 * 4 * 2 * d
    official_pre, official_ft = 191.036e6, 164.907e6
    print(f"\nCAV-MAE params: pre-training {pre / 1e6:.3f} M (official code 191.036 M), "
          f"fine-tuning {ft / 1e6:.3f} M (official 164.907 M, 527 classes), "
          f"encoder {encoder / 1e6:.2f} M (paper 164 M), decoder {decoder / 1e6:.2f} M "
          f"(paper 27 M)")
    assert abs(pre + unused_pre - official_pre) < 1e3
    assert abs(ft + unused_ft - official_ft) < 1e3
    assert abs(pre - 191.0e6) / 191.0e6 < 0.002 and abs(ft - 164.9e6) / 164.9e6 < 0.002
    assert abs(encoder - 164e6) / 164e6 < 0.01 and abs(decoder - 27e6) / 27e6 < 0.03


def test_cav_mae_contrastive_loss_is_eq7_by_hand():
    audio, frame = inputs(1, video_frames=None)
    model = build_cav_mae("tiny")
    out = model(audio, frame)
    c_a = out["c_a"].detach().double().tolist()
    c_v = out["c_v"].detach().double().tolist()

    def unit(x):
        n = math.sqrt(sum(t * t for t in x))
        return [t / n for t in x]

    ca, cv = [unit(x) for x in c_a], [unit(x) for x in c_v]
    total = 0.0
    for i in range(B):  # Eq. 7, s_ij = c_v_i . c_a_j, tau = 0.05
        s = [sum(p * q for p, q in zip(cv[i], ca[k], strict=True)) / 0.05 for k in range(B)]
        total += -math.log(math.exp(s[i]) / (sum(math.exp(s[k]) for k in range(B) if k != i)
                                             + math.exp(s[i])))
    assert out["loss_c"].item() == pytest.approx(total / B, rel=1e-4)
    assert out["loss"].item() == pytest.approx(
        out["loss_mae_a"].item() + out["loss_mae_v"].item() + 0.01 * out["loss_c"].item(),
        rel=1e-5)


def test_cav_mae_reconstruction_counts_masked_patches_only():
    audio, frame = inputs(2, video_frames=None)
    model = build_cav_mae("tiny")
    noise_a, noise_v = torch.rand(B, 512), torch.rand(B, 196)
    base = model(audio, frame, noise_a=noise_a, noise_v=noise_v)
    keep_a = torch.zeros(B, 512).scatter_(1, noise_a.argsort(1)[:, :128], 1.0).bool()

    def shift(where):
        def hook(_m, _inp, out):
            return out + 100.0 * where.unsqueeze(-1)
        return hook

    h = model.decoder_pred_a.register_forward_hook(shift(keep_a))
    visible_only = model(audio, frame, noise_a=noise_a, noise_v=noise_v)
    h.remove()
    h = model.decoder_pred_a.register_forward_hook(shift(~keep_a))
    masked = model(audio, frame, noise_a=noise_a, noise_v=noise_v)
    h.remove()
    assert visible_only["loss_mae_a"].item() == pytest.approx(base["loss_mae_a"].item())
    assert masked["loss_mae_a"].item() > base["loss_mae_a"].item() + 1000


def test_cav_mae_reconstructs_normalised_patches_eq9():
    """Eq. 9 reconstructs norm(a_mask), norm(v_mask): per-patch standardised targets (the
    released recipes set norm_pix_loss=True), averaged over the masked patches only."""
    audio, frame = inputs(16, video_frames=None)
    model = build_cav_mae("tiny")
    assert model.norm_pix_loss
    noise_a, noise_v = torch.rand(B, 512), torch.rand(B, 196)
    out = model(audio, frame, noise_a=noise_a, noise_v=noise_v)
    patches = audio[:, 0].reshape(B, 64, 16, 8, 16).permute(0, 1, 3, 2, 4).reshape(B, 512, 256)
    mu = patches.mean(-1, keepdim=True)
    var = ((patches - mu) ** 2).sum(-1, keepdim=True) / 255  # unbiased, as MAE
    target = (patches - mu) / (var + 1e-6).sqrt()
    masked = noise_a.argsort(1)[:, 128:]                      # the 384 removed patches
    err = ((out["pred_a"].detach() - target) ** 2).mean(-1).gather(1, masked)
    assert out["loss_mae_a"].item() == pytest.approx(err.mean().item(), rel=1e-5)


def test_cav_mae_single_streams_see_only_their_modality():
    audio, frame = inputs(3, video_frames=None)
    _, other = inputs(4, video_frames=None)
    model = build_cav_mae("tiny").eval()
    noise = dict(noise_a=torch.rand(B, 512), noise_v=torch.rand(B, 196))
    a = model(audio, frame, **noise)
    b = model(audio, other, **noise)
    assert torch.allclose(a["c_a"], b["c_a"])              # Eq. 4: audio stream only
    assert not torch.allclose(a["c_v"], b["c_v"])
    assert not torch.allclose(a["pred_a"], b["pred_a"])    # the joint stream fuses both


def test_cav_mae_finetune_modes():
    audio, frame = inputs(5, video_frames=None)
    _, other = inputs(6, video_frames=None)
    for mode in ("av", "audio", "video"):
        model = build_cav_mae_ft("tiny", num_classes=7, mode=mode).eval()
        y = model(audio, frame)
        assert y.shape == (B, 7)
        changed = not torch.allclose(y, model(audio, other))
        assert changed == (mode != "audio")
    av = build_cav_mae_ft("tiny", num_classes=7).eval()
    assert av(audio, None).shape == (B, 7)                  # official 'missing video' path
    with pytest.raises(ValueError):
        build_cav_mae_ft("tiny", mode="both")


# ------------------------------------------------------------------ Audiovisual MAE
@pytest.mark.parametrize("encoder", ENCODERS)
def test_av_mae_encoders_and_decoders(encoder):
    audio, video = inputs(7)
    _, other = inputs(8)
    noise = dict(noise_a=torch.rand(B, 512), noise_v=torch.rand(B, 784))
    for decoder in DECODERS:
        if encoder == "separate" and decoder == "separate":
            with pytest.raises(ValueError):
                build_av_mae("tiny", encoder=encoder, decoder=decoder)
            continue
        model = build_av_mae("tiny", encoder=encoder, decoder=decoder).eval()
        enc = model.encode(audio, video, **noise)
        # Sec. 4.1: alpha_a = 0.5 -> 256 of 512 audio tokens, alpha_v = 0.9 -> 78 of 784
        assert enc["e_a"].shape == (B, 256, 64) and enc["e_v"].shape == (B, 78, 64)
        out = model(audio, video, **noise)
        assert out["pred_a"].shape == (B, 512, 256) and out["pred_v"].shape == (B, 784, 1536)
        assert out["loss"].item() == pytest.approx(
            0.5 * out["loss_a"].item() + 0.5 * out["loss_v"].item(), rel=1e-6)
        e_a_other = model.encode(audio, other, **noise)["e_a"]
        cross_modal = encoder in ("early", "mid")          # Fig. 2: fusion before the decoder
        assert (not torch.allclose(enc["e_a"], e_a_other)) == cross_modal


def test_av_mae_joint_reconstruction_counts_masked_patches_only():
    audio, video = inputs(14)
    model = build_av_mae("tiny")
    noise_a, noise_v = torch.rand(B, 512), torch.rand(B, 784)
    base = model(audio, video, noise_a, noise_v)
    keep_v = torch.zeros(B, 784).scatter_(1, noise_v.argsort(1)[:, :78], 1.0)
    h = model.decoder_pred_v.register_forward_hook(
        lambda _m, _i, out: out + 100 * keep_v[..., None])
    shifted = model(audio, video, noise_a, noise_v)
    h.remove()
    assert shifted["loss_v"].item() == pytest.approx(base["loss_v"].item())
    assert torch.equal(base["mask_v"], 1 - keep_v)
    # Eq. 1: (1 / (alpha n)) sum over the masked tokens of the per-token squared error
    target = model.patch_embed_v.patchify(video)
    per_token = ((base["pred_v"] - target) ** 2).mean(-1)
    assert base["loss_v"].item() == pytest.approx(
        (per_token * (1 - keep_v)).sum().item() / (B * 706), rel=1e-5)


def test_av_mae_shared_encoder_is_one_set_of_weights():
    shared = build_av_mae("tiny", encoder="shared")
    separate = build_av_mae("tiny", encoder="separate", decoder="shared")
    enc_params = lambda m: sum(p.numel() for n, p in m.named_parameters()  # noqa: E731
                               if n.startswith("encoder"))
    assert 2 * enc_params(shared) == enc_params(separate)
    tagged = build_av_mae("tiny", encoder="shared", modality_tokens=True)  # Scenic option
    names = {n for n, _ in tagged.named_parameters()}
    assert {"modality_a", "modality_v", "decoder_modality_a", "decoder_modality_v"} <= names
    audio, video = inputs(15)
    assert torch.isfinite(tagged(audio, video)["loss"])


def test_av_mae_inpainting_uses_only_the_other_modality():
    audio, video = inputs(9)
    model = build_av_mae("tiny", encoder="early", objective="inpaint_both").eval()
    enc = model.encode(audio, video, torch.rand(B, 512), torch.rand(B, 784))
    z_a, z_v, m_a, m_v = model.decoder_inputs(enc)
    # Sec. 3.4: z_v = [e_a || m_v repeated n_v - (1 - alpha_a) n_a times]; loss on m_v only
    assert m_v.sum(1).tolist() == [784 - 256] * B and m_a.sum(1).tolist() == [512 - 78] * B
    assert torch.allclose(z_v[:, :256],
                          model.decoder_embed_a(enc["e_a"]) + model.decoder_pos_embed_v[:, :256])
    swapped = dict(enc, e_v=torch.randn_like(enc["e_v"]))   # the video encoding changes...
    pa, pv = model.decode(*model.decoder_inputs(enc)[:2])
    pa2, pv2 = model.decode(*model.decoder_inputs(swapped)[:2])
    assert torch.allclose(pv, pv2)                          # ...video prediction does not
    assert not torch.allclose(pa, pa2)
    out = model(audio, video)
    assert out["mask_v"][:, :256].sum() == 0                # no loss on the audio slots
    with pytest.raises(ValueError):
        build_av_mae("tiny", encoder="separate", objective="inpaint_video")


@pytest.mark.parametrize("encoder", ["mid", "early"])
def test_av_mae_finetuning_reuses_the_pretrained_encoder(encoder):
    audio, video = inputs(12)
    _, other = inputs(13)
    pre = build_av_mae("tiny", encoder=encoder)
    for mode in ("av", "audio", "video"):
        clf = build_av_mae_ft("tiny", num_classes=5, mode=mode, encoder=encoder).eval()
        missing, unexpected = clf.load_state_dict(encoder_state_dict(pre), strict=False)
        assert sorted(missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
        assert unexpected == []
        y = clf(audio, video)
        assert y.shape == (B, 5)
        assert (not torch.allclose(y, clf(audio, other), atol=1e-7)) == (mode != "audio")


def test_av_mae_parameter_count_by_hand():
    model = on_meta(lambda: build_av_mae("base"))  # mid-fusion (S = 2), shared decoder
    d, e = 768, 384
    embed = (256 * d + d) + (1536 * d + d)
    encoder = 22 * block(d) + 3 * 2 * d                     # 2 x 10 separate + 2 joint
    decoder = 2 * (d * e + e) + 2 * e + 4 * block(e) + 2 * e + (e * 256 + 256) \
        + (e * 1536 + 1536)
    ours = n_params(model)
    print(f"\nAudiovisual MAE (ViT-B, mid-fusion, shared 384-d decoder): {ours / 1e6:.2f} M")
    assert ours == embed + encoder + decoder


# ------------------------------------------------------------------ uni-modal MAEs
def test_uni_mae_shapes_masking_and_counts():
    audio, video = inputs(10)
    out = build_audio_mae("tiny")(audio)
    assert out["pred"].shape == (B, 512, 256)
    assert out["mask"].sum(1).tolist() == [512 - 102] * B   # 80 %: 102 visible (MAViL B.2)
    assert out["latent"].shape == (B, 1 + 102, 64)
    out = build_video_mae("tiny")(video)
    assert out["pred"].shape == (B, 784, 1536)
    assert out["mask"].sum(1).tolist() == [784 - 156] * B   # 156 visible
    for name, build in (("audio", build_audio_mae), ("video", build_video_mae)):
        model = on_meta(lambda build=build: build("base"))
        enc = n_params(getattr(model, f"{name}_encoder"))
        dec = n_params(getattr(model, f"{name}_decoder"))
        print(f"\n{name.title()}-MAE: encoder {enc / 1e6:.2f} M, decoder {dec / 1e6:.2f} M")
        # CAV-MAE appendix B: "the encoder used for single-modal downstream task is 85M"
        assert abs(enc - 85e6) / 85e6 < 0.03
        assert abs(dec - 26e6) / 26e6 < 0.05                # 8 x 512-d blocks + heads


def test_uni_mae_loss_ignores_visible_patches_and_finetunes_with_mavil_classifier():
    audio, video = inputs(11)
    model = build_audio_mae("tiny")
    noise = torch.rand(B, 512)
    base = model(audio, noise=noise)
    visible = noise.argsort(1)[:, :102]
    keep = torch.zeros(B, 512).scatter_(1, visible, 1.0).bool()
    h = model.audio_decoder.pred.register_forward_hook(
        lambda _m, _i, out: out + 50.0 * torch.cat([torch.zeros(B, 1, 1), keep[..., None]], 1))
    assert model(audio, noise=noise)["loss"].item() == pytest.approx(base["loss"].item())
    h.remove()
    for build_mae, build_ft, x, kw in ((build_audio_mae, build_audio_classifier, audio, "audio"),
                                       (build_video_mae, build_video_classifier, video, "video")):
        mae, clf = build_mae("tiny"), build_ft("tiny", num_classes=5)
        result = clf.load_pretrained(mae.state_dict())
        assert result["missing"] == []
        enc = getattr(clf, f"{kw}_encoder")
        assert torch.equal(enc.blocks[0].attn.qkv.weight,
                           getattr(mae, f"{kw}_encoder").blocks[0].attn.qkv.weight)
        assert clf.eval()(**{kw: x}).shape == (B, 5)


def test_peers_are_registered():
    for name in ("cav_mae", "cav_mae_ft", "av_mae", "av_mae_ft", "audio_mae", "video_mae"):
        assert isinstance(build_model(name, "tiny"), torch.nn.Module)
