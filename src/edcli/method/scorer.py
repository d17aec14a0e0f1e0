"""ED's test-time pass as one module: pooled features (or images) -> raw maps, smoothed maps, image scores.

Two flavours of one object, chosen by `portable`: the fast score mode of the level models (in-place softmax, head
groups sized at run time; what eval, infer and the API run) and method/portable.py's out-of-place whole-batch ops
(what an ONNX exporter can trace). Both share the level average, the upsampling, the smoothing and the reducer.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from edcli.method import portable
from edcli.method.prior import grid_axes
from edcli.method.scoring import GaussianSmooth, combine_levels, reconstruction_score, reduce_maps, token_score


class ScoredMaps(NamedTuple):
    raw: Tensor  # (B, S, S) float32 anomaly maps before smoothing (pixel metrics use these by default)
    smoothed: Tensor  # (B, S, S) after the σ smoothing
    scores: Tensor  # (B,) the reducer over the smoothed maps


def _tokens(feat: Tensor) -> Tensor:
    """Pooled features (B, C, H, W) -> float32 tokens (B, L, C) in row-major order."""
    return feat.float().flatten(2).transpose(1, 2)


class MapScorer(nn.Module):
    """Per level pooled features (B, C, H, W) -> ScoredMaps. The level models run under the caller's autocast;
    the scores, the upsampling, the smoothing and the reducer always run in float32."""

    def __init__(
        self, levels: nn.ModuleList, size: int, sigma: float, reducer: str, portable: bool = False, score: str = "ed"
    ):
        super().__init__()
        self.levels, self.size, self.reducer, self.portable, self.score = levels, int(size), reducer, portable, score
        self.grids = [tuple(level.grid) for level in levels]
        # the portable path takes the grid axes as constants computed once, outside the traced graph
        self.axes = [tuple(a.clone() for a in grid_axes(lv.dx, lv.dy)) for lv in levels] if portable else None
        self.smooth = GaussianSmooth(self.size, sigma)
        self.eval()

    def level_parts(self, feats: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """(reconstruction score, attention-vs-prior KL) per token (B, L) of each level: what every --score
        combines (the fast flavour; a benchmark scores several --score values from one pass)."""
        out = []
        for level, feat in zip(self.levels, feats):
            x = _tokens(feat)
            # attention maps go head group by head group (bounded memory); score_kl: the inter branch's KL rows (the
            # intra branch's when the inter branch is off)
            scored = level(x, branches="score")
            with torch.autocast(x.device.type, enabled=False):
                out.append((reconstruction_score(scored.recon, x), scored.score_kl.float()))
        return out

    def level_scores(self, feats: list[Tensor]) -> list[Tensor]:
        """The score per token (B, L) of each level (`score`: scoring.SCORES)."""
        if self.portable:
            return [
                portable.level_score(level, _tokens(feat), axes, self.score)
                for level, feat, axes in zip(self.levels, feats, self.axes)
            ]
        parts = self.level_parts(feats)
        with torch.autocast(feats[0].device.type, enabled=False):
            return [token_score(rec, kl, self.score) for rec, kl in parts]

    def assemble(self, scores: list[Tensor]) -> ScoredMaps:
        """Per level token scores (B, L) -> ScoredMaps: level average, upsampling, smoothing, reducer (float32)."""
        with torch.autocast(scores[0].device.type, enabled=False):
            raw = combine_levels(scores, self.grids, self.size)  # (B, S, S)
            smoothed = self.smooth(raw)
            return ScoredMaps(raw, smoothed, reduce_maps(smoothed, self.reducer))

    def forward(self, feats: list[Tensor]) -> ScoredMaps:
        return self.assemble(self.level_scores(feats))


class ImageScorer(nn.Module):
    """Images (B, 3, S, S) float32 RGB in [0, 1], resized as `ed infer` resizes (unnormalised: the extractor
    normalises) -> ScoredMaps. The features are rounded to float16 as the feature store keeps them, so images and
    cached features give the same scores; `quantize=False` only in tests (the conversion's own error)."""

    def __init__(self, extractor: nn.Module, maps: MapScorer, quantize: bool = True):
        super().__init__()
        self.extractor, self.maps, self.quantize = extractor, maps, quantize
        self.eval()

    def features(self, images: Tensor) -> list[Tensor]:
        return [f.half().float() if self.quantize else f.float() for f in self.extractor(images)]

    def forward(self, images: Tensor) -> ScoredMaps:
        return self.maps(self.features(images))
