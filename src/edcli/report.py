"""Result files: metrics JSON/CSV, predictions CSV/JSONL (per image, for infer and eval), heat-map panels, masks
and raw maps."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edcli.files import atomic_open, write_text
from edcli.metrics import METRIC_NAMES

PREDICTION_FIELDS = ("path", "score", "normalized_score", "label", "threshold", "threshold_origin", "error", "heatmap")
# `ed eval`'s per-image file: label is the ground truth, predicted the label at the calibrated threshold
EVAL_PREDICTION_FIELDS = ("path", "defect_type", "label", "score", "normalized_score", "predicted", "threshold", "heatmap")
THRESHOLD_FIELDS = ("threshold", "tpr", "fpr", "fp", "fn")  # at the calibrated threshold, in metrics.json/csv
HARDEST = 3  # panels `ed eval` always saves per class: the lowest-scored anomalous and highest-scored normal images

def _csv_text(fields: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return buf.getvalue()


def write_metrics(run_dir: Path, rows: list[dict[str, Any]], mean: dict[str, Any], protocol: dict[str, Any]) -> tuple[Path, Path]:
    """metrics.json (rows, mean, protocol) and metrics.csv (one row per category, then the mean; protocol as columns)."""
    run_dir = Path(run_dir)
    jpath, cpath = run_dir / "metrics.json", run_dir / "metrics.csv"
    write_text(jpath, json.dumps({"protocol": protocol, "categories": rows, "mean": mean}, indent=2) + "\n")
    proto_cols = [k for k in protocol if not isinstance(protocol[k], (dict, list))]
    fields = ["category", *METRIC_NAMES, *THRESHOLD_FIELDS, "test_images", "seconds", "epoch", "selection", "test_selected", *proto_cols]
    flat = [dict(r, **{k: protocol[k] for k in proto_cols}) for r in rows]
    flat.append(dict(mean, **{k: protocol[k] for k in proto_cols}))
    write_text(cpath, _csv_text(fields, flat))
    return jpath, cpath


def write_predictions(out: Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    out = Path(out)
    cpath, jpath = out / "predictions.csv", out / "predictions.jsonl"
    write_text(cpath, _csv_text(PREDICTION_FIELDS, rows))
    write_text(jpath, "".join(json.dumps({k: r.get(k) for k in PREDICTION_FIELDS}) + "\n" for r in rows))
    return cpath, jpath


def predictions_csv_text(rows: list[dict[str, Any]]) -> str:
    return _csv_text(PREDICTION_FIELDS, rows)


def write_eval_predictions(path: Path, rows: list[dict[str, Any]]) -> Path:
    """RUN/predictions/<category>.csv: one row per test image (EVAL_PREDICTION_FIELDS)."""
    return write_text(path, _csv_text(EVAL_PREDICTION_FIELDS, rows))


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------- panels
def color_range(calibration: Optional[dict], fallback: tuple[float, float]) -> tuple[float, float]:
    """The heat-map colour scale of a model: 0 to twice the calibrated threshold, so the threshold sits in the
    middle and a colour means the same score in every panel of the model; `fallback` without a calibration."""
    thr = (calibration or {}).get("threshold")
    if thr is None or not float(thr) > 0:
        return float(fallback[0]), float(fallback[1])
    return 0.0, 2.0 * float(thr)


def panel_title(path: str, score: Optional[float], normalized: Optional[float], label: Optional[str],
                threshold: Optional[float], truth: Optional[str] = None) -> str:
    """The line above a panel: file, score, normalised score, predicted label (and the truth), threshold."""
    parts = [Path(path).name]
    if score is not None:
        parts.append(f"score {score:.4g}")
    if normalized is not None:
        parts.append(f"normalised {normalized:.3f}")
    if label:
        parts.append(label.upper() if label == "anomalous" else label)
    if truth:
        parts.append(f"truth: {truth}")
    if threshold is not None:
        parts.append(f"threshold {threshold:.4g}")
    return "   ".join(parts)


def heatmap_panel(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, pred_mask: Optional[np.ndarray] = None,
                  alpha: float = 0.5, gt_mask: Optional[np.ndarray] = None, title: str = "",
                  threshold: Optional[float] = None) -> np.ndarray:
    """image | ground truth (when given) | heat map with a colour bar | overlay with the predicted-mask contour,
    under a title line; (H, W, 3) uint8 RGB. image (H, W, 3) uint8, amap and masks (H, W)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = 4 if gt_mask is not None else 3
    fig = Figure(figsize=(2.3 * cols + 0.4, 2.75), dpi=100)  # Figure, not pyplot: no global state, no GUI backend
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, cols)
    panes = [("image", image)] + ([("ground truth", gt_mask)] if gt_mask is not None else [])
    for ax, (name, arr) in zip(axes, panes):
        ax.imshow(arr, cmap="gray", vmin=0, vmax=1) if arr.ndim == 2 else ax.imshow(arr)
        ax.set_title(name, fontsize=8)
    ax_heat, ax_over = axes[-2], axes[-1]
    im = ax_heat.imshow(amap, cmap="turbo", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax_heat.set_title("anomaly map", fontsize=8)
    bar = fig.colorbar(im, ax=ax_heat, fraction=0.046, pad=0.03)
    bar.ax.tick_params(labelsize=6)
    if threshold is not None and vmin <= threshold <= vmax:
        bar.ax.axhline(threshold, color="black", linewidth=2)  # the threshold's place on the scale
    ax_over.imshow(image)
    ax_over.imshow(amap, cmap="turbo", vmin=vmin, vmax=vmax, alpha=alpha, interpolation="bilinear")
    if pred_mask is not None and pred_mask.any() and not pred_mask.all():  # a contour needs both sides
        ax_over.contour(pred_mask.astype(np.float32), levels=[0.5], colors="red", linewidths=1.0)
    ax_over.set_title("overlay, predicted mask", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=8, x=0.01, ha="left")
    fig.subplots_adjust(left=0.01, right=0.97, bottom=0.02, top=0.80, wspace=0.12)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_open(path, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG")


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as fh:
        np.save(fh, array)


def hardest(labels: np.ndarray, scores: np.ndarray, k: int = HARDEST) -> list[int]:
    """Indices of the k lowest-scored anomalous and the k highest-scored normal images: the misses and false
    alarms first whatever the threshold, so `ed report` has their panels without --save-maps."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores)
    anom, norm = np.flatnonzero(labels), np.flatnonzero(~labels)
    return sorted(set(anom[np.argsort(scores[anom], kind="stable")[:k]].tolist())
                  | set(norm[np.argsort(-scores[norm], kind="stable")[:k]].tolist()))


def save_eval_maps(folder: Path, ff, split, ck, masks, indices: Optional[Sequence[int]] = None, npy: bool = True,
                   threshold: Optional[float] = None, normalized: Optional[np.ndarray] = None) -> dict[int, Path]:
    """Raw maps (.npy, unless npy=False) and heat-map panels (PNG) of test images (all, or `indices`), in folders
    per defect type; returns {index: panel path}. threshold: the calibrated one when it applies to these scores."""
    from edcli.data.images import load_image

    S = int(ck.backbone["image_size"])
    vmin, vmax = color_range(ck.calibration, (float(split.maps.min()), float(split.maps.max())))
    bar_line = (ck.calibration or {}).get("threshold")
    labels = ff.test_labels
    paths, defects = ff.test_paths, ff.test_defect_types
    saved = {}
    for i in range(len(paths)) if indices is None else indices:
        stem = Path(paths[i]).stem
        sub = Path(folder) / defects[i]
        if npy:
            save_npy(sub / f"{stem}.npy", split.maps[i])
        try:
            img = (load_image(paths[i], S, ck.backbone["resize_mode"]).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        except Exception:  # the image may have moved since the features were cached: draw on grey
            img = np.full((S, S, 3), 128, np.uint8)
        pred = split.smoothed[i] > threshold if threshold is not None else None
        score = float(split.scores[i])
        label = None if threshold is None else ("anomalous" if score > threshold else "normal")
        title = panel_title(f"{defects[i]}/{Path(paths[i]).name}", score, None if normalized is None else float(normalized[i]), label, threshold,
                            truth="anomalous" if labels[i] else "normal")
        panel = heatmap_panel(img, split.maps[i], vmin, vmax, pred, gt_mask=None if masks is None else masks[i],
                              title=title, threshold=bar_line)
        save_png(sub / f"{stem}.png", panel)
        saved[int(i)] = sub / f"{stem}.png"
    return saved


def save_infer_maps(outdir: Path, path: str, index: int, amap, smoothed, thr: float, mode: str, h: int, w: int,
                    score: Optional[float] = None, normalized: Optional[float] = None, label: Optional[str] = None,
                    color_max: Optional[float] = None) -> Path:
    """The raw map (.npy), the predicted mask and the heat-map panel of one scored file, at its original size;
    returns the panel's path. color_max: the top of the colour scale (default twice thr; pass twice the model's
    calibrated threshold so a --threshold override does not change the colours)."""
    from PIL import Image

    from edcli.method.scoring import to_original

    stem = f"{index:06d}_{Path(path).stem}"
    big = to_original(amap, mode, h, w)
    big_s = to_original(smoothed, mode, h, w)
    with Image.open(path) as im:
        img = np.asarray(im.convert("RGB"))
    pred = big_s > thr
    save_npy(Path(outdir) / "maps" / f"{stem}.npy", amap)
    save_png(Path(outdir) / "masks" / f"{stem}.png", (pred * 255).astype(np.uint8))
    # the colour scale runs from 0 to twice the threshold, so the same colour means the same score in every image
    top = 2.0 * thr if color_max is None else float(color_max)
    panel_path = Path(outdir) / "heatmaps" / f"{stem}.png"
    save_png(panel_path, heatmap_panel(img, big, 0.0, top, pred, title=panel_title(path, score, normalized, label, thr),
                                       threshold=thr))
    return panel_path
