"""A second benchmark dataset: crops of other photos shipped in scikit-image, with defects made here.

    python bench/photo_dataset.py --out /tmp/photos [--size 160] [--n-train 20] [--n-test-good 10] [--n-per-defect 3]

Not the demo's generator (data/synth.py, data/defects.py) and not its photos (brick, gravel, grass): the photos are
`retina` (the fundus between optic disc and the edge, vessels on orange), `hubble_deep_field` (galaxies on black) and
`immunohistochemistry` (brown-stained epithelium and blue stroma), all bundled with scikit-image (no network).
Train crops come from one part of each photo, test crops (good and defective) from a disjoint part, so test normals
are unseen. Each crop has a random place and a rotation of up to 5 degrees. The five defect kinds are drawn here
with skimage.draw: scratch, blob, smudge, cut, missing. Each mask marks exactly the pixels its defect changed.

Layout (MVTec AD, `--dataset mvtec`): CATEGORY/train/good/000.png, test/good/, test/<kind>/,
ground_truth/<kind>/<stem>_mask.png (8-bit, 0/255). A marker written last makes a rerun with the same parameters a
no-op. Every image has its own generator, seeded from (seed, category, split, index): deterministic for a seed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw

VERSION = 1  # bump when a change here changes the images a parameter set gives
MARKER = "photo_dataset.json"
KINDS = ("scratch", "blob", "smudge", "cut", "missing")
MAX_ANGLE = 5.0
AREA = (0.005, 0.08)  # accepted defect area, fraction of the image

# name: (native crop side in photo pixels, train boxes, test boxes); a box is (y0, y1, x0, x1) in photo pixels.
CATEGORIES = {
    # Bands above and below the fovea (~705, 705), right of the optic disc (~640, 210); crops stay inside the fundus.
    "retina": (320, [(60, 610, 330, 1350)], [(800, 1350, 330, 1350)]),
    "hubble_deep_field": (200, [(0, 872, 0, 480)], [(0, 872, 520, 1000)]),
    # Quadrants crosswise, so both splits mix epithelium and stroma (the photo's halves differ); small crops (x1.2
    # at 160 px) so that crops in a 250 px quadrant are not near-copies of one another.
    "immunohistochemistry": (136, [(0, 250, 0, 250), (262, 512, 262, 512)], [(0, 250, 262, 512), (262, 512, 0, 250)]),
}


def _photo(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The photo as uint8 RGB and where crops may lie (retina: inside the fundus, a margin off its black edge)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
    valid = np.ones(img.shape[:2], bool)
    if name == "retina":
        valid = ndimage.binary_erosion(img.max(-1) > 25, iterations=12)
    return np.ascontiguousarray(img), valid


def _crop(photo, valid, side, boxes, size, rng) -> np.ndarray:
    """A side×side view at a random place in one box, rotated up to MAX_ANGLE, resized to size×size."""
    angle = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE))
    reach = math.ceil(side * (abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle))))) + 2
    for _ in range(1000):
        y0, y1, x0, x1 = boxes[int(rng.integers(len(boxes)))]
        if y1 - y0 < reach or x1 - x0 < reach:
            raise ValueError(f"crop of {side} px (rotated: {reach}) does not fit box {(y0, y1, x0, x1)}")
        top, left = int(rng.integers(y0, y1 - reach + 1)), int(rng.integers(x0, x1 - reach + 1))
        if valid[top : top + reach, left : left + reach].all():
            break
    else:
        raise ValueError("no crop found inside the valid part of the photo")
    big = Image.fromarray(photo[top : top + reach, left : left + reach]).rotate(angle, Image.BICUBIC)
    m = (reach - side) // 2
    return np.asarray(big.crop((m, m, m + side, m + side)).resize((size, size), Image.LANCZOS))


def _soft(footprint: np.ndarray, sigma: float) -> np.ndarray:
    """An alpha that fades out over ~sigma px; faint edges cut to 0 so every changed pixel changed visibly."""
    alpha = np.clip(ndimage.gaussian_filter(footprint.astype(float), sigma) * 1.6, 0, 1)
    alpha[alpha < 0.15] = 0
    return alpha


def _blobby_polygon(cy, cx, radius, rng, shape):
    """Rows and columns of an irregular star-shaped polygon around (cy, cx)."""
    n = int(rng.integers(7, 12))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = radius * rng.uniform(0.55, 1.0, n)
    return draw.polygon(cy + r * np.sin(t), cx + r * np.cos(t), shape)


def _foreign_colour(img, rng) -> np.ndarray:
    """A colour far from the crop's mean (mean absolute difference > 60 levels)."""
    mean = img.reshape(-1, 3).mean(0)
    for _ in range(100):
        c = rng.uniform(0, 255, 3)
        if np.abs(c - mean).mean() > 60:
            return c
    return 255 - mean


def _defect(kind: str, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(defective uint8 image, alpha in [0, 1] of the change) for one kind; `img` is H×W×3 uint8."""
    S = img.shape[0]
    f = img.astype(float)
    u = S / 160  # sizes below are for 160 px and scale with the image
    cy, cx = rng.uniform(0.2 * S, 0.8 * S, 2)
    fp = np.zeros((S, S), bool)
    if kind == "scratch":  # a random-walk polyline, 1-3 px wide, light or dark
        pts = [np.array([cy, cx])]
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(3, 6))):
            heading += rng.uniform(-0.6, 0.6)
            step = rng.uniform(18, 32) * u * np.array([np.sin(heading), np.cos(heading)])
            pts.append(np.clip(pts[-1] + step, 0, S - 1))
        for a, b in zip(pts[:-1], pts[1:], strict=False):
            fp[draw.line(*np.round(a).astype(int), *np.round(b).astype(int))] = True
        fp = ndimage.binary_dilation(fp, iterations=max(1, round(rng.uniform(0.5, 1.5) * u)))
        alpha = fp * rng.uniform(0.75, 1.0)
        light = rng.random() < 0.5 if 80 < f.mean() < 170 else f.mean() <= 80  # never dark on a dark crop
        target = np.broadcast_to(rng.uniform(200, 255) if light else rng.uniform(0, 50), f.shape)
    elif kind == "blob":  # a filled ellipse of a foreign colour with a soft edge
        fp[draw.ellipse(cy, cx, *(rng.uniform(6, 20, 2) * u), shape=fp.shape, rotation=rng.uniform(0, np.pi))] = True
        alpha = _soft(fp, 1.5 * u) * rng.uniform(0.7, 0.95)
        target = np.broadcast_to(_foreign_colour(img, rng), f.shape)
    elif kind == "smudge":  # strong local blur inside an irregular polygon, darkened (a grey haze on a dark crop)
        fp[_blobby_polygon(cy, cx, rng.uniform(12, 26) * u, rng, fp.shape)] = True
        alpha = _soft(fp, 2.0 * u)
        target = ndimage.gaussian_filter(f, (rng.uniform(3, 5) * u,) * 2 + (0,))
        target = target * rng.uniform(0.45, 0.65) if f.mean() > 80 else target * 0.5 + rng.uniform(60, 90)
    elif kind == "cut":  # a strip displaced along its normal, a little brighter, like a lifted sliver
        theta = rng.uniform(0, np.pi)
        d = np.array([np.sin(theta), np.cos(theta)])
        n = np.array([d[1], -d[0]])
        half_len, half_w = rng.uniform(20, 45) * u, rng.uniform(2.5, 6) * u
        signs = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)])
        corners = np.array([cy, cx]) + (signs * [half_len, half_w]) @ np.stack([d, n])
        fp[draw.polygon(corners[:, 0], corners[:, 1], fp.shape)] = True
        shift = n * rng.uniform(6, 14) * u
        alpha = fp.astype(float)
        target = ndimage.shift(f, (*shift, 0), order=1, mode="reflect") * rng.uniform(1.0, 1.2) + rng.uniform(25, 45)
    elif kind == "missing":  # a piece gone: an irregular polygon of one flat colour, hard edge
        fp[_blobby_polygon(cy, cx, rng.uniform(10, 24) * u, rng, fp.shape)] = True
        alpha = fp.astype(float)
        target = np.broadcast_to(_foreign_colour(img, rng), f.shape)
    else:
        raise ValueError(f"unknown defect kind {kind!r}")
    out = np.clip(np.round(f * (1 - alpha[..., None]) + target * alpha[..., None]), 0, 255).astype(np.uint8)
    return out, alpha


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _write_category(folder: Path, name: str, p: dict) -> dict:
    side, train_boxes, test_boxes = CATEGORIES[name]
    photo, valid = _photo(name)
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")

    def rng(split: int, i: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([p["seed"], key, split, i]))

    size = p["size"]
    for i in range(p["n_train"]):
        _save(_crop(photo, valid, side, train_boxes, size, rng(0, i)), folder / "train/good" / f"{i:03d}.png")
    for i in range(p["n_test_good"]):
        _save(_crop(photo, valid, side, test_boxes, size, rng(1, i)), folder / "test/good" / f"{i:03d}.png")
    areas = {}
    for k, kind in enumerate(KINDS):
        areas[kind] = []
        for i in range(p["n_per_defect"]):
            g = rng(2 + k, i)
            img = _crop(photo, valid, side, test_boxes, size, g)
            for _ in range(100):  # redraw until the changed area is in AREA
                out, alpha = _defect(kind, img, g)
                mask = (alpha > 0) & (out != img).any(-1)  # exactly the changed pixels
                if AREA[0] <= mask.mean() <= AREA[1]:
                    break
            else:
                raise RuntimeError(f"{name}/{kind}/{i}: no defect with an area in {AREA}")
            _save(out, folder / "test" / kind / f"{i:03d}.png")
            _save(mask.astype(np.uint8) * 255, folder / "ground_truth" / kind / f"{i:03d}_mask.png")
            areas[kind].append(float(mask.mean()))
    return areas


def make_photo_dataset(
    out: str | Path,
    *,
    size: int = 160,
    n_train: int = 20,
    n_test_good: int = 10,
    n_per_defect: int = 3,
    seed: int = 0,
    categories: tuple[str, ...] = tuple(CATEGORIES),
) -> dict:
    """Write (or find already written) the dataset under `out`; returns the marker: parameters and defect areas."""
    out = Path(out)
    params = {"version": VERSION, "size": size, "n_train": n_train, "n_test_good": n_test_good,
              "n_per_defect": n_per_defect, "seed": seed, "categories": list(categories)}  # fmt: skip
    marker = out / MARKER
    if marker.is_file():
        old = json.loads(marker.read_text(encoding="utf-8"))
        if old.get("params") == params:
            return old | {"skipped": True}
        marker.unlink()  # other parameters: the old categories go
        for name in old.get("params", {}).get("categories", []):
            shutil.rmtree(out / name, ignore_errors=True)
    areas = {}
    for name in categories:
        shutil.rmtree(out / name, ignore_errors=True)  # leftovers of an interrupted run
        areas[name] = _write_category(out / name, name, params)
    result = {"params": params, "defect_area": areas}
    marker.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result | {"skipped": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--n-train", type=int, default=20)
    ap.add_argument("--n-test-good", type=int, default=10)
    ap.add_argument("--n-per-defect", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", nargs="+", default=list(CATEGORIES), choices=list(CATEGORIES))
    a = ap.parse_args()
    r = make_photo_dataset(a.out, size=a.size, n_train=a.n_train, n_test_good=a.n_test_good,
                           n_per_defect=a.n_per_defect, seed=a.seed, categories=tuple(a.categories))  # fmt: skip
    state = "already there, skipped" if r["skipped"] else "written"
    print(f"{a.out}: {state} (MVTec layout, {a.size} px, seed {a.seed})")
    for name, kinds in r["defect_area"].items():
        n_def = sum(len(v) for v in kinds.values())
        span = ", ".join(f"{k} {100 * min(v):.1f}-{100 * max(v):.1f}%" for k, v in kinds.items() if v)
        print(f"  {name}: train/good {a.n_train}, test/good {a.n_test_good}, {n_def} defective; areas: {span}")


if __name__ == "__main__":
    main()
