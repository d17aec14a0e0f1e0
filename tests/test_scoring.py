"""Test-time scoring against the naive equations of method.md §3.6 (through the oracle), and the reducers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from oracle import kl, oracle_from_level, oracle_level_forward

from edcli.config import ModelConfig
from edcli.errors import ConfigError
from edcli.method.model import build_ed_model
from edcli.method.scorer import MapScorer
from edcli.method.scoring import GaussianSmooth, normalize, reduce_maps


def _naive_maps(model, feats, size: int, branch: str = "inter") -> torch.Tensor:
    """Straight from the equations: rec score × (max(s) − s), s = softmax(−mean_layers symKL), bilinear, mean."""
    maps = []
    for level, feat in zip(model.levels, feats):
        B, C, H, W = feat.shape
        x = feat.flatten(2).transpose(1, 2).double()
        oracle = oracle_from_level(level).double()
        out = oracle_level_forward(oracle, x)
        rec = ((out.recon - x) ** 2).mean(-1) + 1 - F.cosine_similarity(out.recon, x, dim=-1)  # (B, L)
        P, T = (out.P_inter, out.T_inter) if branch == "inter" else (out.P_intra, out.T_intra)
        if P is None:
            score = rec
        else:
            d = sum(kl(p, t) + kl(t, p) for p, t in zip(P, T)) / len(P)  # (B, L)
            s = torch.softmax(-d, dim=-1)
            score = rec * (s.max(-1, keepdim=True).values - s)
        grid = score.reshape(B, 1, H, W)
        maps.append(F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)[:, 0])
    return torch.stack(maps).mean(0)


def _raw_maps(model, feats, size: int) -> torch.Tensor:
    """The raw maps of the one scoring path (edcli.method.scorer.MapScorer, fast flavour)."""
    with torch.inference_mode():
        return MapScorer(model.levels, size, 4.0, "max")(feats).raw


def _small_model(**kw):
    torch.manual_seed(0)
    channels, grids = [12, 20], [(6, 6), (3, 3)]
    refs = [torch.randn(c, h * w) for c, (h, w) in zip(channels, grids)]
    model = build_ed_model(channels, grids, refs, ModelConfig(layers=2, heads=4, d_model=(32, 32), **kw)).eval()
    feats = [torch.randn(3, c, h, w) for c, (h, w) in zip(channels, grids)]
    return model, feats


@pytest.mark.parametrize("kw,branch", [({}, "inter"), ({"inter": False}, "intra"), ({"arch": "fod"}, "inter")])
def test_maps_equal_the_naive_equations(kw, branch):
    model, feats = _small_model(**kw)
    fast = _raw_maps(model, feats, 24).double()
    naive = _naive_maps(model, feats, 24, branch)
    assert fast.shape == (3, 24, 24)
    scale = naive.abs().max()
    assert scale > 0
    torch.testing.assert_close(fast / scale, naive / scale, rtol=0, atol=1e-5)


def test_batch_items_are_scored_independently():
    model, feats = _small_model()
    batch = _raw_maps(model, feats, 24)
    single = _raw_maps(model, [f[1:2] for f in feats], 24)
    torch.testing.assert_close(batch[1:2], single, rtol=1e-5, atol=1e-7)


def test_smoothing_is_scipy_sigma4_truncate4():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    maps = rng.random((2, 40, 40)).astype(np.float32)
    got = GaussianSmooth(40, 4.0)(torch.from_numpy(maps)).numpy()
    # K @ m @ Kᵀ in float32 against scipy's float64-accumulated filter: the documented 2e-6 (maps in [0, 1))
    np.testing.assert_allclose(got[1], gaussian_filter(maps[1], sigma=4, truncate=4.0), rtol=0, atol=2e-6)


def test_reducers():
    m = torch.zeros((1, 10, 10), dtype=torch.float64)
    m[0, 0, :4] = torch.tensor([4.0, 3, 2, 1])
    assert reduce_maps(m, "max")[0] == 4
    assert float(reduce_maps(m, "mean")[0]) == pytest.approx(0.1)
    assert float(reduce_maps(m, "topk:0.02")[0]) == pytest.approx(3.5)
    for bad in ("median", "topk:0", "topk:2", "topk:x"):
        with pytest.raises(ConfigError):
            reduce_maps(m, bad)


def test_normalized_score_puts_the_threshold_at_one_half():
    s = normalize([1.0, 2.0, 3.0], threshold=2.0, scale=0.5)
    assert s[1] == pytest.approx(0.5) and s[0] < 0.5 < s[2] and np.all(np.diff(s) > 0)
