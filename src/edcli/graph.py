"""The whole scoring pass of a checkpoint as one torch module (for export): resized images -> raw map, smoothed map,
image score. Normalisation, backbone, pooling, the float16 quantisation of the store, both level models in score
mode, the level average, the upsampling, the σ smoothing and the reducer are all inside."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from edcli.method.portable import GaussianSmooth, maps_from_levels, reduce_maps
from edcli.method.prior import grid_axes

INPUT_NAME = "images"
OUTPUT_NAMES = ("raw_map", "smoothed_map", "score")


class ScoreGraph(nn.Module):
    """images (B, 3, S, S) float32 RGB in [0, 1], resized as `ed infer` resizes (unnormalised) ->
    raw map (B, S, S), smoothed map (B, S, S), image score (B,)."""

    def __init__(
        self,
        extractor: nn.Module,
        model: nn.Module,
        grids: list[tuple[int, int]],
        image_size: int,
        sigma: float,
        reducer: str,
        quantize: bool = True,
    ):
        super().__init__()
        self.quantize = quantize  # False only in tests: the conversion's own error, without fp16 rounding flips
        self.extractor, self.levels = extractor, model.levels
        self.grids, self.size, self.reducer = [tuple(g) for g in grids], int(image_size), reducer
        self.axes = [tuple(a.clone() for a in grid_axes(lv.dx, lv.dy)) for lv in model.levels]  # constants
        self.smooth = GaussianSmooth(self.size, sigma)
        self.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # the features as the store keeps them (float16), so the graph scores what eval and infer score
        feats = [f.half().float() if self.quantize else f for f in self.extractor(images)]
        raw = maps_from_levels(self.levels, feats, self.axes, self.grids, self.size)
        smoothed = self.smooth(raw)
        return raw, smoothed, reduce_maps(smoothed, self.reducer)


def score_graph(ck, quantize: bool = True) -> ScoreGraph:
    """The ScoreGraph of a checkpoint on the CPU (its backbone checked against the recorded weights hash)."""
    from edcli.checkpoint import build_model
    from edcli.features import context_for_checkpoint

    calib = ck.calibration or {}
    ctx = context_for_checkpoint(ck, None, torch.device("cpu"), {})
    return ScoreGraph(
        ctx.extractor,
        build_model(ck),
        [tuple(g) for g in ck.backbone["grids"]],
        int(ck.backbone["image_size"]),
        float(calib.get("sigma", 4.0)),
        calib.get("reducer", "max"),
        quantize,
    )


def graph_metadata(ck) -> dict[str, Any]:
    """What a deployed graph needs beside its weights: calibration, geometry, normalisation, provenance."""
    from edcli.version import __version__

    calib = dict(ck.calibration or {})
    calib.pop("scores", None)  # the per-image calibration scores: long and not needed to score
    bb = ck.backbone
    return {
        "format": "edcli-onnx",
        "format_version": 1,
        "edcli_version": __version__,
        "category": ck.category,
        "dataset": ck.dataset,
        "image_size": int(bb["image_size"]),
        "resize_mode": bb["resize_mode"],
        "input": "RGB in [0, 1], resized by resize_mode, unnormalised (the graph normalises)",
        "mean": list(bb["mean"]),
        "std": list(bb["std"]),
        "backbone": bb["backbone"],
        "weights_sha256": bb["weights_sha256"],
        "weights_source": bb.get("weights_source"),
        "random_init": bool(bb.get("random_init", False)),
        "levels": list(bb["levels"]),
        "calibration": calib,
        "normalized_score": "1 / (1 + exp(-clip((score - threshold) / max(scale, 1e-12), -60, 60)))",
        "outputs": list(OUTPUT_NAMES),
    }
