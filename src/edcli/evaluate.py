"""A split scored from cached features (through edcli.scorer) and the metrics of a category."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edcli.config import EvalConfig
from edcli.scorer import ScoredSplit, Scorer


def score_cached(
    model,
    read_level,
    n: int,
    image_size: int,
    device,
    precision: str,
    cfg: EvalConfig,
    batch_size: int = 8,
    indices: np.ndarray | None = None,
    keep_maps: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> ScoredSplit:
    """Score items of a cached split with `model` as `cfg` scores (σ, reducer, score): edcli.scorer's one path."""
    scorer = Scorer.for_model(model, image_size, cfg.sigma, cfg.reducer, device, precision, cfg.score)
    return scorer.split(read_level, n, batch_size, indices, keep_maps, on_batch)


def category_metrics(
    labels: np.ndarray, split: ScoredSplit, masks: np.ndarray | None, cfg: EvalConfig
) -> dict[str, Any]:
    """All metrics of one category; pixel metrics on the raw map unless --pixel-map smoothed."""
    from edcli.metrics import compute_metrics

    pix = split.maps if cfg.pixel_map == "raw" else split.smoothed
    return compute_metrics(labels, split.scores, masks, pix if masks is not None else None)


def read_from(ff, split: str):
    """A read_level callable over a FeatureFile split (the store reads indices in any order, as float32)."""
    return ff.train if split == "train" else ff.test


def masks_if_known(ff) -> np.ndarray | None:
    """Test masks, or None when some anomalous image has no known mask (pixel metrics then not defined)."""
    if ff.n_test == 0 or not bool(np.all(ff.test_mask_known)):
        return None
    return ff.test_masks()


def calibrated_threshold(calibration: dict | None, cfg: EvalConfig) -> tuple[float, float] | None:
    """(threshold, scale) of a checkpoint's calibration when it scored images as `cfg` does, else None: a threshold
    on the maximum of the map says nothing about, say, their mean (or about another --score)."""
    c = calibration or {}
    same = (
        c.get("reducer", "max") == cfg.reducer
        and float(c.get("sigma", 4.0)) == float(cfg.sigma)
        and c.get("score", "ed") == cfg.score
    )
    if "threshold" not in c or not same:
        return None
    return float(c["threshold"]), float(c.get("scale", 1.0))
