"""Dataset layouts: the LAYOUTS registry (MVTec AD, BTAD, MVTec 3D-AD RGB, a generic `folder`) and listing.

A new layout is one `Layout` entry in LAYOUTS (plus its test): the CLI's `--dataset` choices, the README's table and
every listing below read it. Nothing here imports torch, so the CLI can read the choices at start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edcli.errors import ConfigError, DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Layout:
    """How one dataset family lays out a category folder on disk."""

    name: str  # the --dataset value
    title: str  # for messages: "MVTec AD layout"
    exts: tuple[str, ...]  # image extensions listed (the official archives' own; `folder` takes any image)
    resize_mode: str  # the reference's geometry: "squash" (Resize((S, S))) or "shorter_crop" (Resize(S) + CenterCrop)
    normal: str | None  # the normal folder's name; None: --normal-name
    image_subdir: str = ""  # MVTec 3D-AD keeps the RGB images one level down, next to xyz/ and gt/
    mask_dir: str = "ground_truth/{type}"  # relative to the category folder
    mask_names: tuple[str, ...] = ("{stem}_mask",)  # in order of preference
    mask_exts: tuple[str, ...] = (".png",)
    masks_optional: bool = False  # `folder` datasets may come without masks: pixel metrics are then not defined
    test_optional: bool = False  # `folder`: a category without test/ holds out normal images as its test split
    mask_nonzero: bool = False  # binarise masks at any non-zero value (MVTec 3D-AD) instead of half their range
    doc_layout: str = ""  # the README's table row
    doc_resize: str = ""

    def normal_folder(self, normal_name: str = "good") -> str:
        return self.normal if self.normal is not None else normal_name

    def image_dir(self, split_type_dir: Path) -> Path:
        return split_type_dir / self.image_subdir if self.image_subdir else split_type_dir

    def pattern(self) -> str:
        return "|".join("*" + e for e in self.exts)  # "*.png", "*.bmp|*.png"


LAYOUTS: dict[str, Layout] = {
    lay.name: lay
    for lay in (
        Layout(
            "mvtec",
            "MVTec AD",
            (".png",),
            "squash",
            "good",
            doc_layout="`ROOT/<cat>/train/good/*.png`, `test/<type>/*.png`, `ground_truth/<type>/<stem>_mask.png`",
            doc_resize="squashed to S×S",
        ),
        Layout(
            "btad",
            "BTAD",
            (".bmp", ".png"),
            "shorter_crop",
            "ok",
            mask_names=("{stem}",),
            mask_exts=(".png", ".bmp"),
            doc_layout="`ROOT/<cat>/train/ok/`, `test/ok/`, `test/ko/`, `ground_truth/ko/<stem>.png` (`.bmp` for 03)",
            doc_resize="shorter side to S, centre crop",
        ),
        Layout(
            "mvtec3d",
            "MVTec 3D-AD",
            (".png",),
            "shorter_crop",
            "good",
            image_subdir="rgb",
            mask_dir="test/{type}/gt",
            mask_names=("{stem}",),
            mask_nonzero=True,
            doc_layout="`ROOT/<cat>/train/good/rgb/*.png`, `test/<type>/rgb/`, `test/<type>/gt/<stem>.png`",
            doc_resize="shorter side to S, centre crop",
        ),
        Layout(
            "folder",
            "folder",
            IMAGE_EXTS,
            "squash",
            None,
            mask_names=("{stem}_mask", "{stem}"),
            mask_exts=IMAGE_EXTS,
            masks_optional=True,
            test_optional=True,
            doc_layout="MVTec-like with any image type; the normal folder's name is `--normal-name`; "
            "`ground_truth/` optional",
            doc_resize="squashed to S×S",
        ),
    )
}


@dataclass(frozen=True)
class SampleRef:
    path: str  # absolute path of the image
    label: int  # 0 normal, 1 anomalous
    defect_type: str  # folder name: "good" / "ok" / defect type
    mask_path: str | None  # None for normal images, and for anomalous ones of a `folder` dataset without ground_truth/


def layout(dataset: str) -> Layout:
    """The registered layout of that name; a ConfigError listing the valid ones otherwise."""
    try:
        return LAYOUTS[dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset {dataset!r}: choose one of {', '.join(LAYOUTS)}") from None


def resize_mode(dataset: str) -> str:
    """The reference's geometry: MVTec is squashed to S×S, BTAD and MVTec 3D-AD get shorter side S + centre crop."""
    return layout(dataset).resize_mode


def normal_folder(dataset: str, normal_name: str = "good") -> str:
    return layout(dataset).normal_folder(normal_name)


def _expected(lay: Layout, root: str | Path, category: str, normal_name: str) -> str:
    """'expected <root>/<category>/train/good/*.png (MVTec AD layout)' for error messages."""
    train = lay.image_dir(Path(str(root)) / category / "train" / lay.normal_folder(normal_name))
    return f"expected {train}/{lay.pattern()} ({lay.title} layout)"


def _visible(entries) -> list[os.DirEntry]:
    # Hidden names are skipped: macOS archives carry '._x.png' AppleDouble files that are not images.
    return [e for e in entries if not e.name.startswith(".")]


def discover_categories(dataset: str, root: str | Path, normal_name: str = "good") -> list[str]:
    """Sorted sub-folders of `root` that hold a training folder of this layout."""
    lay = layout(dataset)
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"dataset root {root} does not exist or is not a folder: {_expected(lay, root, '<category>', normal_name)}"
        )
    normal = lay.normal_folder(normal_name)
    with os.scandir(root) as it:
        found = sorted(
            e.name for e in _visible(it) if e.is_dir() and lay.image_dir(Path(e.path) / "train" / normal).is_dir()
        )
    if not found:
        hint = ""
        if lay.image_dir(root / "train" / normal).is_dir():
            hint = f"; {root} looks like one category: pass its parent folder and --category {root.name}"
        else:
            others = sorted(
                {
                    t.name
                    for c in root.iterdir()
                    if (c / "train").is_dir() and not c.name.startswith(".")
                    for t in (c / "train").iterdir()
                    if t.is_dir()
                }
            )
            if others:
                hint = (
                    f"; the train/ folders hold {', '.join(others)}: for your own layout use --dataset folder "
                    f"--normal-name {others[0]}"
                )
        raise DataError(f"no categories found in {root}: {_expected(lay, root, '<category>', normal_name)}{hint}")
    return found


def select_categories(found: list[str], wanted: tuple[str, ...]) -> list[str]:
    """`wanted` in the order given (duplicates dropped), or every found category when `wanted` is empty."""
    if not wanted:
        return list(found)
    unknown = [w for w in wanted if w not in found]
    if unknown:
        raise DataError(f"unknown category {', '.join(unknown)}: the dataset has {', '.join(found) or 'none'}")
    return list(dict.fromkeys(wanted))


def _list_images(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    """Image files in `folder` with one of `exts` (case-insensitive), sorted by name."""
    with os.scandir(folder) as it:
        names = sorted(e.name for e in _visible(it) if e.is_file() and os.path.splitext(e.name)[1].lower() in exts)
    return [folder / n for n in names]


class _MaskFinder:
    """Finds the mask of an anomalous image; lists each ground-truth folder once."""

    def __init__(self, lay: Layout, cat_dir: Path):
        self.lay = lay
        self.cat_dir = cat_dir
        self.masks_unknown = lay.masks_optional and not (cat_dir / "ground_truth").is_dir()
        self._listings: dict[Path, dict[tuple[str, str], str]] = {}

    def _listing(self, folder: Path) -> dict[tuple[str, str], str]:
        if folder not in self._listings:
            entries: dict[tuple[str, str], str] = {}
            if folder.is_dir():
                with os.scandir(folder) as it:
                    for e in it:
                        if e.is_file():
                            s, ext = os.path.splitext(e.name)
                            entries.setdefault((s, ext.lower()), e.name)
            self._listings[folder] = entries
        return self._listings[folder]

    def find(self, defect_type: str, stem: str) -> tuple[str | None, str]:
        """(mask path or None, what was expected)."""
        folder = self.cat_dir / self.lay.mask_dir.format(type=defect_type)
        names = [n.format(stem=stem) for n in self.lay.mask_names]
        listing = self._listing(folder)
        for key in ((n, e) for n in names for e in self.lay.mask_exts):
            if key in listing:
                return os.path.abspath(folder / listing[key]), ""
        if len(self.lay.mask_exts) > 2:  # name the name forms, not every extension
            return None, " or ".join(str(folder / (n + ".png")) for n in names) + " (any image extension)"
        return None, " or ".join(str(folder / (n + e)) for n in names for e in self.lay.mask_exts)


def _other_types_hint(lay: Layout, folder: Path) -> str:
    """'; it holds .jpg files: ...' when a folder has images of types this layout does not read."""
    with os.scandir(folder) as it:
        others = sorted(
            {os.path.splitext(e.name)[1].lower() for e in _visible(it) if e.is_file()}
            & (set(IMAGE_EXTS) - set(lay.exts))
        )
    if not others:
        return ""
    return f"; it holds {', '.join(others)} files: --dataset folder reads any image type"


def held_out(n: int, fraction: float, seed: int) -> list[int]:
    """Sorted indices of the `fraction` of n normal images held out as the test split (at least one, never all)."""
    import random

    k = min(n - 1, max(1, round(n * fraction))) if fraction > 0 and n > 1 else 0
    return sorted(random.Random(seed).sample(range(n), k))


def test_is_held_out(dataset: str, root: str | Path, category: str) -> bool:
    """True when the category's test split is a held-out share of its normal images (`folder` without test/)."""
    return layout(dataset).test_optional and not (Path(root) / category / "test").is_dir()


def list_split(
    dataset: str,
    root: str | Path,
    category: str,
    split: str,
    normal_name: str = "good",
    test_fraction: float = 0.2,
    seed: int = 3407,
) -> list[SampleRef]:
    """Samples of one category. "train": normal images sorted by name. "test": every type folder, the normal
    one first, then defect types alphabetically; images sorted by name within each.

    A `folder` category without test/ holds out `test_fraction` of its normal images, picked by `seed`, as a
    normal-only test split (metrics that need anomalies are then not defined); train is the rest."""
    lay = layout(dataset)
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}: choose train or test")
    root = Path(root)
    cat_dir = root / category
    normal = lay.normal_folder(normal_name)
    expected = _expected(lay, root, category, normal_name)
    if not cat_dir.is_dir():
        raise DataError(f"category folder {cat_dir} does not exist: {expected}")

    if split == "train":
        folder = lay.image_dir(cat_dir / "train" / normal)
        if not folder.is_dir():
            raise DataError(f"training folder {folder} does not exist: {expected}")
        images = _list_images(folder, lay.exts)
        if not images:
            raise DataError(f"no training images in {folder}: {expected}{_other_types_hint(lay, folder)}")
        if test_is_held_out(dataset, root, category):
            drop = set(held_out(len(images), test_fraction, seed))
            images = [p for i, p in enumerate(images) if i not in drop]
        return [SampleRef(os.path.abspath(p), 0, normal, None) for p in images]

    if test_is_held_out(dataset, root, category):
        folder = lay.image_dir(cat_dir / "train" / normal)
        images = _list_images(folder, lay.exts)
        keep = held_out(len(images), test_fraction, seed)
        if not keep:
            raise DataError(
                f"{cat_dir} has no test/ folder and too few normal images to hold some out "
                f"(--test-fraction {test_fraction:g} of {len(images)})"
            )
        return [SampleRef(os.path.abspath(images[i]), 0, normal, None) for i in keep]

    test_dir = cat_dir / "test"
    expected_test = f"expected {lay.image_dir(test_dir / '<type>')}/{lay.pattern()} ({lay.title} layout)"
    if not test_dir.is_dir():
        raise DataError(f"test folder {test_dir} does not exist: {expected_test}")
    with os.scandir(test_dir) as it:
        types = sorted((e.name for e in _visible(it) if e.is_dir()), key=lambda t: (t != normal, t))
    finder = _MaskFinder(lay, cat_dir)
    refs: list[SampleRef] = []
    missing: list[tuple[Path, str]] = []
    for defect_type in types:
        folder = lay.image_dir(test_dir / defect_type)
        if not folder.is_dir():
            raise DataError(f"test folder {folder} does not exist: {expected_test}")
        label = 0 if defect_type == normal else 1
        listed = _list_images(folder, lay.exts)
        if not listed and _other_types_hint(lay, folder):
            raise DataError(f"no test images in {folder}: {expected_test}{_other_types_hint(lay, folder)}")
        for p in listed:
            mask_path = None
            if label == 1 and not finder.masks_unknown:
                mask_path, want = finder.find(defect_type, p.stem)
                if mask_path is None:
                    missing.append((p, want))
                    continue
            refs.append(SampleRef(os.path.abspath(p), label, defect_type, mask_path))
    if missing:
        (img, want), more = missing[0], len(missing) - 1
        extra = f" (and {more} more anomalous images without masks)" if more else ""
        raise DataError(f"no mask for anomalous image {img}: expected {want}{extra}")
    if not refs:
        raise DataError(f"no test images in {test_dir}: {expected_test}")
    return refs
