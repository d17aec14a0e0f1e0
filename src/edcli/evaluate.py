"""Scoring a whole split from cached features or from images, and the metrics of a category."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edcli.config import EvalConfig


@dataclass
class ScoredSplit:
    maps: np.ndarray  # (N, S, S) float32 raw (unsmoothed) anomaly maps
    smoothed: np.ndarray  # (N, S, S) float32
    scores: np.ndarray  # (N,) image scores (reducer over the smoothed maps)
    seconds: float


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
    """Score items of a cached split. read_level(k, idx) -> (b, C, H, W) float32 numpy; on_batch(images) after
    each batch (progress)."""
    from edcli.engine import predict_maps, sync
    from edcli.method.scoring import score_maps

    idx_all = np.arange(n) if indices is None else np.asarray(indices)
    maps, smoothed, scores = [], [], []
    start = time.perf_counter()
    for s in range(0, len(idx_all), batch_size):
        idx = idx_all[s : s + batch_size]
        feats = [torch.from_numpy(read_level(k, idx)) for k in range(len(model.levels))]
        m = predict_maps(model, feats, image_size, device, precision).numpy()
        sm, sc = score_maps(m, cfg.sigma, cfg.reducer)
        scores.append(sc)
        if keep_maps:
            maps.append(m)
            smoothed.append(sm)
        if on_batch is not None:
            on_batch(len(idx))
    sync(device)
    seconds = time.perf_counter() - start
    empty = np.zeros((0, image_size, image_size), np.float32)
    return ScoredSplit(
        np.concatenate(maps) if maps else empty,
        np.concatenate(smoothed) if smoothed else empty,
        np.concatenate(scores) if scores else np.zeros(0),
        seconds,
    )


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
    on the maximum of the map says nothing about, say, their mean."""
    c = calibration or {}
    if "threshold" not in c or c.get("reducer", "max") != cfg.reducer or float(c.get("sigma", 4.0)) != float(cfg.sigma):
        return None
    return float(c["threshold"]), float(c.get("scale", 1.0))
