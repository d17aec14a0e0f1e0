"""The demo dataset: crops of real texture photos shipped with scikit-image, with injected defects and exact masks.

The defects and their masks come from `defects.py`.

Layout (MVTec AD): `<category>/train/good/000.png`, `test/good/*.png`, `test/<kind>/*.png` and
`ground_truth/<kind>/<stem>_mask.png` (8-bit L, 0/255). Each mask marks exactly the pixels its defect changed.

The photo is cut into four quadrants with gaps between them: train crops come from the top-left and bottom-right
ones, test crops (good and defective) from the other two, so no photo pixel is in both and both splits see the
top and the bottom, the left and the right of the photo (`brick` is shot in perspective: its bricks lean one way
on the left and the other on the right; `grass` has more clover at the bottom). A photo too small for two regions
of rotated crops per axis is first upscaled with Pillow's Lanczos filter (for the 512 px photos: not at size
<= ~210, x1.21 at size 256).

Every image has its own generator, seeded from (seed, a SHA-256 key of the category name, split, index), so an
image does not depend on the other categories or on how many images of each kind are asked for.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from edcli.data.defects import DEFECT_KINDS, MARGIN, MIN_SIZE, make_defect
from edcli.errors import ConfigError, DataError
from edcli.files import atomic_folder, remove_folder_leftovers

DEMO_CATEGORIES = ("brick", "gravel", "grass")
FORMAT_VERSION = 3  # bump when a change of this file or of defects.py changes the images a spec gives
MARKER = ".complete"  # JSON written last into a finished category folder: format, spec, crop boxes
MAX_ANGLE = 5.0  # degrees of the random rotation of a crop
SIZE_LIMITS = (MIN_SIZE, 1024)


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data  # here, not at the top: importing edcli.data.synth stays light

        photo = np.asarray(getattr(skimage.data, name)())
        if photo.dtype != np.uint8:
            raise DataError(f"skimage.data.{name}() is {photo.dtype}, not uint8: this scikit-image is not supported")
        return np.repeat(photo[..., None], 3, axis=-1) if photo.ndim == 2 else photo[..., :3]

    load.__name__ = load.__qualname__ = f"skimage.data.{name}"
    return load


# Stationary photos only. Also tried and left out: moon (craters would be anomalies in "good" crops),
# immunohistochemistry and retina (regions differ in content), hubble_deep_field (mostly black: a dark
# hole changes almost nothing), object photos (train and test halves show different things).
AVAILABLE: dict[str, Callable[[], np.ndarray]] = {name: _skimage_photo(name) for name in DEMO_CATEGORIES}


@dataclass(frozen=True)
class SynthSpec:
    n_train: int = 40
    n_test_good: int = 10
    n_per_defect: int = 4  # of every kind in DEFECT_KINDS
    size: int = 256
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _check_spec(spec: SynthSpec) -> None:
    for name in ("n_train", "n_test_good", "n_per_defect", "size", "seed"):
        value = getattr(spec, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ConfigError(f"demo dataset {name}={value!r}: must be an integer")
    if spec.n_train < 1 or spec.n_test_good < 0 or spec.n_per_defect < 0 or spec.seed < 0:
        raise ConfigError(f"demo dataset spec {spec}: needs n_train >= 1 and n_test_good, n_per_defect, seed >= 0")
    lo, hi = SIZE_LIMITS
    if not lo <= spec.size <= hi:
        raise ConfigError(f"demo image size {spec.size}: must be between {lo} and {hi}")


# ---------------------------------------------------------------------------------------------------------------
# Crops


Region = tuple[int, int, int, int]  # (y0, y1, x0, x1): rows [y0, y1) and columns [x0, x1) of the photo


@dataclass(frozen=True)
class _Layout:
    photo: np.ndarray  # (H, W, C) uint8, upscaled when needed; C = 1 for a grey photo (3x less work per crop)
    scale: float
    window: int  # side of the square taken before rotation; the centre `size` square of it is kept
    train: tuple[Region, ...]  # regions crops may come from
    test: tuple[Region, ...]


def _window_side(size: int) -> int:
    """Side of a square whose rotation by up to MAX_ANGLE still covers the centred size x size square."""
    a = math.radians(MAX_ANGLE)
    return math.ceil(size * (math.cos(a) + math.sin(a))) + 2


def _layout(photo: np.ndarray, size: int) -> _Layout:
    """Quadrants, each holding a window plus room to shift it: train = top-left and bottom-right, test = the others."""
    if (photo == photo[..., :1]).all():  # grey photos come replicated to RGB: crop one channel, replicate after
        photo = np.ascontiguousarray(photo[..., :1])
    H, W, _ = photo.shape
    window = _window_side(size)
    need = window + max(2, math.ceil(MARGIN * size))  # a window plus at least 10 % of the size to shift it
    gap_src = 8  # photo rows between the regions: more than a Lanczos kernel's reach, so no source row is shared
    scale = max(1.0, 2 * need / (H - gap_src), 2 * need / (W - gap_src))
    if scale > 1.0:
        H, W = math.ceil(H * scale), math.ceil(W * scale)
        pil = Image.fromarray(photo[..., 0] if photo.shape[2] == 1 else photo)
        photo = np.asarray(pil.resize((W, H), Image.Resampling.LANCZOS)).reshape(H, W, -1)
    gap = math.ceil(gap_src * scale)
    my, mx = (H - gap) // 2, (W - gap) // 2
    top, bottom, left, right = (0, my), (my + gap, H), (0, mx), (mx + gap, W)
    assert min(my, H - my - gap, mx, W - mx - gap) >= need, (H, W, need)
    return _Layout(photo, scale, window, train=(top + left, bottom + right), test=(top + right, bottom + left))


def _crop(layout: _Layout, regions: tuple[Region, ...], size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A size x size crop from one of the regions: random position, rotation, horizontal flip and brightness."""
    R = layout.window
    ry0, ry1, rx0, rx1 = regions[int(rng.integers(len(regions)))]
    y0 = int(rng.integers(ry0, ry1 - R + 1))
    x0 = int(rng.integers(rx0, rx1 - R + 1))
    angle = float(rng.uniform(-MAX_ANGLE, MAX_ANGLE))
    flip = bool(rng.random() < 0.5)
    brightness = float(rng.uniform(0.9, 1.1))
    win = layout.photo[y0 : y0 + R, x0 : x0 + R].astype(np.float32)  # (R, R, C)
    # Rotate the larger window, then keep its centre: no corner of the kept square falls outside the window.
    rot = ndimage.rotate(win, angle, axes=(1, 0), reshape=False, order=3, mode="reflect")
    off = (R - size) // 2
    img = rot[off : off + size, off : off + size]  # (S, S, C)
    if flip:
        img = img[:, ::-1]
    img = np.clip(np.rint(img * brightness), 0, 255).astype(np.uint8)
    img = np.broadcast_to(img, (size, size, 3))  # (S, S, 3) for grey photos too
    info = {"box": [y0, x0, y0 + R, x0 + R], "angle": angle, "flip": flip, "brightness": brightness}
    return np.ascontiguousarray(img), info


# ---------------------------------------------------------------------------------------------------------------
# The dataset


def _stable_key(name: str) -> int:
    """A seed word for a category name that is the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")


def _save_png(array: np.ndarray, path: Path) -> None:
    # Pillow writes no time or text chunks unless asked; fixed options give byte-identical files.
    Image.fromarray(array).save(path, format="PNG", compress_level=6, optimize=False)


def _marker_of(folder: Path) -> dict | None:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _write_category(folder: Path, name: str, spec: SynthSpec) -> None:
    """Write one category into `folder` (which exists and is empty); the marker goes last."""
    try:
        photo = AVAILABLE[name]()
    except (OSError, ValueError, ImportError) as e:
        raise DataError(
            f"cannot load the scikit-image photo for demo category {name!r}: {e}; reinstall scikit-image"
        ) from e
    layout = _layout(photo, spec.size)
    key = _stable_key(name)
    crops: dict[str, dict] = {}

    def rng_for(split: int, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([spec.seed, key, split, index]))

    def write_split(rel: str, split: int, count: int, regions: tuple[Region, ...]) -> None:
        (folder / rel).mkdir(parents=True)
        for i in range(count):
            img, info = _crop(layout, regions, spec.size, rng_for(split, i))
            _save_png(img, folder / rel / f"{i:03d}.png")
            crops[f"{rel}/{i:03d}.png"] = info

    write_split("train/good", 0, spec.n_train, layout.train)
    write_split("test/good", 1, spec.n_test_good, layout.test)
    t0, t1, l0, l1 = layout.train[0]
    for k, kind in enumerate(DEFECT_KINDS):
        if spec.n_per_defect == 0:
            break
        (folder / "test" / kind).mkdir(parents=True)
        (folder / "ground_truth" / kind).mkdir(parents=True)
        for i in range(spec.n_per_defect):
            rng = rng_for(2 + k, i)
            img, info = _crop(layout, layout.test, spec.size, rng)
            source = None
            if kind == "patch":  # a training region at this crop's brightness: same material, other place
                region = layout.photo[t0:t1, l0:l1].astype(np.float32) * info["brightness"]
                source = np.clip(np.rint(region), 0, 255).astype(np.uint8)
                source = np.broadcast_to(source, source.shape[:2] + (3,))
            defective, mask = make_defect(kind, img, rng, source)
            _save_png(defective, folder / "test" / kind / f"{i:03d}.png")
            _save_png(mask.astype(np.uint8) * 255, folder / "ground_truth" / kind / f"{i:03d}_mask.png")
            crops[f"test/{kind}/{i:03d}.png"] = info
    marker = {
        "format": FORMAT_VERSION,
        "category": name,
        "photo": AVAILABLE[name].__name__,
        "spec": spec.to_dict(),
        "scale": layout.scale,
        "photo_shape": list(layout.photo.shape[:2]),
        "train_regions": [list(r) for r in layout.train],
        "test_regions": [list(r) for r in layout.test],
        "crops": crops,
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def make_dataset(
    out: str | Path, categories: Iterable[str] = DEMO_CATEGORIES, spec: SynthSpec = SynthSpec(), overwrite: bool = False
) -> Path:
    """Write an MVTec-layout demo dataset under `out`, one folder per category; return `out`.

    A category is written into a hidden `out/.<category>.tmp-*` folder and renamed into place when complete, so
    an interrupted run never leaves a half-written category. A complete category with the same spec is kept as is;
    one with another spec is an error unless overwrite=True, which rewrites it.
    """
    _check_spec(spec)
    names = [categories] if isinstance(categories, str) else list(dict.fromkeys(categories))
    unknown = [n for n in names if n not in AVAILABLE]
    if unknown or not names:
        raise ConfigError(
            f"unknown demo category {', '.join(map(repr, unknown)) or '(none given)'}: "
            f"choose from {', '.join(AVAILABLE)}"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    want = {"format": FORMAT_VERSION, "spec": spec.to_dict()}
    for name in names:
        final = out / name
        remove_folder_leftovers(final)
        if final.exists() and not overwrite:
            marker = _marker_of(final)
            if marker is not None and {k: marker.get(k) for k in want} == want:
                continue
            what = (
                f"was made with other settings (format {marker.get('format')}, spec {marker.get('spec')})"
                if marker is not None
                else f"is not a complete demo dataset (no valid {MARKER} marker)"
            )
            raise DataError(f"{final} {what}; rerun with --overwrite to replace it, or choose another --out")
        with atomic_folder(final) as tmp:
            _write_category(tmp, name, spec)
    return out
