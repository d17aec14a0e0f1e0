"""The validation set's defects (`ed train --select validation`): kinds apart from the demo's test kinds, several
copies per held-out image and kind at random places and sizes, exact masks, deterministic for a seed, and a store
key that changes with the validation format."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from edcli import validation
from edcli.data import defects, synth

S = 64


@pytest.fixture(scope="module")
def crops() -> dict[str, list[np.ndarray]]:
    """Three train crops of each demo photo at 64 px: one held-out image and the two others its perlin copies use."""
    out = {}
    for name in synth.DEMO_CATEGORIES:
        lay = synth._layout(synth.AVAILABLE[name](), S)
        out[name] = [synth._crop(lay, lay.train, S, np.random.default_rng(i))[0] for i in range(3)]
    return out


def test_kinds_are_new_and_apart_from_the_demo_test_kinds():
    assert not set(defects.VALIDATION_KINDS) & set(defects.DEFECT_KINDS)
    assert not set(defects.VALIDATION_KINDS) & {"blur", "noise", "erase"}  # the kinds that could not rank epochs
    assert len(defects.VALIDATION_KINDS) >= 2 and "perlin" in defects.VALIDATION_KINDS


def test_copies_are_exact_sized_placed_at_random_and_deterministic(crops):
    m = math.ceil(defects.MARGIN * S)
    lo, hi = defects.VALIDATION_AREA
    for name, (img, *others) in crops.items():
        copies = validation.defect_copies(img, 7, 3, others)
        kinds = [k for k, _, _ in copies]
        assert kinds == [k for k in defects.VALIDATION_KINDS for _ in range(validation.COPIES)], name
        for kind, bad, mask in copies:
            changed = np.abs(bad.astype(int) - img.astype(int)).max(-1)
            # exact: the mask is the changed pixels, each changed visibly (the blend drops smaller changes)
            assert np.array_equal(mask, changed > 0), (name, kind)
            assert changed[mask].min() >= defects.MIN_CHANGE, (name, kind)
            assert validation.MIN_AREA <= mask.mean() <= hi, (name, kind, mask.mean())
            assert not (mask[:m].any() or mask[-m:].any() or mask[:, :m].any() or mask[:, -m:].any()), (name, kind)
        for kind in defects.VALIDATION_KINDS:  # the copies of a kind are three different defects
            masks = [mask for k, _, mask in copies if k == kind]
            assert all(not np.array_equal(a, b) for i, a in enumerate(masks) for b in masks[i + 1 :]), (name, kind)
        again = validation.defect_copies(img, 7, 3, others)
        assert all(np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) for a, b in zip(copies, again))
        other_seed = validation.defect_copies(img, 8, 3, others)
        assert not any(np.array_equal(a[2], b[2]) for a, b in zip(copies, other_seed))

    # perlin and smear regions: exactly the drawn share of the image, spread over the stated range; the mask
    # (what changed) lies inside its region
    img, *others = crops["gravel"]
    areas = []
    for kind in ("perlin", "smear"):
        for seed in range(8):
            bad, region = defects._defect(kind, img, np.random.default_rng(seed), others[0])
            areas.append(region.sum())
            assert np.array_equal((bad != img).any(-1) & ~region, np.zeros_like(region)), (kind, seed)
    areas = np.array(areas) / (S * S)
    assert areas.min() >= lo - 1 / S**2 and areas.max() <= hi + 1 / S**2
    assert areas.max() / areas.min() >= 4  # sizes vary, not one blob size


def test_perlin_blends_in_the_texture_of_its_source(crops):
    img, a, b = crops["grass"]
    with_a, mask_a = defects.make_defect("perlin", img, np.random.default_rng(1), a)
    with_b, mask_b = defects.make_defect("perlin", img, np.random.default_rng(1), b)
    assert mask_a.any() and mask_b.any() and not np.array_equal(with_a, with_b)
    # a flat source gives a flat texture: the defect's inside loses most of the image's own detail
    flat = np.full_like(img, 128)
    smooth, mask = defects.make_defect("perlin", img, np.random.default_rng(1), flat)
    region = defects._defect("perlin", img, np.random.default_rng(1), flat)[1]
    assert mask.sum() >= 0.5 * region.sum()
    assert smooth[region].astype(float).std(0).mean() < 0.6 * img[region].astype(float).std(0).mean()


def test_perlin_noise_is_smooth_and_bounded():
    noise = defects._perlin(S, 16.0, np.random.default_rng(0))
    assert noise.shape == (S, S) and np.abs(noise).max() <= 1.0 and noise.std() > 0.05
    assert max(np.abs(np.diff(noise, axis=0)).max(), np.abs(np.diff(noise, axis=1)).max()) < 0.2  # continuous
    assert np.array_equal(noise, defects._perlin(S, 16.0, np.random.default_rng(0)))


def test_store_key_follows_the_validation_format(monkeypatch, tmp_path):
    from edcli.store import validation_path
    from edcli.store.keys import KEY_FIELDS

    cfg = SimpleNamespace(seed=0, val_fraction=0.1, calib_fraction=0.1)
    meta = {k: "x" for k in KEY_FIELDS}
    sett = validation.settings(cfg, 60)
    assert sett["format"] == validation.VALIDATION_FORMAT and sett["copies"] == validation.COPIES
    assert sett["kinds"] == list(defects.VALIDATION_KINDS)
    before = validation_path(tmp_path, "mvtec", "brick", meta, sett)
    monkeypatch.setattr(validation, "VALIDATION_FORMAT", validation.VALIDATION_FORMAT + 1)
    assert validation_path(tmp_path, "mvtec", "brick", meta, validation.settings(cfg, 60)) != before
    monkeypatch.setattr(validation, "COPIES", validation.COPIES + 1)
    assert validation.settings(cfg, 60)["copies"] == validation.COPIES
