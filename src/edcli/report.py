"""Result files: metrics JSON/CSV, predictions CSV/JSONL, heat-map PNGs, masks and raw maps."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

METRIC_COLUMNS = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max")
PREDICTION_FIELDS = ("path", "score", "normalized_score", "label", "threshold", "threshold_origin", "error")

# a perceptually ordered colour map (dark blue -> cyan -> yellow -> red), interpolated to 256 entries
_ANCHORS = np.array([[0, 0, 64], [0, 64, 192], [0, 192, 255], [128, 255, 128], [255, 224, 0], [255, 96, 0],
                     [192, 0, 0]], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0, len(_ANCHORS) - 1, 256), np.arange(len(_ANCHORS)), _ANCHORS[:, c])
                 for c in range(3)], axis=1).astype(np.uint8)


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    write_text_atomic(jpath, json.dumps({"protocol": protocol, "categories": rows, "mean": mean}, indent=2) + "\n")
    proto_cols = [k for k in protocol if not isinstance(protocol[k], (dict, list))]
    fields = ["category", *METRIC_COLUMNS, "test_images", "seconds", "epoch", "selection", "test_selected", *proto_cols]
    flat = [dict(r, **{k: protocol[k] for k in proto_cols}) for r in rows]
    flat.append(dict(mean, **{k: protocol[k] for k in proto_cols}))
    write_text_atomic(cpath, _csv_text(fields, flat))
    return jpath, cpath


def write_predictions(out: Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    out = Path(out)
    cpath, jpath = out / "predictions.csv", out / "predictions.jsonl"
    write_text_atomic(cpath, _csv_text(PREDICTION_FIELDS, rows))
    write_text_atomic(jpath, "".join(json.dumps({k: r.get(k) for k in PREDICTION_FIELDS}) + "\n" for r in rows))
    return cpath, jpath


def predictions_csv_text(rows: list[dict[str, Any]]) -> str:
    return _csv_text(PREDICTION_FIELDS, rows)


def colorize(amap: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) float -> (H, W, 3) uint8 through the colour map, scaled to [vmin, vmax]."""
    scale = max(vmax - vmin, 1e-12)
    idx = np.clip((amap - vmin) / scale * 255.0, 0, 255).astype(np.uint8)
    return _LUT[idx]


def contour(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (the mask minus its erosion)."""
    from scipy.ndimage import binary_erosion

    mask = mask.astype(bool)
    return mask & ~binary_erosion(mask, iterations=2, border_value=0)


def heatmap_panel(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, pred_mask: Optional[np.ndarray] = None,
                  alpha: float = 0.5) -> np.ndarray:
    """Image | heat map | overlay | predicted-mask contour, side by side. image (H, W, 3) uint8, amap (H, W)."""
    heat = colorize(amap, vmin, vmax)
    overlay = (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)
    outlined = image.copy()
    if pred_mask is not None:
        outlined[contour(pred_mask)] = (255, 0, 0)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    return np.concatenate([image, gap, heat, gap, overlay, gap, outlined], axis=1)


def save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
