"""Anomaly-detection metrics: image/pixel AUROC and AP, AUPRO@0.3 (exact curve) and image F1-max.

Every metric returns a Python float, or None where it is not defined (e.g. a test split whose images are all
normal): a category without anomalies is reported as "not defined", never as a crash or a made-up number.
Labels and masks use 1 for anomalous and 0 for normal; higher scores mean more anomalous.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)

from edcli.errors import ConfigError, DataError

METRIC_NAMES = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max")

# Official MVTec AD connectivity: pixels touching only at a corner belong to the same defect region.
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ---------------------------------------------------------------------------------------------- input checks
def _labels_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """1-D {0,1} labels as bool and finite 1-D scores of the same length."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise DataError(
            f"image labels and scores must be 1-D arrays of the same length, got shapes {y.shape} and {s.shape}"
        )
    return _binary(y, "image labels"), _finite(s, "image scores")


def _masks_maps(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool masks and finite float maps of the same shape; a single (H, W) pair counts as N = 1."""
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.shape != a.shape or m.ndim not in (2, 3):
        raise DataError(
            f"masks and anomaly maps must both be (N, H, W) (or one (H, W) image) of the same shape, "
            f"got {m.shape} and {a.shape}; resize masks to the map size before evaluating"
        )
    if m.ndim == 2:
        m, a = m[None], a[None]
    return _binary(m, "masks"), _finite(a, "anomaly maps")


def _binary(values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype == bool:
        return values
    ok = (values == 0) | (values == 1)
    if not ok.all():
        bad = np.unique(values[~ok])[:5]
        raise DataError(f"{what} must hold only 0 (normal) and 1 (anomalous), found {bad.tolist()}; binarise first")
    return values != 0


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if values.dtype.kind not in "biuf":
        raise DataError(f"{what} must be numeric, got dtype {values.dtype}")
    # float16 is slow to sort and integers cannot be negated safely (unsigned); float32 keeps float16 ties exact.
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    elif values.dtype.itemsize < 4:
        values = values.astype(np.float32)
    if not np.isfinite(values).all():
        raise DataError(f"{what} contain NaN or infinite values; check the model output before evaluating")
    return values


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.any()) and not bool(y.all())


# ---------------------------------------------------------------------------------------------- image level
def image_auroc(labels: Any, scores: Any) -> float | None:
    """ROC AUC of image scores; None when only one class is present."""
    y, s = _labels_scores(labels, scores)
    return float(roc_auc_score(y, s)) if _both_classes(y) else None


def image_ap(labels: Any, scores: Any) -> float | None:
    """Average precision (sklearn, step-wise, no interpolation) of image scores; None when only one class."""
    y, s = _labels_scores(labels, scores)
    return float(average_precision_score(y, s)) if _both_classes(y) else None


def _f1_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 at each threshold of sklearn's precision_recall_curve (score >= threshold is anomalous)."""
    precision, recall, thresholds = precision_recall_curve(y, s)
    # The curve's last point (precision 1, recall 0) has no threshold; drop it.
    p, r = precision[:-1], recall[:-1]
    denom = p + r
    f1 = np.divide(2 * p * r, denom, out=np.zeros_like(denom), where=denom > 0)
    return f1, thresholds


def f1_max(labels: Any, scores: Any) -> float | None:
    """Best image-level F1 over all thresholds (optimistic: the threshold is chosen on the test set)."""
    y, s = _labels_scores(labels, scores)
    if not _both_classes(y):
        return None
    f1, _ = _f1_curve(y, s)
    return float(f1.max())


# ---------------------------------------------------------------------------------------------- pixel level
def pixel_auroc(masks: Any, maps: Any) -> float | None:
    """ROC AUC over every pixel of every test image (normal images included); None without both classes."""
    gt, a = _masks_maps(masks, maps)
    return float(roc_auc_score(gt.ravel(), a.ravel())) if _both_classes(gt) else None


def pixel_ap(masks: Any, maps: Any) -> float | None:
    """Average precision over every pixel of every test image; None without both classes."""
    gt, a = _masks_maps(masks, maps)
    return float(average_precision_score(gt.ravel(), a.ravel())) if _both_classes(gt) else None


def pro_curve(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """The exact per-region-overlap curve: (fpr, pro), ascending in fpr, starting at (0, 0), one point per
    distinct score (ties are one step). Regions are 8-connected per image; every region of the set counts
    equally; FPR is over all anomaly-free pixels. Raises DataError when there is no region or no normal pixel."""
    gt, a = _masks_maps(masks, maps)
    # A 3-D structure whose only non-zero plane is the middle one: 8-connectivity inside each image and no
    # connection across images, so one label() call numbers the regions of the whole set uniquely.
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = _EIGHT_CONNECTED
    regions, n_regions = ndimage.label(gt, structure=structure)
    sizes = np.bincount(regions.ravel(), minlength=n_regions + 1)  # sizes[0]: anomaly-free pixel count
    n_normal = int(sizes[0])
    if n_regions == 0 or n_normal == 0:
        raise DataError(
            f"the PRO curve needs at least one anomalous region and one anomaly-free pixel, "
            f"got {n_regions} regions and {n_normal} anomaly-free pixels"
        )

    # Each anomalous pixel adds 1 / (region size * n_regions) to PRO when the threshold passes it, so the
    # cumulative sum over pixels in descending score order is PRO at every threshold in one pass.
    weight = np.empty(n_regions + 1, dtype=np.float64)
    weight[0] = 0.0
    weight[1:] = 1.0 / (sizes[1:] * float(n_regions))

    flat_scores = a.ravel()
    order = np.argsort(flat_scores)[::-1]  # descending; the order among ties does not matter (see below)
    sorted_scores = flat_scores[order]
    sorted_regions = regions.ravel()[order]
    pro = np.cumsum(weight[sorted_regions])
    fp = np.cumsum(sorted_regions == 0)  # integer counts: FPR is exact

    # Threshold t = a distinct score includes every pixel >= t, i.e. up to the last pixel of its tie group.
    ends = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    ends = np.append(ends, sorted_scores.size - 1)
    fpr = np.concatenate(([0.0], fp[ends] / n_normal))
    pro = np.concatenate(([0.0], np.minimum(pro[ends], 1.0)))  # clip float round-off above 1
    return fpr, pro


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under y(x) for x in [0, limit], interpolating y linearly at x = limit.
    x ascends from 0 and ends at 1 >= limit."""
    k = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit; x[0] == 0 so k >= 1
    xs, ys = x[:k], y[:k]
    if xs[-1] < limit:  # then k < len(x) because x[-1] == 1 >= limit
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        xs = np.append(xs, limit)
        ys = np.append(ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def aupro(masks: Any, maps: Any, fpr_limit: float = 0.3) -> float | None:
    """Normalised area under the PRO curve up to FPR = fpr_limit (official MVTec AD definition, exact curve),
    in [0, 1]. None when the set has no anomalous region or no anomaly-free pixel."""
    if not 0.0 < float(fpr_limit) <= 1.0:
        raise ConfigError(f"the AUPRO FPR limit must be in (0, 1], got {fpr_limit}")
    gt, a = _masks_maps(masks, maps)
    if not _both_classes(gt):
        return None
    fpr, pro = pro_curve(gt, a)
    return _area_to(fpr, pro, float(fpr_limit)) / float(fpr_limit)


# ---------------------------------------------------------------------------------------------- aggregation
def compute_metrics(labels: Any, image_scores: Any, masks: Any = None, maps: Any = None) -> dict[str, float | None]:
    """Every metric of METRIC_NAMES for one category. Pixel metrics are None without masks (or without any
    anomalous pixel); every metric is None when the labels hold only one class."""
    y, s = _labels_scores(labels, image_scores)
    out: dict[str, float | None] = {name: None for name in METRIC_NAMES}
    if masks is not None and maps is None:
        raise DataError("masks were given without anomaly maps; pass the maps to compute pixel metrics")
    if masks is not None:
        gt, a = _masks_maps(masks, maps)
        if gt.shape[0] != y.shape[0]:
            raise DataError(f"{y.shape[0]} image labels but {gt.shape[0]} masks; they must describe the same images")
    if not _both_classes(y):
        return out
    out["image_auroc"] = image_auroc(y, s)
    out["image_ap"] = image_ap(y, s)
    out["f1_max"] = f1_max(y, s)
    if masks is not None:
        out["pixel_auroc"] = pixel_auroc(gt, a)
        out["pixel_ap"] = pixel_ap(gt, a)
        out["aupro"] = aupro(gt, a)
    return out


def macro_mean(rows: list[dict], names: Sequence[str] = METRIC_NAMES) -> dict[str, float | None]:
    """Per metric, the mean over the rows (categories) where it is defined; None where no row defines it.
    A missing key counts as undefined."""
    out: dict[str, float | None] = {}
    for name in names:
        values = [float(row[name]) for row in rows if row.get(name) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


# ---------------------------------------------------------------------------------------------- at a threshold
def threshold_counts(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Confusion counts at a fixed threshold (score > threshold is anomalous, as `ed infer` labels) and the rates
    they give: TPR (share of anomalous images caught) and FPR (share of normal images flagged); a rate is None
    when its class is absent."""
    y, s = _labels_scores(labels, scores)
    pred = s > float(threshold)
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "tpr": tp / (tp + fn) if tp + fn else None,
        "fpr": fp / (fp + tn) if fp + tn else None,
    }
