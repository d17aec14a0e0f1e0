"""Result files: metrics JSON/CSV, predictions CSV/JSONL, heat-map PNGs, masks and raw maps."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edcli.files import atomic_open, write_text
from edcli.metrics import METRIC_NAMES

PREDICTION_FIELDS = ("path", "score", "normalized_score", "label", "threshold", "threshold_origin", "error")

# a perceptually ordered colour map (dark blue -> cyan -> yellow -> red), interpolated to 256 entries
_ANCHORS = np.array([[0, 0, 64], [0, 64, 192], [0, 192, 255], [128, 255, 128], [255, 224, 0], [255, 96, 0],
                     [192, 0, 0]], dtype=np.float64)
_LUT = np.stack([np.interp(np.linspace(0, len(_ANCHORS) - 1, 256), np.arange(len(_ANCHORS)), _ANCHORS[:, c])
                 for c in range(3)], axis=1).astype(np.uint8)


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
    fields = ["category", *METRIC_NAMES, "test_images", "seconds", "epoch", "selection", "test_selected", *proto_cols]
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

    with atomic_open(path, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG")


def save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()  # serialised first: numpy reports a short write in its own words, without the errno
    np.save(buf, array)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getbuffer())


def save_eval_maps(folder: Path, ff, split, ck, masks) -> None:
    """Raw maps (.npy) and heat-map overlays (PNG) per test image, in folders per defect type."""
    from edcli.data.images import load_image

    S = int(ck.backbone["image_size"])
    vmin, vmax = float(split.maps.min()), float(split.maps.max())  # one scale for the whole category
    thr = (ck.calibration or {}).get("threshold")
    for i, path in enumerate(ff.test_paths):
        stem = Path(path).stem
        sub = Path(folder) / ff.test_defect_types[i]
        save_npy(sub / f"{stem}.npy", split.maps[i])
        try:
            img = (load_image(path, S, ck.backbone["resize_mode"]).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        except Exception:  # the image may have moved since the features were cached: draw on grey
            img = np.full((S, S, 3), 128, np.uint8)
        pred = split.smoothed[i] > thr if thr is not None else None
        save_png(sub / f"{stem}.png", heatmap_panel(img, split.maps[i], vmin, vmax, pred))


def save_infer_maps(outdir: Path, path: str, index: int, amap, smoothed, thr: float, mode: str, h: int, w: int) -> None:
    """The raw map (.npy), the predicted mask and the heat-map panel of one scored file, at its original size."""
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
    save_png(Path(outdir) / "heatmaps" / f"{stem}.png", heatmap_panel(img, big, 0.0, 2.0 * thr, pred))
