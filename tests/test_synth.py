"""The demo dataset: exact defect masks, defect sizes and places, layout, determinism, disjoint crops, reruns."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from edcli.data import defects, synth
from edcli.data.defects import DEFECT_KINDS, make_defect
from edcli.data.synth import DEMO_CATEGORIES, SynthSpec, make_dataset
from edcli.errors import ConfigError, DataError

SMALL = SynthSpec(n_train=3, n_test_good=2, n_per_defect=2, size=64, seed=0)
BLENDED = ("scratch", "hole", "stain")  # kinds that keep only changes of at least MIN_CHANGE grey levels


@pytest.fixture(scope="module")
def layouts():
    """Real photo layouts at sizes 64 and 256, built once."""
    cache = {}

    def get(name: str, size: int) -> synth._Layout:
        if (name, size) not in cache:
            cache[name, size] = synth._layout(synth.AVAILABLE[name](), size)
        return cache[name, size]

    return get


def test_photos_load_as_rgb_uint8():
    assert set(DEMO_CATEGORIES) <= set(synth.AVAILABLE)
    for name in synth.AVAILABLE:
        photo = synth.AVAILABLE[name]()
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert min(photo.shape[:2]) >= 256 and photo.std() > 10, name  # a real, textured photo


def _test_crops(layouts, name: str, size: int, n: int):
    """n (crop, rng) pairs from the test region, each with its own generator."""
    lay = layouts(name, size)
    for i in range(n):
        rng = np.random.default_rng(1000 * size + i)
        img, _ = synth._crop(lay, lay.test, size, rng)
        yield img, rng


def _train_source(lay: synth._Layout) -> np.ndarray:
    y0, y1, x0, x1 = lay.train[0]
    region = lay.photo[y0:y1, x0:x1]
    return np.ascontiguousarray(np.broadcast_to(region, region.shape[:2] + (3,)))


def _check_defect(kind: str, img: np.ndarray, defective: np.ndarray, mask: np.ndarray) -> None:
    S = img.shape[0]
    assert defective.dtype == np.uint8 and defective.shape == img.shape
    assert mask.dtype == bool and mask.shape == (S, S)
    assert np.array_equal(mask, (defective != img).any(axis=-1)), kind  # exactly the changed pixels
    assert 0.002 <= mask.mean() <= 0.12, (kind, mask.mean())
    m = math.ceil(0.1 * S)
    assert not mask[:m].any() and not mask[-m:].any() and not mask[:, :m].any() and not mask[:, -m:].any(), kind
    if kind in BLENDED:  # every marked pixel moved visibly
        change = np.abs(defective.astype(int) - img.astype(int)).max(axis=-1)
        assert change[mask].min() >= defects.MIN_CHANGE, kind


@pytest.mark.parametrize("size", [32, 64])  # 32: the smallest size, where the margins leave least room
@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defect_mask_is_exactly_the_changed_pixels_small(kind, size, layouts):
    for name in DEMO_CATEGORIES:
        lay = layouts(name, size)
        for img, rng in _test_crops(layouts, name, size, 5):
            before = img.copy()
            defective, mask = make_defect(kind, img, rng, _train_source(lay) if kind == "patch" else None)
            assert np.array_equal(img, before)  # the input is not modified
            _check_defect(kind, img, defective, mask)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_defect_at_256_is_exact_and_covers_its_intended_region(kind, layouts):
    # Share of the intended core region that really changed; patch and distortion can leave pixels equal by chance.
    least = {"scratch": 0.9, "hole": 0.9, "stain": 0.9, "patch": 0.7, "distortion": 0.6}[kind]
    for name in DEMO_CATEGORIES:
        lay = layouts(name, 256)
        for i, (img, rng) in enumerate(_test_crops(layouts, name, 256, 2)):
            source = _train_source(lay) if kind == "patch" else None
            state = rng.bit_generator.state
            defective, mask = make_defect(kind, img, rng, source)
            _check_defect(kind, img, defective, mask)
            rng.bit_generator.state = state  # the same draws again give the same defect and its core
            again, core = defects._defect(kind, img, rng, source)
            assert np.array_equal(again, defective)
            assert core.sum() > 0 and (mask & core).sum() >= least * core.sum(), (name, i, kind)


def test_scratch_is_thin_and_hole_is_dark(layouts):
    for name in DEMO_CATEGORIES:
        for img, rng in _test_crops(layouts, name, 256, 3):
            scr, smask = make_defect("scratch", img, rng)
            # Half-width: the deepest pixel of the line is at most ~3.5 px from its edge (width 3-5 px + AA edge).
            assert ndimage.distance_transform_edt(smask).max() <= 4.5
            assert ndimage.label(smask, np.ones((3, 3)))[1] <= 3  # one line, perhaps broken where nothing changed
            hole, hmask = make_defect("hole", img, rng)
            grey_before, grey_after = img.mean(-1), hole.mean(-1)
            assert grey_after[hmask].mean() < 0.5 * grey_before[hmask].mean()


def test_patch_is_a_turned_and_magnified_window_of_the_source(layouts):
    # A ramp source (R = row, G = column) tells where every pasted pixel came from.
    yy, xx = np.mgrid[0:200, 0:240]
    source = np.stack([yy, xx, (yy + xx) // 2], axis=-1).astype(np.uint8)  # (200, 240, 3)
    zooms = []
    for img, rng in _test_crops(layouts, "gravel", 128, 4):
        defective, core = defects._defect("patch", img, rng, source)
        ys, xs = np.nonzero(core)
        pasted = defective[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(int)
        h, w, _ = pasted.shape
        inner = pasted[2:-2, 2:-2]  # away from the resize's clamped border
        dr_dy, dr_dx = np.diff(inner[..., 0], axis=0).mean(), np.diff(inner[..., 0], axis=1).mean()
        dg_dy, dg_dx = np.diff(inner[..., 1], axis=0).mean(), np.diff(inner[..., 1], axis=1).mean()
        # A quarter turn: source rows run along the patch's columns and source columns along its rows.
        assert abs(dr_dy) < 0.05 and abs(dg_dx) < 0.05, (dr_dy, dg_dx)
        zoom = 1 / abs(dr_dx)
        assert 1.9 <= zoom <= 2.8 and 1.9 <= 1 / abs(dg_dy) <= 2.8, (dr_dx, dg_dy)
        zooms.append(zoom)
        # Exactly the documented transform of one window of the source.
        sy, sx = pasted[..., 0].min(), pasted[..., 1].min()
        k = 1 if dg_dy < 0 else 3  # np.rot90 by k = 1 turns the first column into the last row
        found = any(
            np.array_equal(defects._zoom_turn(source[y : y + sh, x : x + sw], k, h, w), pasted)
            for y in range(sy - 1, sy + 2)
            for x in range(sx - 1, sx + 2)
            for sh in range(w // 3, w // 2 + 2)
            for sw in range(h // 3, h // 2 + 2)
        )
        assert found
    assert np.ptp(zooms) > 0.05  # the zoom is drawn, not fixed


def test_lens_radius_scales_the_inner_disc_and_is_the_identity_outside():
    rho = np.linspace(0.0, 30.0, 601)
    for scale in (3.0, 2.3, 1 / 2.0, 1 / 2.6):
        src = defects._lens_radius(rho, 20.0, scale)
        assert (np.diff(src) > 0).all()  # increasing: nothing folds over
        inner = rho < 20.0 * (defects.LENS_INNER_BULGE if scale > 1 else defects.LENS_INNER_PINCH)
        np.testing.assert_allclose(src[inner], rho[inner] / scale, rtol=1e-6)
        np.testing.assert_allclose(src[rho >= 20.0], rho[rho >= 20.0], rtol=1e-6)
        assert np.abs(np.diff(src)).max() < 0.05 * 20  # continuous


def test_distortion_stays_in_a_small_disc(layouts):
    for img, rng in _test_crops(layouts, "brick", 256, 4):
        _, mask = make_defect("distortion", img, rng)
        ys, xs = np.nonzero(mask)
        assert max(np.ptp(ys), np.ptp(xs)) <= 2 * 0.19 * 256 + 1


def test_make_defect_without_source_and_bad_input(layouts):
    img, rng = next(_test_crops(layouts, "brick", 64, 1))
    a = make_defect("patch", img, np.random.default_rng(5))
    b = make_defect("patch", img, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and a[1].any()
    with pytest.raises(ConfigError, match="scratch"):
        make_defect("dent", img, rng)
    with pytest.raises(DataError):
        make_defect("hole", img[..., 0], rng)


def test_crop_has_no_black_corners():
    S = 64
    R = synth._window_side(S)
    photo = np.full((R, R, 1), 200, np.uint8)
    photo[0, :] = photo[-1, :] = photo[:, 0] = photo[:, -1] = 0  # a black frame around the only window
    lay = synth._Layout(photo, 1.0, R, ((0, R, 0, R),), ((0, R, 0, R),))
    angles = []
    for seed in range(40):
        img, info = synth._crop(lay, lay.train, S, np.random.default_rng(seed))
        angles.append(abs(info["angle"]))
        assert img.shape == (S, S, 3) and img.min() >= 150, info  # 200 x brightness >= 0.9, no frame pixel
    assert max(angles) > 4.5  # the check saw near-maximal rotations


def _overlap(a, b) -> bool:
    """Do two boxes (y0, x0, y1, x1) share a pixel?"""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _assert_disjoint_splits(train_boxes, test_boxes, train_regions, test_regions) -> None:
    for boxes, regions in ((train_boxes, train_regions), (test_boxes, test_regions)):
        for y0, x0, y1, x1 in boxes:  # every crop window inside one region of its split
            assert any(r[0] <= y0 and y1 <= r[1] and r[2] <= x0 and x1 <= r[3] for r in regions), (y0, x0, y1, x1)
    for a in train_regions:
        for b in test_regions:
            assert not _overlap((a[0], a[2], a[1], a[3]), (b[0], b[2], b[1], b[3]))  # no photo pixel in both
    assert not any(_overlap(a, b) for a in train_boxes for b in test_boxes)


def test_train_and_test_crop_boxes_are_disjoint(layouts):
    for name in DEMO_CATEGORIES:
        lay = layouts(name, 256)
        boxes = {
            split: [synth._crop(lay, regions, 256, np.random.default_rng(s))[1]["box"] for s in range(30)]
            for split, regions in (("train", lay.train), ("test", lay.test))
        }
        _assert_disjoint_splits(boxes["train"], boxes["test"], lay.train, lay.test)
        assert len({tuple(b) for b in boxes["train"]}) > 20  # crops really move
        H, W, _ = lay.photo.shape  # both splits reach the top and bottom halves and the left and right halves
        for regions in (lay.train, lay.test):
            assert min(r[0] for r in regions) == 0 and max(r[1] for r in regions) == H
            assert min(r[2] for r in regions) == 0 and max(r[3] for r in regions) == W


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("demo") / "out", spec=SMALL)


def test_layout_counts_names_and_masks(small):
    assert sorted(p.name for p in small.iterdir()) == sorted(DEMO_CATEGORIES)  # no leftovers
    for name in DEMO_CATEGORIES:
        cat = small / name
        assert sorted(p.name for p in (cat / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
        assert len(list((cat / "test" / "good").glob("*.png"))) == SMALL.n_test_good
        assert sorted(p.name for p in (cat / "test").iterdir()) == sorted(("good",) + DEFECT_KINDS)
        assert sorted(p.name for p in (cat / "ground_truth").iterdir()) == sorted(DEFECT_KINDS)
        for png in (cat / "train" / "good").glob("*.png"):
            with Image.open(png) as im:
                assert im.mode == "RGB" and im.size == (64, 64)
        for kind in DEFECT_KINDS:
            images = sorted((cat / "test" / kind).glob("*.png"))
            masks = sorted((cat / "ground_truth" / kind).iterdir())
            assert len(images) == SMALL.n_per_defect
            assert [m.name for m in masks] == [f"{p.stem}_mask.png" for p in images]
            for m in masks:
                with Image.open(m) as im:
                    assert im.mode == "L" and im.size == (64, 64)
                    values = np.asarray(im)
                assert set(np.unique(values)) == {0, 255}
                assert 0.002 <= (values > 0).mean() <= 0.12


def test_marker_records_spec_and_disjoint_crops(small):
    for name in DEMO_CATEGORIES:
        marker = json.loads((small / name / synth.MARKER).read_text())
        assert marker["spec"] == SMALL.to_dict() and marker["category"] == name
        crops = marker["crops"]
        assert len(crops) == SMALL.n_train + SMALL.n_test_good + len(DEFECT_KINDS) * SMALL.n_per_defect
        train = [c["box"] for k, c in crops.items() if k.startswith("train/")]
        test = [c["box"] for k, c in crops.items() if k.startswith("test/")]
        _assert_disjoint_splits(train, test, marker["train_regions"], marker["test_regions"])
        for c in crops.values():
            assert abs(c["angle"]) <= 5 and 0.9 <= c["brightness"] <= 1.1


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(small, tmp_path):
    again = make_dataset(tmp_path / "again", spec=SMALL)
    assert _tree_hashes(again) == _tree_hashes(small)
    other = _tree_hashes(
        make_dataset(
            tmp_path / "other",
            categories=("brick",),
            spec=SynthSpec(n_train=3, n_test_good=2, n_per_defect=2, size=64, seed=1),
        )
    )
    mine = _tree_hashes(small)
    pngs = [k for k in other if k.endswith(".png") and "ground_truth" not in k]
    assert pngs and all(other[k] != mine[k] for k in pngs)


def test_same_bytes_in_another_process_with_another_hash_seed(small, tmp_path):
    # Guards against seeds taken from Python's hash(), which differs between processes.
    code = (
        f"from edcli.data.synth import make_dataset, SynthSpec; "
        f"make_dataset({str(tmp_path / 'sub')!r}, categories=('brick',), spec=SynthSpec(**{SMALL.to_dict()!r}))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert _tree_hashes(tmp_path / "sub" / "brick") == _tree_hashes(small / "brick")


def test_a_category_does_not_depend_on_the_others(small, tmp_path):
    alone = _tree_hashes(make_dataset(tmp_path / "alone", categories=("grass",), spec=SMALL) / "grass")
    assert alone == _tree_hashes(small / "grass")


def test_rerun_skips_and_other_spec_needs_overwrite(tmp_path):
    out = tmp_path / "demo"
    make_dataset(out, categories=("brick",), spec=SMALL)
    first = out / "brick" / "train" / "good" / "000.png"
    stamp = (first.stat().st_ino, first.stat().st_mtime_ns)
    make_dataset(out, categories=("brick",), spec=SMALL)  # complete with the same spec: kept as it is
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == stamp
    other = SynthSpec(n_train=2, n_test_good=1, n_per_defect=1, size=48, seed=3)
    with pytest.raises(DataError, match="overwrite"):
        make_dataset(out, categories=("brick",), spec=other)
    make_dataset(out, categories=("brick",), spec=other, overwrite=True)
    assert json.loads((out / "brick" / synth.MARKER).read_text())["spec"] == other.to_dict()
    assert len(list((out / "brick" / "train" / "good").iterdir())) == 2
    with Image.open(first) as im:
        assert im.size == (48, 48)
    assert [p.name for p in out.iterdir()] == ["brick"]  # no temporary or old folders left


def test_interrupted_run_leaves_nothing_and_is_redone(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    calls = []
    real_save = synth._save_png

    def failing_save(array, path):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real_save(array, path)

    monkeypatch.setattr(synth, "_save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(out, categories=("gravel",), spec=SMALL)
    assert list(out.iterdir()) == []
    monkeypatch.setattr(synth, "_save_png", real_save)
    (out / ".gravel.tmp-123-dead").mkdir()  # what a killed (SIGKILL) run leaves
    (out / "gravel").mkdir()  # a folder without a marker is not taken for a finished one
    with pytest.raises(DataError, match="not a complete"):
        make_dataset(out, categories=("gravel",), spec=SMALL)
    make_dataset(out, categories=("gravel",), spec=SMALL, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["gravel"]
    assert (out / "gravel" / synth.MARKER).is_file()


def test_bad_names_and_specs(tmp_path):
    with pytest.raises(ConfigError, match="brick, gravel, grass"):
        make_dataset(tmp_path, categories=("brick", "marble"), spec=SMALL)
    for bad in (SynthSpec(size=16), SynthSpec(n_train=0), SynthSpec(seed=-1)):
        with pytest.raises(ConfigError):
            make_dataset(tmp_path, spec=bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        make_dataset(tmp_path / "file", spec=SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written on errors
