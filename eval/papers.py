"""Published figures to put next to ours, with where each comes from (../shared/papers).

mAP in % for AudioSet (AS-20K: fine-tuned on the balanced set; AS-2M: on the full set),
top-1 accuracy in % for VGGSound; A = audio, V = video, A+V = audio+video. All models are
ViT-B, pre-trained on AS-2M; MAViL inference is 10-clip for V and A+V (supp. B.3).
"""

from __future__ import annotations

# (model, setting, modality) -> (value, source)
MAVIL_T6 = "MAViL main paper, Table 6"
MAVIL_T7 = "MAViL main paper, Table 7"
MAVIL_T11 = "MAViL main paper, Table 11 (1-clip / 10-clip, AS-2M)"
MAVIL_S2 = "MAViL supplement, Table 2 (1-clip / 10-clip, AS-2M)"
CAVMAE_T1 = "CAV-MAE, Table 1"

PUBLISHED: list[tuple[str, str, str, float, str]] = [
    # model, setting, modality, value, source
    ("MAViL", "AS-20K", "A", 40.7, MAVIL_T6), ("MAViL", "AS-20K", "V", 24.1, MAVIL_T6),
    ("MAViL", "AS-20K", "A+V", 44.3, MAVIL_T6),
    ("MAViL", "AS-2M", "A", 48.4, MAVIL_T6), ("MAViL", "AS-2M", "V", 30.2, MAVIL_T6),
    ("MAViL", "AS-2M", "A+V", 53.1, MAVIL_T6),
    ("MAViL-Stage1", "AS-20K", "A", 39.0, MAVIL_T6), ("MAViL-Stage1", "AS-20K", "V", 22.2,
                                                      MAVIL_T6),
    ("MAViL-Stage1", "AS-20K", "A+V", 42.5, MAVIL_T6),
    ("MAViL-Stage1", "AS-2M", "A", 47.4, MAVIL_T6), ("MAViL-Stage1", "AS-2M", "V", 28.1,
                                                     MAVIL_T6),
    ("MAViL-Stage1", "AS-2M", "A+V", 51.8, MAVIL_T6),
    ("MAViL", "VGGSound", "A", 60.8, MAVIL_T7), ("MAViL", "VGGSound", "V", 50.9, MAVIL_T7),
    ("MAViL", "VGGSound", "A+V", 67.1, MAVIL_T7),
    ("MAViL-Stage1", "VGGSound", "A", 59.9, MAVIL_T7),
    ("MAViL-Stage1", "VGGSound", "V", 48.3, MAVIL_T7),
    ("MAViL-Stage1", "VGGSound", "A+V", 63.8, MAVIL_T7),
    ("CAV-MAE", "AS-20K", "A", 36.8, CAVMAE_T1), ("CAV-MAE", "AS-20K", "V", 18.7, CAVMAE_T1),
    ("CAV-MAE", "AS-20K", "A+V", 40.5, CAVMAE_T1),
    ("CAV-MAE", "AS-2M", "A", 45.8, CAVMAE_T1), ("CAV-MAE", "AS-2M", "V", 25.6, CAVMAE_T1),
    ("CAV-MAE", "AS-2M", "A+V", 50.5, CAVMAE_T1),
    ("CAV-MAE", "VGGSound", "A", 59.2, CAVMAE_T1), ("CAV-MAE", "VGGSound", "V", 46.6,
                                                   CAVMAE_T1),
    ("CAV-MAE", "VGGSound", "A+V", 65.4, CAVMAE_T1),
    ("CAV-MAE Scale+", "AS-20K", "A", 37.7, CAVMAE_T1),
    ("CAV-MAE Scale+", "AS-20K", "V", 19.8, CAVMAE_T1),
    ("CAV-MAE Scale+", "AS-20K", "A+V", 42.0, CAVMAE_T1),
    ("CAV-MAE Scale+", "AS-2M", "A", 46.6, CAVMAE_T1),
    ("CAV-MAE Scale+", "AS-2M", "V", 26.2, CAVMAE_T1),
    ("CAV-MAE Scale+", "AS-2M", "A+V", 51.2, CAVMAE_T1),
    ("Audio-MAE", "AS-20K", "A", 37.0, MAVIL_T6), ("Audio-MAE", "AS-2M", "A", 47.3, MAVIL_T6),
    ("AV-MAE (CAV-MAE's)", "AS-20K", "A+V", 37.4, CAVMAE_T1),
    ("AV-MAE (CAV-MAE's)", "AS-2M", "A+V", 49.6, CAVMAE_T1),
]

# MAViL AS-2M, 1-clip vs 10-clip (the main paper and the supplement print different runs)
CLIPS_1_VS_10: list[tuple[str, float, float, str]] = [
    ("A", 48.4, 48.4, MAVIL_T11), ("V", 29.0, 30.2, MAVIL_T11), ("A+V", 52.6, 53.1, MAVIL_T11),
    ("A", 48.7, 48.7, MAVIL_S2), ("V", 29.4, 30.3, MAVIL_S2), ("A+V", 52.6, 53.3, MAVIL_S2),
]

# CAV-MAE retrieval on its AudioSet eval subset (1,725 clips), pre-trained, not fine-tuned
RETRIEVAL: list[tuple[str, str, float, float, float, str]] = [
    ("CAV-MAE, c=0.1", "v2a", 16.1, 38.6, 49.3, "CAV-MAE, Table 3"),
    ("CAV-MAE Scale+, c=0.01", "v2a", 18.8, 39.5, 50.1, "CAV-MAE, Table 3"),
    ("CAV-MAE, c=0.1", "a2v", 13.5, 32.5, 43.2, "CAV-MAE, Table 7"),
    ("CAV-MAE (Scale), c=0.01", "a2v", 15.1, 34.0, 43.0, "CAV-MAE, Table 7"),
]


def setting_of(vocab_name: str, train_clips: int) -> str | None:
    """The papers' setting for a store: AS-20K / AS-2M by the size of its training split,
    VGGSound by name; None for other data (no published figure to compare with)."""
    name = (vocab_name or "").lower()
    if name == "audioset":
        return "AS-20K" if train_clips < 100_000 else "AS-2M"
    if name == "vggsound":
        return "VGGSound"
    return None


def modality_label(modalities: list[str]) -> str:
    return {("audio",): "A", ("video",): "V"}.get(tuple(modalities), "A+V")


def published_for(setting: str | None, modality: str) -> list[tuple[str, float, str]]:
    """(model, value, source) rows for the setting and modality (all settings if None)."""
    return [(f"{m} ({s})" if setting is None else m, v, src)
            for m, s, mod, v, src in PUBLISHED
            if mod == modality and (setting is None or s == setting)]
