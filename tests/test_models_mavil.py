"""MAViL model: token counts, parameter counts and FLOPs against the papers, architecture
properties (contrastive path, MBT bottleneck, masked-only loss), stage 2 and fine-tuning."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import train.models.mavil as mavil_mod
from train.models import build_model
from train.models.fusion import FusionEncoder
from train.models.mavil import MAViL, build_audio_encoder

torch.set_num_threads(1)

# Small inputs keep CPU tests fast; geometry tests use the paper's full input sizes.
SMALL = dict(audio_size=(128, 32), num_frames=4, img_size=32)  # 16 audio / 8 video tokens


def small_batch(b: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, 128, 32, generator=g), torch.randn(b, 4, 3, 32, 32, generator=g)


def block_params(d: int) -> int:
    # qkv 3d^2+3d, proj d^2+d, fc1 4d^2+4d, fc2 4d^2+d, two LayerNorms 4d
    return 12 * d * d + 13 * d


def test_visible_token_counts_match_supplement_b2():
    model = MAViL("tiny")  # full 1024x128 audio and 8x3x224x224 video geometry
    audio, video = torch.randn(2, 1, 1024, 128), torch.randn(2, 8, 3, 224, 224)
    a = model._masked_encode(model.audio_encoder, audio, 0.8)
    v = model._masked_encode(model.video_encoder, video, 0.8)
    assert a["um"].shape[1] == 1 + 102 and v["um"].shape[1] == 1 + 156  # [CLS] + visible
    assert a["mask"].shape == (2, 512) and v["mask"].shape == (2, 784)
    out = model(audio, video)
    assert out["pred_audio"].shape == (2, 512, 16 * 16)
    assert out["pred_video"].shape == (2, 784, 2 * 16 * 16 * 3)


def test_vit_b_parameter_counts_match_paper():
    with torch.device("meta"):
        model = MAViL("base")

    def count(m):
        return sum(p.numel() for p in m.parameters())

    enc_a, enc_v = count(model.audio_encoder), count(model.video_encoder)
    dec_a, dec_v = count(model.audio_decoder), count(model.video_decoder)
    fusion = count(model.fusion)
    print(
        f"\nMAViL ViT-B params: audio encoder {enc_a / 1e6:.2f} M, video encoder "
        f"{enc_v / 1e6:.2f} M (paper B.2: 86 M), audio decoder {dec_a / 1e6:.2f} M, video "
        f"decoder {dec_v / 1e6:.2f} M (paper: 27 M), fusion (L=2) {fusion / 1e6:.2f} M"
    )
    d, dd = 768, 512
    # exact, from the architecture: 12 blocks + patch conv + [CLS] + final LayerNorm
    assert enc_a == 12 * block_params(d) + (256 * d + d) + d + 2 * d
    assert enc_v == 12 * block_params(d) + (1536 * d + d) + d + 2 * d
    assert dec_a == (d * dd + dd) + dd + 8 * block_params(dd) + 2 * dd + (dd * 256 + 256)
    assert fusion == 2 * block_params(d) + 4 * d
    # against the paper's rounded figures (fixed sin-cos tables are buffers, not counted)
    assert abs(enc_a / 86e6 - 1) < 0.02 and abs(enc_v / 86e6 - 1) < 0.02
    assert abs(dec_a / 27e6 - 1) < 0.06 and abs(dec_v / 27e6 - 1) < 0.06


def test_audio_encoder_flops_match_paper():
    """FlopCounterMode counts 2 FLOPs per multiply-add; MAViL's 48.6 G counts multiply-adds
    (fvcore convention), so we compare FlopCounterMode / 2. On the meta device SDPA runs its
    math decomposition, so the two attention matmuls are counted (as aten.bmm)."""
    with torch.device("meta"):
        encoder = build_audio_encoder("base")
        spec = torch.empty(1, 1, 1024, 128)
        with FlopCounterMode(display=False) as counter:
            tokens = encoder(spec)  # 512 patches + [CLS]
    assert tokens.shape == (1, 513, 768)
    macs = counter.get_total_flops() / 2
    print(f"\naudio encoder forward: {macs / 1e9:.2f} G multiply-adds (paper B.2: 48.6 G)")
    assert abs(macs / 48.6e9 - 1) < 0.02


def test_contrastive_terms_never_reach_the_fusion_encoder():
    """Sec. 3.2: the InfoNCE terms use uni-modal outputs only. With the same masks, the fusion
    encoder's gradient is identical with and without the contrastive terms, while the
    encoders' gradients change."""
    audio, video = small_batch()

    def grads(alpha, beta):
        torch.manual_seed(0)
        model = MAViL("tiny", **SMALL, alpha=alpha, beta=beta)
        torch.manual_seed(1)  # same masking noise in both runs
        model(audio, video)["loss"].backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    with_c, without_c = grads(0.1, 0.01), grads(0.0, 0.0)
    fusion = [n for n in with_c if n.startswith("fusion.")]
    assert fusion
    for n in fusion:
        torch.testing.assert_close(with_c[n], without_c[n], rtol=0, atol=1e-7)
    enc = "audio_encoder.blocks.0.attn.qkv.weight"
    assert (with_c[enc] - without_c[enc]).abs().max() > 1e-6


def _hand_nce(x: torch.Tensor, y: torch.Tensor, tau: float) -> float:
    """Eq. 2 term by term: -1/B sum_i log exp(S_ii / tau) / sum_j exp(S_ij / tau)."""
    total = 0.0
    for i in range(len(x)):
        sims = [float(x[i] @ y[j] / (x[i].norm() * y[j].norm())) / tau for j in range(len(y))]
        total -= sims[i] - torch.tensor(sims).logsumexp(0).item()
    return total / len(x)


def test_contrastive_terms_use_the_papers_weights_and_temperatures():
    """Eq. 3-4 with alpha 0.1 / tau 0.1 (inter) and beta 0.01 / tau 1.0 (intra) on the mean
    of the uni-modal encoder outputs over the visible tokens (views 1 and 2)."""
    model = MAViL("tiny", **SMALL)
    assert (model.alpha, model.tau_inter, model.beta, model.tau_intra) == (0.1, 0.1, 0.01, 1.0)
    seen = {"audio": [], "video": []}
    for name in seen:
        getattr(model, f"{name}_encoder").norm.register_forward_hook(
            lambda _m, _i, out, name=name: seen[name].append(out.detach()))
    out = model(*small_batch())
    (a1, a2), (v1, v2) = ([x[:, 1:].mean(1) for x in seen[m]] for m in ("audio", "video"))
    inter = _hand_nce(a1, v1, 0.1)
    intra = 0.5 * (_hand_nce(a1, a2, 1.0) + _hand_nce(v1, v2, 1.0))
    assert out["loss_inter"].item() == pytest.approx(inter, rel=1e-5)
    assert out["loss_intra"].item() == pytest.approx(intra, rel=1e-5)
    total = out["loss_recon"] + 0.1 * out["loss_inter"] + 0.01 * out["loss_intra"]
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_intra_views_are_disjoint_in_the_model(monkeypatch):
    seen = []
    real_views, real_masking = mavil_mod.disjoint_view_ids, mavil_mod.random_masking

    def spy_views(noise, len_keep, num_views=2):
        views = real_views(noise, len_keep, num_views)
        seen.append(("views", views))
        return views

    def spy_masking(x, ratio, noise=None):
        out = real_masking(x, ratio, noise)
        seen.append(("keep", out[3]))
        return out

    monkeypatch.setattr(mavil_mod, "disjoint_view_ids", spy_views)
    monkeypatch.setattr(mavil_mod, "random_masking", spy_masking)
    MAViL("tiny", **SMALL, mask_ratio=0.5)(*small_batch())
    assert [kind for kind, _ in seen] == ["keep", "views", "keep", "views"]
    for (_, keep), (_, (view1, view2)) in [(seen[0], seen[1]), (seen[2], seen[3])]:
        assert torch.equal(keep, view1)  # the first view is the reconstruction view
        for a, b in zip(view1.tolist(), view2.tolist(), strict=True):
            assert len(b) == len(a) and not set(a) & set(b)


def test_raw_loss_counts_only_masked_patches():
    audio, video = small_batch()
    torch.manual_seed(0)
    model = MAViL("tiny", **SMALL, norm_pix_loss=True)

    def run(hook=None):
        handle = model.audio_decoder.register_forward_hook(hook) if hook else None
        torch.manual_seed(3)
        out = model(audio, video)
        if handle:
            handle.remove()
        return out

    base = run()
    visible = (base["mask_audio"] == 0)[..., None]
    masked_only = run(lambda m, i, o: o + 100.0 * visible)  # change visible predictions
    torch.testing.assert_close(masked_only["loss_recon_audio"], base["loss_recon_audio"])
    changed = run(lambda m, i, o: o + 100.0 * (~visible))  # change masked predictions
    assert changed["loss_recon_audio"] > base["loss_recon_audio"] + 100


def test_reconstruct_pastes_predictions_into_masked_patches_only():
    audio, video = small_batch(2)
    model = MAViL("tiny", **SMALL, norm_pix_loss=True).eval()
    rec = model.reconstruct(audio, video)
    assert rec["audio_pasted"].shape == audio.shape and rec["video_pasted"].shape == video.shape
    kept = rec["audio_masked"] != 0  # visible spectrogram values survive unchanged
    torch.testing.assert_close(rec["audio_pasted"][kept], audio[kept])
    assert 0.1 < kept.float().mean() < 0.4  # 20 % of the patches are visible
    assert not torch.equal(rec["video_pasted"], video)


def test_mbt_exchanges_information_only_through_bottlenecks():
    torch.manual_seed(0)
    a = torch.randn(2, 5, 64)
    for kind, depth, expect_flow in [("mbt", 1, False), ("mbt", 2, True), ("vanilla", 1, True)]:
        fusion = FusionEncoder(64, depth, 4, kind)
        v = torch.randn(2, 7, 64, requires_grad=True)
        a_mm, _ = fusion(a, v)
        probe = (a_mm * torch.randn_like(a_mm)).sum()
        (grad,) = torch.autograd.grad(probe, v, allow_unused=True)
        # one MBT layer: audio sees only b^0 (learned), so no path from video to audio yet
        flows = grad is not None and bool(grad.abs().max() > 0)
        assert flows == expect_flow, (kind, depth)
    assert FusionEncoder(64, 2, 4, "mbt").bottleneck.shape == (1, 4, 64)


@pytest.mark.parametrize("weights", ["shared", "separate"])
def test_mbt_layer_update_follows_sec_3_1(weights):
    """Each modality attends over its own tokens + the bottlenecks; the two updated bottleneck
    copies are averaged: b^{l+1} = (b_a^{l+1} + b_v^{l+1}) / 2 (hand-rolled with the blocks)."""
    torch.manual_seed(0)
    fusion = FusionEncoder(32, 2, 4, "mbt", num_bottlenecks=4, mbt_weights=weights).eval()
    a, v = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    blocks_v = fusion.blocks if weights == "shared" else fusion.blocks_video
    b = fusion.bottleneck.expand(2, -1, -1)
    ha, hv = a, v
    for layer in range(2):
        out_a = fusion.blocks[layer](torch.cat([ha, b], 1))
        out_v = blocks_v[layer](torch.cat([hv, b], 1))
        ha, hv, b = out_a[:, :5], out_v[:, :7], (out_a[:, 5:] + out_v[:, 7:]) / 2
    a_mm, v_mm = fusion(a, v)
    torch.testing.assert_close(a_mm, fusion.norm_audio(ha))
    torch.testing.assert_close(v_mm, fusion.norm_video(hv))
    n_blocks = len({id(m) for m in (*fusion.blocks, *blocks_v)})
    assert n_blocks == (2 if weights == "shared" else 4)  # MAViL eq.: one g_av^l; MBT: two
    keys = FusionEncoder(32, 2, 4, "mbt").state_dict()
    assert not any(k.startswith("blocks_video") for k in keys)  # shared: no duplicate keys


def test_default_decoder_is_the_paper_decoder_for_any_encoder():
    """An encoder given as a dict still gets the 8-layer 512-d 16-head decoder (appendix B),
    not a copy of the encoder config; "tiny" keeps the tiny test decoder."""
    from train.models.blocks import DECODER_SIZES, decoder_size
    from train.models.uni_mae import build_audio_mae

    custom = dict(dim=96, depth=1, heads=4)
    with torch.device("meta"):
        for model in (MAViL(custom), build_audio_mae(custom)):
            dec = model.audio_decoder
            assert dec.embed.in_features == 96 and dec.embed.out_features == 512
            assert len(dec.blocks) == 8 and dec.blocks[0].attn.num_heads == 16
        explicit = MAViL(custom, decoder=dict(dim=48, depth=2, heads=4))
    assert explicit.video_decoder.embed.out_features == 48
    assert len(explicit.video_decoder.blocks) == 2
    assert decoder_size(None, "tiny") == DECODER_SIZES["tiny"]
    assert decoder_size(None, "large") == DECODER_SIZES["base"]
    with pytest.raises(KeyError):
        decoder_size("huge")


def test_stage2_teacher_is_frozen_hidden_and_untouched_by_training():
    audio, video = small_batch()
    model = build_model("mavil_stage2", "tiny", **SMALL)
    teacher = model.teacher
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("teacher") for k in model.state_dict())
    student_ids = {id(p) for p in model.student.parameters()}
    assert {id(p) for p in model.parameters()} == student_ids
    assert not {id(p) for p in teacher.parameters()} & student_ids
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model.train()
    assert not teacher.training and model.student.training
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = model(audio, video)
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    opt.step()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    # targets are the teacher's fusion outputs of the complete view, [CLS] removed
    targets = model.teacher_targets(audio, video)
    with torch.no_grad():
        a_mm, v_mm = teacher.fusion(teacher.audio_encoder(audio), teacher.video_encoder(video))
    torch.testing.assert_close(targets["audio"], a_mm[:, 1:])
    torch.testing.assert_close(targets["video"], v_mm[:, 1:])
    assert out["pred_audio"].shape == (4, 16, 64) and out["pred_video"].shape == (4, 8, 64)
    assert model.to(torch.float64).teacher.fusion.blocks[0].attn.qkv.weight.dtype == torch.float64


def test_stage2_teacher_runs_without_grad_in_the_autocast_dtype():
    audio, video = small_batch(2)
    model = build_model("mavil_stage2", "tiny", **SMALL)
    dtypes = []
    model.teacher.fusion.blocks[0].mlp.fc1.register_forward_hook(
        lambda _m, _i, out: dtypes.append((out.dtype, out.requires_grad)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        targets = model.teacher_targets(audio, video)
        out = model(audio, video)
    assert dtypes == [(torch.bfloat16, False)] * 2  # teacher matmuls in bf16, no graph
    assert not targets["audio"].requires_grad and not targets["video"].requires_grad
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    total = out["loss_recon"] + 0.1 * out["loss_inter"] + 0.01 * out["loss_intra"]  # Eq. 6
    assert out["loss"].item() == pytest.approx(total.item(), rel=1e-5)


def test_stage2_uni_targets_norm_and_next_iteration(tmp_path):
    audio, video = small_batch(2)
    stage1 = MAViL("tiny", **SMALL)
    path = tmp_path / "stage1.pt"
    torch.save({"model": stage1.state_dict()}, path)
    model = build_model("mavil_stage2", "tiny", teacher=str(path), target="uni", **SMALL)
    t = model.teacher_targets(audio, video)
    with torch.no_grad():
        torch.testing.assert_close(t["audio"], stage1.audio_encoder(audio)[:, 1:])
    model.target_norm = True
    t = model.teacher_targets(audio, video)["video"]
    torch.testing.assert_close(t.mean(-1), torch.zeros(2, 8), atol=1e-5, rtol=0)
    nxt = model.next_iteration()  # iteration k+1: the student becomes the teacher
    sd = model.student.state_dict()
    for k, v in nxt.teacher.state_dict().items():
        assert torch.equal(v, sd[k])
    assert not any(p.requires_grad for p in nxt.teacher.parameters())
    assert not torch.equal(
        nxt.student.fusion.blocks[0].mlp.fc1.weight, sd["fusion.blocks.0.mlp.fc1.weight"]
    )


@pytest.mark.parametrize(
    "name,n_mod", [("mavil_audio_ft", 1), ("mavil_video_ft", 1), ("mavil_av_ft", 2)]
)
def test_finetune_models(name, n_mod):
    audio, video = small_batch(2)
    model = build_model(name, "tiny", num_classes=7, **SMALL)
    assert model.head.weight.std() < 1e-4 and model.head.in_features == 64 * n_mod
    report = model.load_pretrained(MAViL("tiny", **SMALL).state_dict())
    assert report == {"missing": [], "unexpected": []}
    assert model(audio=audio, video=video).shape == (2, 7)
    seen = []
    enc = model.audio_encoder if hasattr(model, "audio_encoder") else model.video_encoder
    enc.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    model.train()(audio=audio, video=video)
    model.eval()(audio=audio, video=video)
    full = 1 + enc.num_patches
    # training drops 20 %: audio keeps int(8*.8) x int(2*.8) = 6 x 1 of its 8 x 2 patches,
    # video keeps int(8*.8) = 6 of its 2 x 2 x 2 tubelets; evaluation sees all of them
    assert seen == [1 + 6, full]


def test_finetune_param_groups_halve_the_video_lr_for_audio_video():
    model = build_model("mavil_av_ft", "tiny", num_classes=3, **SMALL)
    groups = model.param_groups(weight_decay=0.05)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert len(by_id) == sum(1 for _ in model.parameters())
    assert by_id[id(model.video_encoder.blocks[0].attn.qkv.weight)]["lr_scale"] == 0.5
    assert by_id[id(model.audio_encoder.blocks[0].attn.qkv.weight)]["lr_scale"] == 1.0
    assert by_id[id(model.head.weight)]["weight_decay"] == 0.05
    assert by_id[id(model.head.bias)]["weight_decay"] == 0.0
    assert by_id[id(model.video_encoder.cls_token)]["weight_decay"] == 0.0
    audio_only = build_model("mavil_audio_ft", "tiny", num_classes=3, **SMALL)
    assert {g["lr_scale"] for g in audio_only.param_groups()} == {1.0}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vit_b_steps_run_on_flash_attention_alone():
    """On a GPU every attention of a ViT-B stage-1 and stage-2 step runs on the flash kernel
    (the math fallback, which builds L x L scores, is disabled), under bf16 autocast."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    audio = torch.randn(4, 1, 1024, 128, device="cuda")
    video = torch.randn(4, 8, 3, 224, 224, device="cuda")
    for name in ("mavil", "mavil_stage2"):
        model = build_model(name, "base").cuda()
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", torch.bfloat16):
            out = model(audio, video)
            out["loss"].backward()
        assert torch.isfinite(out["loss"]), name
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
