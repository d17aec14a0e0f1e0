"""The HTML report of a run: one self-contained page (every image a data: URI, nothing fetched) with the
protocol, the metrics table and, per category, ROC/PR curves, score histograms, loss curves and the worst images."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WORST = 3  # panels per kind (false negatives, false positives) and category

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{font-size:22px} h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
h3{font-size:15px;margin-bottom:6px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
tr.mean td{font-weight:bold;background:#fafafa} .warn{color:#a00;font-weight:bold} .note{color:#555;font-size:13px}
img{max-width:100%;display:block;margin:6px 0}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;font-size:13px}
dt{font-weight:bold} dd{margin:0;font-family:monospace;word-break:break-all}
"""

# (column title, key in metrics.json, how to show it)
COLUMNS = [
    ("category", "category", "s"),
    ("image AUROC", "image_auroc", "f"),
    ("pixel AUROC", "pixel_auroc", "f"),
    ("AUPRO@0.3", "aupro", "f"),
    ("image AP", "image_ap", "f"),
    ("pixel AP", "pixel_ap", "f"),
    ("F1-max", "f1_max", "f"),
    ("threshold", "threshold", "g"),
    ("TPR", "tpr", "f"),
    ("FPR", "fpr", "f"),
    ("FP", "fp", "s"),
    ("FN", "fn", "s"),
    ("test images", "test_images", "s"),
    ("epoch", "epoch", "s"),
    ("selection", "selection", "s"),
]


@dataclass
class CategoryView:
    """What the report shows of one category, read from the run folder by `commands/report.py`."""

    name: str
    metrics: dict[str, Any]  # its row of metrics.json
    predictions: list[dict[str, str]]  # rows of RUN/predictions/<category>.csv
    history: list[dict[str, Any]] = field(default_factory=list)  # the checkpoint's losses per epoch
    train: dict[str, Any] = field(default_factory=dict)  # the checkpoint's training config


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, how: str) -> str:
    if value is None or value == "":
        return "n/d"
    if how == "f":
        return f"{float(value):.4f}"
    if how == "g":
        return f"{float(value):.4g}"
    return _e(value)


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)  # no pyplot: no global state, no GUI backend
    FigureCanvasAgg(fig)
    return fig


def _img(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return f'<img alt="{_e(alt)}" src="{png_uri(buf.getvalue())}">'


def _labels_scores(view: CategoryView) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([r["label"] == "anomalous" for r in view.predictions], dtype=bool)
    s = np.array([float(r["score"]) for r in view.predictions], dtype=np.float64)
    return y, s


def curves_img(view: CategoryView) -> str:
    """ROC and precision-recall curves, with the calibrated threshold's operating point."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    y, s = _labels_scores(view)
    if y.all() or not y.any():
        return '<p class="note">ROC and PR curves not defined: the test split holds only one class.</p>'
    fig = _figure(8.5, 3.6)
    ax_roc, ax_pr = fig.subplots(1, 2)
    fpr, tpr, _ = roc_curve(y, s)
    ax_roc.plot(fpr, tpr, drawstyle="steps-post", label=f"AUROC {view.metrics.get('image_auroc') or 0:.3f}")
    ax_roc.plot([0, 1], [0, 1], color="#aaa", linestyle=":", linewidth=1)
    precision, recall, _ = precision_recall_curve(y, s)
    ax_pr.plot(recall, precision, drawstyle="steps-post", label=f"AP {view.metrics.get('image_ap') or 0:.3f}")
    ax_pr.axhline(y.mean(), color="#aaa", linestyle=":", linewidth=1)
    thr = view.metrics.get("threshold")
    if thr is not None:
        pred = s > thr
        tp_rate, fp_rate = pred[y].mean(), pred[~y].mean()
        prec = pred[y].sum() / max(1, pred.sum())
        ax_roc.plot([fp_rate], [tp_rate], "o", color="red", label=f"threshold {thr:.4g}")
        ax_pr.plot([tp_rate], [prec], "o", color="red", label=f"threshold {thr:.4g}")
    for ax, (xl, yl, t) in zip(
        (ax_roc, ax_pr),
        (("false positive rate", "true positive rate", "image ROC"), ("recall", "precision", "image precision-recall")),
    ):
        ax.set(xlabel=xl, ylabel=yl, title=t, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
        ax.legend(fontsize=8, loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    return _img(fig, f"{view.name}: ROC and PR curves")


def histogram_img(view: CategoryView) -> str:
    """Image scores of the normal and the anomalous test images, with the threshold line."""
    y, s = _labels_scores(view)
    fig = _figure(8.5, 3.0)
    ax = fig.subplots()
    bins = np.histogram_bin_edges(s, bins=min(40, max(8, len(s) // 2)))
    if (~y).any():
        ax.hist(s[~y], bins=bins, alpha=0.6, color="tab:blue", label=f"normal ({int((~y).sum())})")
    if y.any():
        ax.hist(s[y], bins=bins, alpha=0.6, color="tab:red", label=f"anomalous ({int(y.sum())})")
    thr = view.metrics.get("threshold")
    if thr is not None:
        ax.axvline(thr, color="black", linestyle="--", label=f"calibrated threshold {thr:.4g}")
    ax.set(xlabel="image score", ylabel="test images", title="test scores")
    ax.legend(fontsize=8)
    return _img(fig, f"{view.name}: score histograms")


def losses_img(view: CategoryView) -> str:
    """The loss terms per epoch and, beside them, the attention entropies (and test AUROCs when recorded)."""
    hist = view.history
    if not hist:
        return '<p class="note">No training history in the checkpoint.</p>'
    epochs = [h["epoch"] for h in hist]
    keys = [k for k in hist[-1] if k != "epoch" and isinstance(hist[-1][k], (int, float))]
    groups = [
        ("loss terms", [k for k in keys if not k.endswith("_ent") and "auroc" not in k]),
        ("attention entropy", [k for k in keys if k.endswith("_ent")]),
        ("test AUROC (during training)", [k for k in keys if "auroc" in k]),
    ]
    groups = [g for g in groups if g[1]]
    fig = _figure(4.2 * len(groups), 3.0)
    axes = np.atleast_1d(fig.subplots(1, len(groups)))
    for ax, (title, names) in zip(axes, groups):
        for k in names:
            pts = [(e, h[k]) for e, h in zip(epochs, hist) if h.get(k) is not None]
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None, markersize=3, label=k
            )
        ax.set(xlabel="epoch", title=title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return _img(fig, f"{view.name}: training curves")


def worst(view: CategoryView, kind: str, k: int = WORST) -> list[dict[str, str]]:
    """The k worst false negatives (anomalous, predicted normal, lowest scores first) or false positives (normal,
    predicted anomalous, highest first) at the calibrated threshold."""
    truth, pred, sign = ("anomalous", "normal", 1.0) if kind == "fn" else ("normal", "anomalous", -1.0)
    rows = [r for r in view.predictions if r["label"] == truth and r["predicted"] == pred]
    return sorted(rows, key=lambda r: sign * float(r["score"]))[:k]


def _worst_html(view: CategoryView, run_dir: Path) -> str:
    thr = view.metrics.get("threshold")
    if thr is None:
        return '<p class="note">No calibrated threshold applies to these scores: no false negatives or positives.</p>'
    out = []
    for kind, title in (
        ("fn", "Worst false negatives (missed anomalies, lowest scores)"),
        ("fp", "Worst false positives (false alarms, highest scores)"),
    ):
        n = int(view.metrics.get(kind) or 0)
        rows = worst(view, kind)
        out.append(f"<h3>{title}: {len(rows)} of {n}</h3>")
        if not rows:
            out.append(f'<p class="note">None at the threshold {thr:.4g}.</p>')
        for r in rows:
            panel = run_dir / r["heatmap"] if r.get("heatmap") else None
            if panel is not None and panel.is_file():
                out.append(f'<img alt="{_e(r["path"])}" src="{png_uri(panel.read_bytes())}">')
            else:
                out.append(
                    f'<p class="note">{_e(r["path"])} (score {float(r["score"]):.4g}): no heat-map panel in '
                    f"the run folder; run <code>ed eval --run {_e(run_dir)}</code> to draw it.</p>"
                )
    return "\n".join(out)


def _table(rows: list[dict[str, Any]], mean: dict[str, Any]) -> str:
    head = "".join(f"<th>{_e(t)}</th>" for t, _, _ in COLUMNS)
    body = []
    for r in [*rows, mean]:
        cls = ' class="mean"' if r is mean else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(r.get(k), how)}</td>" for _, k, how in COLUMNS) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _protocol(protocol: dict[str, Any], views: list[CategoryView]) -> str:
    train = views[0].train if views else {}
    items = dict(protocol)
    if train:
        # edcli.training trains every level with torch.optim.Adam at the recorded lr
        items["optimizer"] = (
            f"Adam, lr {train.get('lr')}, batch size {train.get('batch_size')}, "
            f"{train.get('epochs')} epochs, lambda1 {train.get('lambda1')}, lambda2 {train.get('lambda2')}"
        )
        items["calibration"] = f"{train.get('calib_fraction')} of the normal train images held out"
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items.items())
    return f"<dl>{rows}</dl>"


def build_html(run_dir: Path, metrics: dict[str, Any], views: list[CategoryView]) -> str:
    """The whole page as one string."""
    protocol = metrics.get("protocol", {})
    warn = f'<p class="warn">{_e(protocol["warning"])}</p>' if protocol.get("warning") else ""
    toc = " · ".join(f'<a href="#cat-{_e(v.name)}">{_e(v.name)}</a>' for v in views)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>ed report: {_e(run_dir.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>ed report: {_e(run_dir)}</h1>",
        warn,
        "<h2>Protocol</h2>",
        _protocol(protocol, views),
        "<h2>Metrics</h2>",
        _table(metrics.get("categories", []), metrics.get("mean", {})),
        '<p class="note">Threshold-free metrics (AUROC, AP, AUPRO, F1-max) and, at each model\'s calibrated threshold '
        "(from normal images only), TPR, FPR, false positives (FP) and false negatives (FN). n/d = not defined.</p>",
        f"<p>Categories: {toc}</p>",
    ]
    for v in views:
        parts += [
            f'<h2 id="cat-{_e(v.name)}">{_e(v.name)}</h2>',
            curves_img(v),
            histogram_img(v),
            "<h3>Training</h3>",
            losses_img(v),
            _worst_html(v, run_dir),
        ]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
