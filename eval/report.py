"""report.md + report.html for one `evaluate run` directory, and for `evaluate compare`.

A run's report: the headline numbers, the papers' figures for the matching setting
(eval/papers.py, each with its table), the protocol and counts, and PNG plots - per-class AP
of the best and worst classes by display name, AP against training frequency, and
precision-recall curves of the split's most frequent classes. `evaluate compare` puts runs
on one table and one bar plot, and plots per-class AP 1-clip vs 10-clip for every pair of
runs of the same checkpoint with both protocols.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import markdown
import numpy as np

from eval import plots
from eval.checks import EvalError
from eval.infer import read_predictions
from eval.metrics import multi_hot
from eval.papers import CLIPS_1_VS_10, modality_label, published_for, setting_of
from store.atomic import atomic_write_text
from store.reader import open_store

HEADLINE = (("mAP", "mAP (official: mean over all classes)"),
            ("mAP_with_positives", "mAP over classes with positives"), ("mAUC", "mean ROC-AUC"),
            ("d_prime", "d-prime"), ("top1", "top-1 accuracy"), ("top5", "top-5 accuracy"))
CSS = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
       "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .6em}"
       "img{max-width:100%}code{background:#f3f3f3}")


def _pct(v: Any, scale: float = 100.0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v * scale:.2f}" if scale != 1.0 else f"{v:.3f}"


def write_html(md_text: str, path: Path, title: str) -> None:
    body = markdown.markdown(md_text, extensions=["tables"])
    atomic_write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>{title}"
                      f"</title><style>{CSS}</style></head><body>{body}</body></html>\n")


def train_counts(store: Any, num_classes: int, eval_split: str) -> tuple[np.ndarray, str]:
    """Clips per class in the store's training data ("train" split, else the other splits)."""
    table = store.filter(split="train")
    where = "split 'train'"
    if table.num_rows == 0 or eval_split == "train":
        other = [s for s in set(store.filter()["split"].to_pylist()) if s != eval_split]
        table = store.filter(split=other) if other else table
        where = f"splits {sorted(other)}" if other else "the evaluated split itself"
    return multi_hot(table["labels"].to_pylist(), num_classes).sum(0), where


def write_run_report(out: Path, store: str) -> Path:
    """DIR/report.md, DIR/report.html and DIR/plots/*.png for one evaluate-run DIR."""
    out = Path(out)
    m = json.loads((out / "metrics.json").read_text())
    _, labels, scores, _ = read_predictions(out)
    st = open_store(str(store))
    names = [str(n) for n in st.vocabulary["display_name"].to_pylist()]
    c = scores.shape[1]
    targets = multi_hot(labels, c)
    ap = np.asarray(m["per_class_ap"], dtype=np.float64)
    has_pos = targets.sum(0) > 0
    counts, where = train_counts(st, c, m["protocol"]["split"])
    pdir = out / "plots"
    figs = [("per-class AP, best and worst classes", plots.best_worst_ap(
        ap, names, has_pos, pdir / "ap_best_worst.png")),
        (f"per-class AP against training frequency ({where})", plots.ap_vs_frequency(
            ap, counts, has_pos, pdir / "ap_vs_frequency.png"))]
    frequent = [int(i) for i in np.argsort(-targets.sum(0), kind="stable")[:4] if has_pos[i]]
    figs.append(("precision-recall curves", plots.pr_curves(
        scores, targets, ap, names, frequent, pdir / "pr_curves.png")))
    proto = m["protocol"]
    mod = modality_label(proto["modalities"])
    n_train = int(st.filter(split="train").num_rows)
    setting = setting_of(st.spec.vocabulary.get("name", ""), n_train)
    lines = [f"# Evaluation: {m['model']} on `{store}` ({proto['split']})", "",
             f"- checkpoint: `{m['checkpoint']}`",
             f"- protocol: {proto['clips']}-clip (`{proto['view']}`, {proto['views_per_clip']} "
             f"view(s) per clip; the clip score is the mean of the views' {proto['averaged']} "
             f"outputs), modalities {mod}, missing-modality policy `{proto['missing']}`",
             f"- clips: {m['clips_scored']} scored, {m['clips_skipped']} skipped"
             + (f", {m['clips_zero_filled']} zero-filled inputs"
                if m.get("clips_zero_filled") else "")
             + f" (of {m['clips_in_split']} in the split; without audio "
               f"{m.get('clips_without_audio', 0)}, without video "
               f"{m.get('clips_without_video', 0)})",
             f"- classes: {m['classes']}, of which {m['classes_without_positives']} have no "
             "positive clip in the split (AP 0 in the official mAP; left out of the second "
             f"figure) and {m['classes_auc_undefined']} no defined AUC", "",
             "## Headline", "", "| metric | this run |", "| --- | --- |"]
    for key, label in HEADLINE:
        if key in m:
            lines.append(f"| {label} | {_pct(m[key], 1.0 if key == 'd_prime' else 100.0)} |")
    lines += ["", f"## Published figures ({setting or 'no matching setting'}, {mod})", ""]
    if setting is None:
        lines += [f"This store's vocabulary (`{st.spec.vocabulary.get('name', '?')}`) is not "
                  "one a paper reports on; the AudioSet / VGGSound figures below are for scale "
                  "only, not a comparison.", ""]
    metric = "top-1 accuracy" if setting == "VGGSound" else "mAP"
    lines += [f"| model | {metric} (%) | source |", "| --- | --- | --- |"]
    lines += [f"| {name} | {v:.1f} | {src} |" for name, v, src in published_for(setting, mod)]
    if mod != "A" and setting in (None, "AS-2M"):
        lines += ["", "MAViL 1-clip vs 10-clip (AS-2M mAP): " + "; ".join(
            f"{md} {a:.1f} -> {b:.1f} ({src.split(' (')[0]})"
            for md, a, b, src in CLIPS_1_VS_10 if md == mod)]
    lines += ["", "## Plots", ""]
    for title, path in figs:
        lines += [f"### {title}", "", f"![{title}](plots/{path.name})", ""]
    lines += ["Every number can be recomputed from `predictions.parquet` (clip_id, labels, "
              "scores, num_clips) with scikit-learn; `metrics.json` holds them all.", ""]
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    write_html(text, out / "report.html", f"evaluation {m['model']}")
    return out / "report.md"


def write_compare_report(dirs: list[Path], out: Path) -> Path:
    """REPORT_DIR/report.md + .html + plots: several runs on the same store."""
    runs = []
    for d in dirs:
        f = Path(d) / "metrics.json"
        if not f.is_file():
            raise EvalError(f"{d}: no metrics.json (is it an `evaluate run` directory?)")
        runs.append((Path(d), json.loads(f.read_text())))
    stores = {m["store"] for _, m in runs}
    if len(stores) > 1:
        raise EvalError(f"the runs are on different stores ({', '.join(sorted(stores))}); "
                        "compare runs on the same store")
    splits = {m["protocol"]["split"] for _, m in runs}
    if len(splits) > 1:
        raise EvalError(f"the runs scored different splits ({', '.join(sorted(splits))})")
    out = Path(out)
    labels = [f"{d.name} ({m['protocol']['clips']}-clip)" for d, m in runs]
    lines = [f"# Comparison on `{stores.pop()}` ({splits.pop()})", "",
             "| run | model | modalities | clips | mAP | mAP w/ pos. | mAUC | d' | top-1 | "
             "scored | skipped |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | "
             "--- | --- |"]
    for (d, m), _lab in zip(runs, labels, strict=True):
        p = m["protocol"]
        lines.append(f"| `{d}` | {m['model']} | {modality_label(p['modalities'])} | "
                     f"{p['clips']} | {_pct(m['mAP'])} | {_pct(m['mAP_with_positives'])} | "
                     f"{_pct(m['mAUC'])} | {_pct(m['d_prime'], 1.0)} | {_pct(m.get('top1'))} | "
                     f"{m['clips_scored']} | {m['clips_skipped']} |")
    figs = [("mAP per run", plots.compare_bars(labels, [m["mAP"] for _, m in runs],
                                               out / "plots" / "map_per_run.png"))]
    by_ckpt: dict[str, dict[int, dict]] = {}
    for _, m in runs:
        by_ckpt.setdefault(m["checkpoint"], {})[m["protocol"]["clips"]] = m
    for k, (ckpt, pair) in enumerate(sorted(by_ckpt.items())):
        if 1 in pair and 10 in pair:
            has = np.asarray(pair[10]["positives_per_class"]) > 0
            path = plots.clips_1_vs_10(np.asarray(pair[1]["per_class_ap"]),
                                       np.asarray(pair[10]["per_class_ap"]), has,
                                       f"{pair[10]['model']}",
                                       out / "plots" / f"clips_1_vs_10_{k}.png")
            figs.append((f"1-clip vs 10-clip, `{ckpt}`", path))
            lines += ["", f"1 -> 10 clips, `{ckpt}`: mAP {_pct(pair[1]['mAP'])} -> "
                      f"{_pct(pair[10]['mAP'])} (MAViL AS-2M, main paper Table 11: V 29.0 -> "
                      "30.2, A+V 52.6 -> 53.1, A unchanged)"]
    lines += ["", "## Plots", ""]
    for title, path in figs:
        lines += [f"### {title}", "", f"![{title}](plots/{path.name})", ""]
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", text)
    write_html(text, out / "report.html", "evaluation comparison")
    return out / "report.md"
