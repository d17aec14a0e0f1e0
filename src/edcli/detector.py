"""The Python API: `Detector.load("brick.pt" or "brick.onnx").predict(images)` -> `Prediction`s; writes nothing.

`ed infer` is built on it: the same resize (data/images.py), the same float16 features as the store, the same
smoothing and reducer, so the API, `ed infer` and `ed eval` give the same scores. A `.pt` checkpoint runs through
PyTorch; an `.onnx` file written by `ed export` through ONNX Runtime, its calibration read from the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from edcli.errors import ConfigError, DataError
from edcli.identity import FeatureIdentity


@dataclass
class Prediction:
    """One scored image. Maps are float32; `anomaly_map` and `mask` are at the input's size (h, w)."""

    score: float  # the reducer over the smoothed map (raw units, compare with threshold)
    normalized_score: float  # logistic of (score - threshold) / scale: 0.5 at the threshold
    label: str  # "anomalous" when score > threshold, else "normal"
    threshold: float
    raw_map: np.ndarray = field(repr=False)  # (S, S) the model's map before smoothing (ed infer's maps/*.npy)
    smoothed_map: np.ndarray = field(repr=False)  # (S, S) after the σ smoothing: score = reducer(smoothed_map)
    size: tuple[int, int] = (0, 0)  # the input's (h, w)
    resize_mode: str = "squash"
    path: str | None = None

    @cached_property
    def anomaly_map(self) -> np.ndarray:
        """The smoothed map on the input's pixels (h, w); outside a centre crop, the map's minimum."""
        from edcli.method.scoring import to_original

        return to_original(self.smoothed_map, self.resize_mode, *self.size)

    @cached_property
    def mask(self) -> np.ndarray:
        """Predicted defect pixels (h, w) bool: anomaly_map > threshold (ed infer's masks/*.png)."""
        return self.anomaly_map > self.threshold


ImageLike = str | os.PathLike | Any  # a path, a PIL image or a uint8 array (H, W, 3) / (H, W)


class Detector:
    """A trained category, ready to score images. Build it with `Detector.load(path)`."""

    def __init__(self, scorer, meta: dict[str, Any], threshold: float | None = None, source: str = ""):
        self.scorer, self.meta, self.source = scorer, meta, source
        calib = meta.get("calibration") or {}
        self.warning = calib.get("warning")
        if threshold is not None:
            self.threshold = float(threshold)
            self.threshold_origin = f"--threshold {threshold:g} (given by the user)"
        elif "threshold" in calib:
            self.threshold, self.threshold_origin = float(calib["threshold"]), calib.get("origin", "calibration")
        else:
            raise ConfigError(f"{source} holds no calibrated threshold; pass --threshold VALUE")
        self.scale = float(calib.get("scale", 1.0))
        self.identity = FeatureIdentity.from_dict(meta)
        self.image_size, self.resize_mode = self.identity.image_size, self.identity.resize_mode

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: str = "auto",
        precision: str = "fp32",
        threshold: float | None = None,
        threads: int | None = None,
    ) -> Detector:
        """A `.pt` checkpoint of `ed train` (PyTorch) or an `.onnx` file of `ed export` (ONNX Runtime)."""
        path = str(path)
        if is_onnx(path):
            from edcli.onnxio import OnnxScorer

            if precision != "fp32":
                raise ConfigError(
                    f"--precision {precision}: an ONNX model runs in the precision it was exported in (fp32)"
                )
            scorer = OnnxScorer(path, device, threads)
            return cls(scorer, scorer.meta, threshold, path)
        import torch

        from edcli.checkpoint import load_checkpoint
        from edcli.engine import check_precision, setup_device
        from edcli.scorer import load_scorer, scoring_metadata

        dev = device if isinstance(device, torch.device) else setup_device(device)
        check_precision(precision, dev)
        ck = load_checkpoint(path)
        return cls(load_scorer(ck, dev, precision), scoring_metadata(ck), threshold, path)

    def __repr__(self) -> str:
        ident = self.identity
        return (
            f"Detector({self.source!r}, category={self.meta.get('category')!r}, backend={self.backend!r}, "
            f"backbone={ident.backbone!r}, image_size={ident.image_size}, threshold={self.threshold:.6g})"
        )

    @property
    def backend(self) -> str:
        from edcli.scorer import Scorer

        return "torch" if isinstance(self.scorer, Scorer) else "onnxruntime"

    def prepare(self, image: ImageLike):
        """One input -> ((3, S, S) float32 tensor in [0, 1], (h, w), path or None)."""
        from PIL import Image as PILImage

        from edcli.data.images import decode_rgb, prepare_image, upright

        path = None
        if isinstance(image, (str, os.PathLike)):
            path = str(image)
            img = decode_rgb(path)
        elif isinstance(image, PILImage.Image):
            img = upright(image)  # its EXIF orientation applied, as for a file
        elif isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
                raise DataError(
                    f"an array image must be uint8 (H, W, 3) RGB or (H, W) grey, got {image.dtype} {tuple(image.shape)}"
                )
            img = PILImage.fromarray(image)
        else:
            raise DataError(f"cannot score a {type(image).__name__}: give a path, a PIL image or a uint8 NumPy array")
        w, h = img.size
        return prepare_image(img, self.image_size, self.resize_mode), (h, w), path

    def score(self, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A prepared batch (B, 3, S, S) -> raw maps (B, S, S), smoothed maps (B, S, S), image scores (B,) float64."""
        return self.scorer.images(images)

    def predictions(self, raw, smoothed, scores, sizes, paths) -> list[Prediction]:
        from edcli.method.scoring import normalize

        norm = normalize(scores, self.threshold, self.scale)
        return [
            Prediction(
                float(s),
                float(z),
                "anomalous" if s > self.threshold else "normal",
                self.threshold,
                raw[i],
                smoothed[i],
                tuple(sizes[i]),
                self.resize_mode,
                paths[i],
            )
            for i, (s, z) in enumerate(zip(scores, norm))
        ]

    def predict(self, x, batch_size: int = 8) -> Prediction | list[Prediction]:
        """Score a path, a PIL image, a uint8 array, or a list of them (then a list comes back). Writes nothing."""
        import torch

        single = not isinstance(x, (list, tuple))
        items = [x] if single else list(x)
        out: list[Prediction] = []
        for start in range(0, len(items), max(1, int(batch_size))):
            prepared = [self.prepare(i) for i in items[start : start + batch_size]]
            batch = torch.stack([p[0] for p in prepared])
            out += self.predictions(*self.score(batch), [p[1] for p in prepared], [p[2] for p in prepared])
        return out[0] if single else out


def is_onnx(path: str | Path) -> bool:
    return str(path).lower().endswith(".onnx")
