"""Metrics against hand-computed cases and a brute-force AUPRO (a threshold loop over every distinct score)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from oracle import best_f1_threshold
from scipy import ndimage

from edcli.errors import ConfigError, DataError
from edcli.metrics import (
    METRIC_NAMES,
    aupro,
    compute_metrics,
    f1_max,
    image_ap,
    image_auroc,
    macro_mean,
    pixel_ap,
    pixel_auroc,
    pro_curve,
    threshold_counts,
)


# ---------------------------------------------------------------------------------------------- brute force
def brute_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3, connectivity: int = 8) -> float:
    """Slow reference: one threshold per distinct score, PRO as the plain mean of per-region overlaps."""
    masks = masks.astype(bool)
    structure = np.ones((3, 3)) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    regions = []  # (image index, region mask)
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=structure)
        regions += [(i, lab == r) for r in range(1, n + 1)]
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        above = maps >= t
        fpr = (above & normal).sum() / normal.sum()
        pro = np.mean([above[i][region].mean() for i, region in regions])
        points.append((float(fpr), float(pro)))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= limit:
            break
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_at = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_at) / 2
            break
    return area / limit


def random_case(seed: int, n: int = 5, h: int = 7, w: int = 8, levels: int | None = 6):
    """Sparse random masks (many regions of mixed sizes, diagonal contacts), one normal image, and scores
    quantised to `levels` values (ties everywhere) or continuous when levels is None."""
    rng = np.random.default_rng(seed)
    masks = (rng.random((n, h, w)) < 0.25).astype(np.uint8)
    masks[0, :2, :2] = [[1, 0], [0, 1]]  # a pair touching only at a corner: 1 region (8-conn), 2 (4-conn)
    masks[0, 2, :3] = 0
    masks[0, :3, 2] = 0
    masks[-1] = 0  # a normal image: its pixels still count as anomaly-free
    maps = rng.random((n, h, w)).astype(np.float32) + 0.4 * masks
    if levels is not None:
        maps = np.round(maps * levels) / levels
    return masks, maps.astype(np.float32)


# ---------------------------------------------------------------------------------------------- image level
def test_image_metrics_hand_case():
    labels, scores = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    # Positive-negative pairs: 0.35 > 0.1, 0.35 < 0.4, 0.8 > 0.1, 0.8 > 0.4 -> 3 of 4 ordered correctly.
    assert image_auroc(labels, scores) == pytest.approx(0.75, abs=1e-12)
    # Descending: 0.8 (pos) P=1 R=.5; 0.4 (neg); 0.35 (pos) P=2/3 R=1 -> AP = .5*1 + .5*2/3.
    assert image_ap(labels, scores) == pytest.approx((1 + 2 / 3) / 2, abs=1e-12)
    # F1 at t=.8: 2/3; t=.4: P=R=.5 -> .5; t=.35: P=2/3, R=1 -> .8; t=.1: P=.5, R=1 -> 2/3.
    assert f1_max(labels, scores) == pytest.approx(0.8, abs=1e-12)
    assert best_f1_threshold(labels, scores) == pytest.approx(0.35)
    assert isinstance(image_auroc(labels, scores), float)


def test_image_metrics_perfect_and_inverted():
    labels = [0, 0, 1, 1]
    assert image_auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_ap(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert f1_max(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    # Inverted: positives at ranks 3 and 4 -> AP = .5 * 1/3 + .5 * 2/4.
    assert image_ap(labels, [0.9, 0.8, 0.2, 0.1]) == pytest.approx(5 / 12)
    # Inverted F1-max: flagging everything gives P=.5, R=1 -> 2/3, better than any stricter threshold.
    assert f1_max(labels, [0.9, 0.8, 0.2, 0.1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], [False, False]])
def test_one_class_is_undefined_without_warnings(labels):
    scores = np.linspace(0, 1, len(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fn in (image_auroc, image_ap, f1_max, best_f1_threshold):
            assert fn(labels, scores) is None
        masks = np.zeros((2, 3, 3), np.uint8)
        maps = np.random.default_rng(0).random((2, 3, 3))
        for fn in (pixel_auroc, pixel_ap, aupro):
            assert fn(masks, maps) is None
            assert fn(np.ones_like(masks), maps) is None


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(DataError, match="same length"):
        image_auroc([0, 1], [0.5])
    with pytest.raises(DataError, match="NaN"):
        image_auroc([0, 1], [0.5, np.nan])
    with pytest.raises(DataError, match="only 0"):
        image_auroc([0, 2], [0.5, 0.6])
    with pytest.raises(DataError, match="same shape"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ConfigError, match="FPR limit"):
        aupro(np.eye(3), np.eye(3), fpr_limit=0.0)


# ---------------------------------------------------------------------------------------------- pixel level
def test_pixel_metrics_count_normal_images():
    masks = np.array([[[1, 0]], [[0, 0]]])  # image 2 is normal
    maps = np.array([[[0.8, 0.3]], [[0.9, 0.1]]])
    # The positive 0.8 beats 0.3 and 0.1 but not 0.9 (a normal image's pixel) -> 2/3; dropping image 2 gives 1.
    assert pixel_auroc(masks, maps) == pytest.approx(2 / 3)
    assert pixel_auroc(masks[:1], maps[:1]) == 1.0
    # Descending: 0.9 (neg), 0.8 (pos): precision 1/2 at recall 1.
    assert pixel_ap(masks, maps) == pytest.approx(0.5)


def test_aupro_hand_case_with_interpolation():
    # One region of 2 pixels (scores .9, .5) and 4 anomaly-free pixels (.8, .5, .2, .1).
    masks = np.array([[[1, 1, 0, 0, 0, 0]]])
    maps = np.array([[[0.9, 0.5, 0.8, 0.5, 0.2, 0.1]]])
    # t=.9: PRO .5, FPR 0 | t=.8: FPR .25 | t=.5 (a tie of both kinds, one step): PRO 1, FPR .5 | .2, .1: FPR .75, 1.
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1, 1, 1])
    # Area to .3: .25 * .5, then .25 -> .3 under the line from (.25,.5) to (.5,1): PRO(.3) = .6 -> .05 * (.5+.6)/2.
    expected = (0.25 * 0.5 + 0.05 * (0.5 + 0.6) / 2) / 0.3
    assert aupro(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.25 * 0.5 + 0.25 * 0.75 + 0.5 * 1.0, abs=1e-12)


def test_aupro_each_region_counts_equally():
    # Region A = 1 pixel (score .9), region B = 3 pixels (scores .2), separated by anomaly-free pixels.
    masks = np.array([[[1, 0, 1, 1, 1, 0, 0, 0]]])
    maps = np.array([[[0.9, 0.5, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1]]])
    # t=.9: PRO = (1 + 0)/2 = .5 (pixel-weighted would be 1/4) | t=.5: FPR .25 | t=.2: PRO 1 | t=.1: FPR 1.
    expected = (0.25 * 0.5 + 0.05 * 1.0) / 0.3
    assert aupro(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_aupro_eight_connectivity_joins_diagonal_pixels():
    masks = np.array([[[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]])  # diagonal pair + a lone pixel
    maps = np.zeros((1, 3, 4))
    maps[0, 0, 0] = 0.9  # one pixel of the diagonal pair
    maps[0, 1, 1] = maps[0, 1, 3] = 0.1
    maps[0, 2, 0] = 0.5  # one of the 9 anomaly-free pixels
    # 8-connected: 2 regions; t=.9 -> PRO (1/2 + 0)/2 = 1/4 until FPR 1/9, then PRO 1.
    # (4-connected would give 3 regions and PRO 1/3 -> (1/27 + .3 - 1/9)/.3 = 0.7531)
    expected = ((1 / 9) * 0.25 + (0.3 - 1 / 9) * 1.0) / 0.3
    assert aupro(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert abs(brute_aupro(masks, maps, connectivity=4) - expected) > 0.01


def test_aupro_regions_do_not_join_across_images():
    # The same corner pixel in two images must be two regions, not one region spanning the stack.
    masks = np.zeros((2, 3, 3), np.uint8)
    masks[:, 1, 1] = 1
    maps = np.zeros((2, 3, 3))
    maps[0, 1, 1] = 1.0  # only image 0's region is found before any false positive
    maps[0, 0, 0] = 0.5
    assert aupro(masks, maps) == pytest.approx(brute_aupro(masks, maps), abs=1e-12)
    assert aupro(masks, maps) < 0.9  # one region of two stays unfound until FPR 1/16


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [4, 10, None])
def test_aupro_matches_brute_force(seed, levels):
    masks, maps = random_case(seed, levels=levels)
    lab8 = ndimage.label(masks[0], structure=np.ones((3, 3)))[1]
    lab4 = ndimage.label(masks[0])[1]
    assert lab4 > lab8  # the case really has diagonal-only contacts
    for limit in (0.3, 0.05, 1.0):
        assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(brute_aupro(masks, maps, limit), abs=1e-6)


def test_aupro_constant_map_is_the_diagonal():
    masks, _ = random_case(0)
    # A constant map has one threshold: the curve is (0,0) -> (1,1); area to .3 is .045 -> .15.
    assert aupro(masks, np.full(masks.shape, 0.7, np.float32)) == pytest.approx(0.15, abs=1e-12)


# ---------------------------------------------------------------------------------------------- aggregation
def test_compute_metrics_full_and_partial():
    masks, maps = random_case(3)
    labels = masks.reshape(len(masks), -1).any(1).astype(int)
    scores = maps.reshape(len(maps), -1).max(1)
    out = compute_metrics(labels, scores, masks, maps)
    assert tuple(out) == METRIC_NAMES
    assert out["image_auroc"] == image_auroc(labels, scores)
    assert out["f1_max"] == f1_max(labels, scores)
    assert out["pixel_ap"] == pixel_ap(masks, maps)
    assert out["aupro"] == pytest.approx(brute_aupro(masks, maps), abs=1e-6)

    no_masks = compute_metrics(labels, scores)
    assert no_masks["image_ap"] == out["image_ap"]
    assert all(no_masks[k] is None for k in ("pixel_auroc", "pixel_ap", "aupro"))

    # Anomalous images but not one anomalous pixel: image metrics defined, pixel metrics not.
    empty = compute_metrics(labels, scores, np.zeros_like(masks), maps)
    assert empty["image_auroc"] == out["image_auroc"]
    assert all(empty[k] is None for k in ("pixel_auroc", "pixel_ap", "aupro"))


def test_compute_metrics_one_class_is_all_none():
    masks, maps = random_case(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = compute_metrics(np.zeros(len(masks), int), maps.max((1, 2)), np.zeros_like(masks), maps)
    assert set(out) == set(METRIC_NAMES) and all(v is None for v in out.values())


def test_compute_metrics_rejects_mismatched_inputs():
    masks, maps = random_case(2)
    labels = np.array([1, 1, 0, 1, 0])
    with pytest.raises(DataError, match="without anomaly maps"):
        compute_metrics(labels, np.arange(5.0), masks)
    with pytest.raises(DataError, match="masks"):
        compute_metrics(labels[:4], np.arange(4.0), masks, maps)


def test_macro_mean_over_defined_values_only():
    rows = [
        {"image_auroc": 0.8, "pixel_auroc": None, "aupro": 0.9, "category": "a"},
        {"image_auroc": 0.6, "pixel_auroc": None},  # aupro missing: undefined too
        {"image_auroc": None, "pixel_auroc": None, "aupro": 0.5},
    ]
    out = macro_mean(rows)
    assert tuple(out) == METRIC_NAMES
    assert out["image_auroc"] == pytest.approx(0.7)
    assert out["aupro"] == pytest.approx(0.7)
    assert out["pixel_auroc"] is None and out["f1_max"] is None
    assert macro_mean([]) == {name: None for name in METRIC_NAMES}


def test_threshold_counts_constructed_case():
    # 4 normal, 3 anomalous at threshold 0.5 (strictly above is anomalous): the normal 0.5 is not flagged,
    # the normal 0.9 is a false alarm, the anomalous 0.2 and 0.5 are misses.
    labels = [0, 0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.3, 0.5, 0.9, 0.2, 0.5, 0.8]
    got = threshold_counts(labels, scores, 0.5)
    assert got == {"tp": 1, "fp": 1, "fn": 2, "tn": 3, "tpr": pytest.approx(1 / 3), "fpr": pytest.approx(1 / 4)}
    assert threshold_counts([0, 0], [1.0, 2.0], 1.5)["tpr"] is None  # no anomalous image: TPR not defined
    assert threshold_counts([1], [3.0], 0.0) == {"tp": 1, "fp": 0, "fn": 0, "tn": 0, "tpr": 1.0, "fpr": None}
