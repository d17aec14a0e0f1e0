"""Result files: metrics JSON/CSV, predictions CSV/JSONL (per image, for infer and eval), heat-map panels, masks
and raw maps."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edcli.files import atomic_open, write_text
from edcli.metrics import METRIC_NAMES

# `ed infer`'s rows; seconds: the model's time for the image (its batch's scoring time over the batch's images)
PREDICTION_FIELDS = (
    "path",
    "score",
    "normalized_score",
    "label",
    "threshold",
    "threshold_origin",
    "error",
    "heatmap",
    "seconds",
)
# `ed eval`'s per-image file: label is the ground truth, predicted the label at the calibrated threshold
EVAL_PREDICTION_FIELDS = (
    "path",
    "defect_type",
    "label",
    "score",
    "normalized_score",
    "predicted",
    "threshold",
    "heatmap",
)
THRESHOLD_FIELDS = ("threshold", "tpr", "fpr", "fp", "fn")  # at the calibrated threshold, in metrics.json/csv
HARDEST = 3  # panels `ed eval` always saves per class: the lowest-scored anomalous and highest-scored normal images


# A spreadsheet evaluates a cell that starts with one of these (a file named "=HYPERLINK(...).png")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string that starts like a formula gets a leading ' (OWASP's
    CSV-injection advice); numbers and the JSON files keep their raw values; read_csv_rows undoes it."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _uncell(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:].startswith(_FORMULA_START) else text


def _csv_text(fields: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in fields})
    return buf.getvalue()


def write_metrics(
    run_dir: Path, rows: list[dict[str, Any]], mean: dict[str, Any], protocol: dict[str, Any]
) -> tuple[Path, Path]:
    """metrics.json (rows, mean, protocol) and metrics.csv (one row per category, then the mean; protocol as
    columns)."""
    run_dir = Path(run_dir)
    jpath, cpath = run_dir / "metrics.json", run_dir / "metrics.csv"
    write_text(jpath, json.dumps({"protocol": protocol, "categories": rows, "mean": mean}, indent=2) + "\n")
    proto_cols = [k for k in protocol if not isinstance(protocol[k], (dict, list))]
    fields = [
        "category",
        *METRIC_NAMES,
        *THRESHOLD_FIELDS,
        "test_images",
        "seconds",
        "epoch",
        "selection",
        "test_selected",
        *proto_cols,
    ]
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


def predictions_csv_header() -> str:
    """The header line of predictions.csv: `predictions_csv_line` rows follow it, one per streamed image."""
    return ",".join(PREDICTION_FIELDS) + "\n"


def predictions_csv_line(row: dict[str, Any]) -> str:
    """One row of predictions.csv (cells escaped as `_csv_text` does), for files and stdout written as rows come."""
    return _csv_text(PREDICTION_FIELDS, [row]).split("\n", 1)[1]


def write_eval_predictions(path: Path, rows: list[dict[str, Any]]) -> Path:
    """RUN/predictions/<category>.csv: one row per test image (EVAL_PREDICTION_FIELDS)."""
    return write_text(path, _csv_text(EVAL_PREDICTION_FIELDS, rows))


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: _uncell(v) if isinstance(v, str) else v for k, v in row.items()} for row in csv.DictReader(fh)]


# ---------------------------------------------------------------------------------------------- panels
def color_range(calibration: dict | None, fallback: tuple[float, float]) -> tuple[float, float]:
    """The heat-map colour scale of a model: 0 to twice the calibrated threshold, so the threshold sits in the
    middle and a colour means the same score in every panel of the model; `fallback` without a calibration."""
    thr = (calibration or {}).get("threshold")
    if thr is None or not float(thr) > 0:
        return float(fallback[0]), float(fallback[1])
    return 0.0, 2.0 * float(thr)


def panel_title(
    name: str,
    score: float | None,
    normalized: float | None,
    label: str | None,
    threshold: float | None,
    truth: str | None = None,
) -> str:
    """The line above a panel: file name, score, normalised score, predicted label (and the truth), threshold."""
    parts = [name]
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


PANEL_HEIGHT = (256, 512)  # tiles are the image's height clipped to this range (aspect kept): readable, not huge

# a perceptually ordered colour map (dark blue -> cyan -> yellow -> red), interpolated to 256 entries
_ANCHORS = np.array(
    [[0, 0, 64], [0, 64, 192], [0, 192, 255], [128, 255, 128], [255, 224, 0], [255, 96, 0], [192, 0, 0]],
    dtype=np.float64,
)
_LUT = np.stack(
    [np.interp(np.linspace(0, len(_ANCHORS) - 1, 256), np.arange(len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)],
    axis=1,
).astype(np.uint8)


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


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow's own scalable font: no system fonts needed
    except (TypeError, OSError, ImportError):  # a Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def _resized(arr: np.ndarray, w: int, h: int, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.ndim == 2 and arr.dtype != np.uint8:
        arr = np.ascontiguousarray(arr, dtype=np.float32)  # PIL mode F keeps the map's values
    out = np.asarray(Image.fromarray(arr).resize((w, h), Image.NEAREST if nearest else Image.BILINEAR))
    return out


def heatmap_panel(
    image: np.ndarray,
    amap: np.ndarray,
    vmin: float,
    vmax: float,
    pred_mask: np.ndarray | None = None,
    alpha: float = 0.5,
    gt_mask: np.ndarray | None = None,
    title: str = "",
    threshold: float | None = None,
) -> np.ndarray:
    """image | ground truth (when given) | heat map with a colour bar | overlay with the predicted-mask contour,
    under a title line; (H, W, 3) uint8 RGB. image (h, w, 3) uint8, amap and masks (h, w). Drawn with PIL, a few
    milliseconds, so `ed infer` can draw one per image."""
    from PIL import Image, ImageDraw

    H = int(np.clip(image.shape[0], *PANEL_HEIGHT))
    W = max(1, round(image.shape[1] * H / image.shape[0]))
    img = _resized(image, W, H)
    heat = colorize(_resized(amap, W, H), vmin, vmax)
    overlay = (img.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)
    if pred_mask is not None:
        overlay[contour(_resized(pred_mask, W, H, nearest=True) > 0)] = (255, 0, 0)
    tiles = [("image", img)]
    if gt_mask is not None:
        tiles.append(
            (
                "ground truth",
                np.repeat((_resized(gt_mask, W, H, nearest=True) > 0)[..., None] * 255, 3, 2).astype(np.uint8),
            )
        )
    tiles += [("anomaly map", heat), ("overlay, predicted mask", overlay)]
    pad, head, sub, bar_w, bar_text = 8, 24, 18, 12, 58
    width = pad + len(tiles) * (W + pad) + bar_w + bar_text
    canvas = Image.new("RGB", (width, head + sub + H + pad), "white")
    draw = ImageDraw.Draw(canvas)
    small, big = _font(11), _font(13)
    draw.text((pad, 5), title, fill="black", font=big)
    x, y = pad, head + sub
    for name, tile in tiles:
        draw.text((x, head + 2), name, fill="black", font=small)
        canvas.paste(Image.fromarray(tile), (x, y))
        x += W + pad
        if name == "anomaly map":  # the colour bar: vmax at the top, the threshold marked
            ramp = np.linspace(vmax, vmin, H)[:, None].repeat(bar_w, 1)
            canvas.paste(Image.fromarray(colorize(ramp, vmin, vmax)), (x - pad + 3, y))
            ticks = [(vmax, f"{vmax:.3g}"), (vmin, f"{vmin:.3g}")]
            if threshold is not None and vmin <= threshold <= vmax:
                ticks.append((threshold, f"thr {threshold:.3g}"))
            for value, text in ticks:
                ty = y + round((vmax - value) / max(vmax - vmin, 1e-12) * (H - 1))
                draw.line([(x - pad + 3, ty), (x - pad + 3 + bar_w + 3, ty)], fill="black", width=2)
                draw.text((x - pad + bar_w + 8, min(max(ty - 6, y), y + H - 12)), text, fill="black", font=small)
            x += bar_w + bar_text
    return np.asarray(canvas)


def save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_open(path, "wb") as fh:
        Image.fromarray(array).save(fh, format="PNG")


def save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()  # serialised first: numpy reports a short write in its own words, without the errno
    np.save(buf, array)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getbuffer())


def hardest(labels: np.ndarray, scores: np.ndarray, k: int = HARDEST) -> list[int]:
    """Indices of the k lowest-scored anomalous and the k highest-scored normal images: the misses and false
    alarms first whatever the threshold, so `ed report` has their panels without --save-maps."""
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores)
    anom, norm = np.flatnonzero(labels), np.flatnonzero(~labels)
    return sorted(
        set(anom[np.argsort(scores[anom], kind="stable")[:k]].tolist())
        | set(norm[np.argsort(-scores[norm], kind="stable")[:k]].tolist())
    )


def save_eval_maps(
    folder: Path,
    ff,
    split,
    ck,
    masks,
    indices: Sequence[int] | None = None,
    npy: bool = True,
    threshold: float | None = None,
    normalized: np.ndarray | None = None,
) -> dict[int, Path]:
    """Raw maps (.npy, unless npy=False) and heat-map panels (PNG) of test images (all, or `indices`), in folders
    per defect type; returns {index: panel path}. threshold: the calibrated one when it applies to these scores."""
    from edcli.data.images import load_image

    S, resize_mode = ck.identity.image_size, ck.identity.resize_mode
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
            img = (load_image(paths[i], S, resize_mode).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        except Exception:  # the image may have moved since the features were cached: draw on grey
            img = np.full((S, S, 3), 128, np.uint8)
        pred = split.smoothed[i] > threshold if threshold is not None else None
        score = float(split.scores[i])
        label = None if threshold is None else ("anomalous" if score > threshold else "normal")
        title = panel_title(
            f"{defects[i]}/{Path(paths[i]).name}",
            score,
            None if normalized is None else float(normalized[i]),
            label,
            threshold,
            truth="anomalous" if labels[i] else "normal",
        )
        panel = heatmap_panel(
            img,
            split.maps[i],
            vmin,
            vmax,
            pred,
            gt_mask=None if masks is None else masks[i],
            title=title,
            threshold=bar_line,
        )
        save_png(sub / f"{stem}.png", panel)
        saved[int(i)] = sub / f"{stem}.png"
    return saved


def save_infer_maps(
    outdir: Path,
    path: str,
    img: np.ndarray,
    index: int,
    amap,
    smoothed,
    thr: float,
    mode: str,
    h: int,
    w: int,
    score: float | None = None,
    normalized: float | None = None,
    label: str | None = None,
    color_max: float | None = None,
    raw: bool = True,
) -> Path:
    """The raw map (.npy, unless raw=False), the predicted mask and the heat-map panel of one scored file (`img`:
    its decoded RGB (h, w, 3) uint8), at its original size; returns the panel's path. color_max: the top of the
    colour scale (default twice thr; pass twice the model's calibrated threshold so a --threshold override does not
    change the colours)."""
    from edcli.method.scoring import to_original

    stem = f"{index:06d}_{Path(path).stem}"
    big = to_original(amap, mode, h, w)
    big_s = to_original(smoothed, mode, h, w)
    pred = big_s > thr
    if raw:
        save_npy(Path(outdir) / "maps" / f"{stem}.npy", amap)
    save_png(Path(outdir) / "masks" / f"{stem}.png", (pred * 255).astype(np.uint8))
    # the colour scale runs from 0 to twice the threshold, so the same colour means the same score in every image
    top = 2.0 * thr if color_max is None else float(color_max)
    panel_path = Path(outdir) / "heatmaps" / f"{stem}.png"
    save_png(
        panel_path,
        heatmap_panel(
            img, big, 0.0, top, pred, title=panel_title(Path(path).name, score, normalized, label, thr), threshold=thr
        ),
    )
    return panel_path
