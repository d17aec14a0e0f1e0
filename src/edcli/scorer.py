"""The one scoring path above the maths: a trained model (or a checkpoint with its backbone) -> a Scorer that turns
images or cached features into raw maps, smoothed maps and image scores on the device and in the precision asked.
`Detector` (and so `ed infer`), `ed eval`, calibration, validation and `ed export` all score through it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from edcli.method.scorer import ImageScorer, MapScorer


class ScoredBatch(NamedTuple):
    maps: np.ndarray  # (B, S, S) float32 raw (unsmoothed) anomaly maps
    smoothed: np.ndarray  # (B, S, S) float32
    scores: np.ndarray  # (B,) float64 image scores


@dataclass
class ScoredSplit:
    maps: np.ndarray  # (N, S, S) float32 raw anomaly maps (empty when not kept)
    smoothed: np.ndarray  # (N, S, S) float32
    scores: np.ndarray  # (N,) image scores (the reducer over the smoothed maps)
    seconds: float


class Scorer:
    """A MapScorer (and, for images, the backbone in front of it) on a device, in a precision."""

    def __init__(self, maps: MapScorer, device, precision: str = "fp32", extractor=None):
        self.device, self.precision = device, precision
        self.maps = maps.to(device)
        self.images_module = ImageScorer(extractor.to(device), self.maps) if extractor is not None else None

    @classmethod
    def for_model(
        cls, model, size: int, sigma: float, reducer: str, device, precision: str = "fp32", score: str = "ed"
    ) -> Scorer:
        """Scores cached features with a built EDModel (ed eval, calibration, validation)."""
        return cls(MapScorer(model.levels, size, sigma, reducer, score=score), device, precision)

    def _run(self, fn, x) -> ScoredBatch:
        from edcli.engine import autocast

        with torch.inference_mode(), autocast(self.device, self.precision):
            out = fn(x)
        return ScoredBatch(out.raw.cpu().numpy(), out.smoothed.cpu().numpy(), out.scores.double().cpu().numpy())

    def features(self, feats: list) -> ScoredBatch:
        """Per level pooled features (B, C, H, W) -> ScoredBatch (numpy on the host)."""
        return self._run(self.maps, [torch.as_tensor(f).to(self.device) for f in feats])

    def images(self, images) -> ScoredBatch:
        """A prepared batch (B, 3, S, S) in [0, 1] -> ScoredBatch; the backbone runs in float32 (outside autocast)."""
        if self.images_module is None:
            raise RuntimeError("this Scorer was built for cached features; use load_scorer for images")
        with torch.inference_mode():
            feats = self.images_module.features(torch.as_tensor(images).to(self.device))
        return self._run(self.maps, feats)

    def split(
        self,
        read_level: Callable[[int, np.ndarray], np.ndarray],
        n: int,
        batch_size: int = 8,
        indices: np.ndarray | None = None,
        keep_maps: bool = True,
        on_batch: Callable[[int], None] | None = None,
    ) -> ScoredSplit:
        """Score items of a cached split. read_level(k, idx) -> (b, C, H, W) float32 numpy; on_batch(images) after
        each batch (progress)."""
        from edcli.engine import sync

        idx_all = np.arange(n) if indices is None else np.asarray(indices)
        maps, smoothed, scores = [], [], []
        start = time.perf_counter()
        for s in range(0, len(idx_all), batch_size):
            idx = idx_all[s : s + batch_size]
            out = self.features([torch.from_numpy(read_level(k, idx)) for k in range(len(self.maps.levels))])
            scores.append(out.scores)
            if keep_maps:
                maps.append(out.maps)
                smoothed.append(out.smoothed)
            if on_batch is not None:
                on_batch(len(idx))
        sync(self.device)
        seconds = time.perf_counter() - start
        S = self.maps.size
        empty = np.zeros((0, S, S), np.float32)
        return ScoredSplit(
            np.concatenate(maps) if maps else empty,
            np.concatenate(smoothed) if smoothed else empty,
            np.concatenate(scores) if scores else np.zeros(0),
            seconds,
        )


def map_scorer(ck, portable: bool = False) -> MapScorer:
    """The MapScorer of a checkpoint: its level models, image size, and the σ, reducer and score it was calibrated
    with (checkpoints from before --score used the paper's)."""
    from edcli.checkpoint import build_model

    calib = ck.calibration or {}
    size = ck.identity.image_size
    return MapScorer(
        build_model(ck).levels,
        size,
        float(calib.get("sigma", 4.0)),
        calib.get("reducer", "max"),
        portable,
        score=calib.get("score", "ed"),
    )


def load_scorer(ck, device, precision: str = "fp32") -> Scorer:
    """A checkpoint's Scorer with its backbone (checked against the recorded weights hash) on `device`."""
    from edcli.features import context_for_checkpoint

    ctx = context_for_checkpoint(ck, None, torch.device("cpu"), {})
    return Scorer(map_scorer(ck), device, precision, extractor=ctx.extractor)


def export_module(ck, quantize: bool = True) -> ImageScorer:
    """The checkpoint's whole scoring pass as one traceable CPU module (`ed export`): the portable flavour."""
    from edcli.features import context_for_checkpoint

    ctx = context_for_checkpoint(ck, None, torch.device("cpu"), {})
    return ImageScorer(ctx.extractor, map_scorer(ck, portable=True), quantize)


INPUT_NAME = "images"
OUTPUT_NAMES = ("raw_map", "smoothed_map", "score")


def scoring_metadata(ck) -> dict[str, Any]:
    """What a deployed model needs beside its weights: calibration, geometry, normalisation, provenance (the
    Detector's `meta`, and the ONNX file's metadata)."""
    from edcli.version import __version__

    calib = dict(ck.calibration or {})
    calib.pop("scores", None)  # the per-image calibration scores: long and not needed to score
    return {
        "format": "edcli-onnx",
        "format_version": 1,
        "edcli_version": __version__,
        "category": ck.category,
        "dataset": ck.dataset,
        **ck.identity.to_dict(),  # backbone, weights, levels, image_size, resize_mode, mean, std
        "input": "RGB in [0, 1], resized by resize_mode, unnormalised (the graph normalises)",
        "calibration": calib,
        "normalized_score": "1 / (1 + exp(-clip((score - threshold) / max(scale, 1e-12), -60, 60)))",
        "outputs": list(OUTPUT_NAMES),
    }
