"""Dataset layouts (MVTec AD, BTAD, MVTec 3D-AD RGB, a generic `folder`) and image/mask loading.

Geometry follows the reference (method.md §3.0) with PIL directly, reproducing torchvision's rules:
`squash` is Resize((S, S)); `shorter_crop` is Resize(S) (shorter side S, the other `int(S * long / short)`)
then CenterCrop(S) (offsets `int(round((side - S) / 2))`). Images use LANCZOS, masks NEAREST.
Images come out in [0, 1] and unnormalised; the backbone normalises.
"""
from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edcli.config import DATASETS
from edcli.errors import ConfigError, DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
RESIZE_MODES = ("squash", "shorter_crop")

_LAYOUT_NAME = {"mvtec": "MVTec AD", "btad": "BTAD", "mvtec3d": "MVTec 3D-AD", "folder": "folder"}
# Image extensions each layout lists (the official archives' own; `folder` takes any image).
_LAYOUT_EXTS = {"mvtec": (".png",), "btad": (".bmp", ".png"), "mvtec3d": (".png",), "folder": IMAGE_EXTS}


@dataclass(frozen=True)
class SampleRef:
    path: str  # absolute path of the image
    label: int  # 0 normal, 1 anomalous
    defect_type: str  # folder name: "good" / "ok" / defect type
    mask_path: str | None  # None for normal images, and for anomalous ones of a `folder` dataset without ground_truth/


# ----------------------------------------------------------------------------------------------------------------
# layouts


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")


def resize_mode(dataset: str) -> str:
    """The reference's geometry: MVTec is squashed to S×S, BTAD and MVTec 3D-AD get shorter side S + centre crop."""
    _check_dataset(dataset)
    return "shorter_crop" if dataset in ("btad", "mvtec3d") else "squash"


def normal_folder(dataset: str, normal_name: str = "good") -> str:
    _check_dataset(dataset)
    if dataset == "btad":
        return "ok"
    return normal_name if dataset == "folder" else "good"


def _image_dir(dataset: str, split_type_dir: Path) -> Path:
    # MVTec 3D-AD keeps the RGB images one level down, next to xyz/ and gt/.
    return split_type_dir / "rgb" if dataset == "mvtec3d" else split_type_dir


def _pattern(dataset: str) -> str:
    return "|".join("*" + e for e in _LAYOUT_EXTS[dataset])  # "*.png", "*.bmp|*.png"


def _expected(dataset: str, root: str | Path, category: str, normal_name: str) -> str:
    """'expected <root>/<category>/train/good/*.png (MVTec AD layout)' for error messages."""
    train = _image_dir(dataset, Path(str(root)) / category / "train" / normal_folder(dataset, normal_name))
    return f"expected {train}/{_pattern(dataset)} ({_LAYOUT_NAME[dataset]} layout)"


def _visible(entries) -> list[os.DirEntry]:
    # Hidden names are skipped: macOS archives carry '._x.png' AppleDouble files that are not images.
    return [e for e in entries if not e.name.startswith(".")]


def discover_categories(dataset: str, root: str | Path, normal_name: str = "good") -> list[str]:
    """Sorted sub-folders of `root` that hold a training folder of this layout."""
    _check_dataset(dataset)
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist or is not a folder: "
                        f"{_expected(dataset, root, '<category>', normal_name)}")
    normal = normal_folder(dataset, normal_name)
    with os.scandir(root) as it:
        found = sorted(e.name for e in _visible(it)
                       if e.is_dir() and _image_dir(dataset, Path(e.path) / "train" / normal).is_dir())
    if not found:
        hint = ""
        if _image_dir(dataset, root / "train" / normal).is_dir():
            hint = f"; {root} looks like one category: pass its parent folder and --category {root.name}"
        raise DataError(f"no categories found in {root}: {_expected(dataset, root, '<category>', normal_name)}{hint}")
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

    def __init__(self, dataset: str, cat_dir: Path):
        self.dataset = dataset
        self.cat_dir = cat_dir
        self.gt_root = cat_dir / "ground_truth"
        # `folder` datasets may come without any masks at all; then pixel metrics are unknown, not zero.
        self.masks_unknown = dataset == "folder" and not self.gt_root.is_dir()
        self._listings: dict[Path, dict[tuple[str, str], str]] = {}

    def _candidates(self, defect_type: str, stem: str) -> tuple[Path, list[tuple[str, str]]]:
        """(folder, [(name stem, lower-case ext), ...]) in order of preference; the first is the expected one."""
        if self.dataset == "mvtec":
            return self.gt_root / defect_type, [(stem + "_mask", ".png")]
        if self.dataset == "btad":  # .png for 01 and 02, .bmp for 03; either is accepted for any category
            return self.gt_root / defect_type, [(stem, ".png"), (stem, ".bmp")]
        if self.dataset == "mvtec3d":
            return self.cat_dir / "test" / defect_type / "gt", [(stem, ".png")]
        return self.gt_root / defect_type, [(s, e) for s in (stem + "_mask", stem) for e in IMAGE_EXTS]

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
        folder, cands = self._candidates(defect_type, stem)
        listing = self._listing(folder)
        for key in cands:
            if key in listing:
                return os.path.abspath(folder / listing[key]), ""
        if self.dataset == "folder":  # name the two name forms, not all twelve candidates
            return None, f"{folder / (stem + '_mask.png')} or {folder / (stem + '.png')} (any image extension)"
        return None, " or ".join(str(folder / (s + e)) for s, e in cands)


def list_split(dataset: str, root: str | Path, category: str, split: str,
               normal_name: str = "good") -> list[SampleRef]:
    """Samples of one category. "train": normal images sorted by name. "test": every type folder, the normal
    one first, then defect types alphabetically; images sorted by name within each."""
    _check_dataset(dataset)
    if split not in ("train", "test"):
        raise ConfigError(f"unknown split {split!r}: choose train or test")
    root = Path(root)
    cat_dir = root / category
    normal = normal_folder(dataset, normal_name)
    exts = _LAYOUT_EXTS[dataset]
    expected = _expected(dataset, root, category, normal_name)
    if not cat_dir.is_dir():
        raise DataError(f"category folder {cat_dir} does not exist: {expected}")

    if split == "train":
        folder = _image_dir(dataset, cat_dir / "train" / normal)
        if not folder.is_dir():
            raise DataError(f"training folder {folder} does not exist: {expected}")
        images = _list_images(folder, exts)
        if not images:
            raise DataError(f"no training images in {folder}: {expected}")
        return [SampleRef(os.path.abspath(p), 0, normal, None) for p in images]

    test_dir = cat_dir / "test"
    expected_test = f"expected {_image_dir(dataset, test_dir / '<type>')}/{_pattern(dataset)} " \
                    f"({_LAYOUT_NAME[dataset]} layout)"
    if not test_dir.is_dir():
        raise DataError(f"test folder {test_dir} does not exist: {expected_test}")
    with os.scandir(test_dir) as it:
        types = sorted((e.name for e in _visible(it) if e.is_dir()), key=lambda t: (t != normal, t))
    finder = _MaskFinder(dataset, cat_dir)
    refs: list[SampleRef] = []
    missing: list[tuple[Path, str]] = []
    for defect_type in types:
        folder = _image_dir(dataset, test_dir / defect_type)
        if not folder.is_dir():
            raise DataError(f"test folder {folder} does not exist: {expected_test}")
        label = 0 if defect_type == normal else 1
        for p in _list_images(folder, exts):
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


def masks_known(refs: list[SampleRef]) -> bool:
    """True when every anomalous sample has a mask (False for a `folder` dataset without ground_truth/)."""
    return all(r.label == 0 or r.mask_path is not None for r in refs)


# ----------------------------------------------------------------------------------------------------------------
# images and masks


def _check_geometry(size: int, mode: str) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"image size must be a positive integer, got {size!r}")
    if mode not in RESIZE_MODES:
        raise ConfigError(f"unknown resize mode {mode!r}: choose one of {', '.join(RESIZE_MODES)}")


def _geometry(img: Image.Image, size: int, mode: str, resample: int) -> Image.Image:
    """Resize (and crop) a PIL image exactly as torchvision's Resize/CenterCrop would."""
    _check_geometry(size, mode)
    if mode == "squash":
        return img.resize((size, size), resample)  # Resize((S, S)): aspect ratio not kept
    w, h = img.size
    # Resize(S): the shorter side becomes S, the other int(S * long / short) (truncated, as torchvision).
    new_w, new_h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample)
    # CenterCrop(S): offsets rounded with Python's round (half to even), as torchvision.
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _reason(err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return "file not found"
    if isinstance(err, IsADirectoryError):
        return "is a folder, not an image"
    if isinstance(err, UnidentifiedImageError):
        return "not a recognised image format"
    return str(err) or type(err).__name__


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB 8-bit. Grey, palette, RGBA (alpha dropped, as .convert('RGB')) and CMYK convert directly;
    16/32-bit integer images are taken as 16-bit (0..65535) and float images as [0, 1] (or 0..255 if larger)."""
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            a = a * 255.0 if a.size and np.nanmax(a) <= 1.0 else a
        else:
            a = a / 257.0  # 65535 -> 255
        img = Image.fromarray(np.clip(np.nan_to_num(a).round(), 0, 255).astype(np.uint8), mode="L")
    return img if img.mode == "RGB" else img.convert("RGB")


def _decode_rgb(path: str) -> Image.Image:
    """The fully decoded image as RGB; DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now so a truncated file fails here, not later
            return _to_rgb(im)
    except Exception as err:  # PIL raises many unrelated types (OSError, ValueError, SyntaxError, struct.error, ...)
        raise DataError(f"could not decode image {path}: {_reason(err)}") from err


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    a = np.array(img, dtype=np.uint8)  # (S, S, 3), a writable copy
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)  # (3, S, S), as ToTensor


def load_image(path: str, size: int, mode: str) -> torch.Tensor:
    """(3, S, S) float32 in [0, 1], unnormalised."""
    return _pil_to_tensor(_geometry(_decode_rgb(path), size, mode, Image.LANCZOS))


def _binary_mask(path: str, dataset: str) -> Image.Image:
    """The mask at full size as an L image of 0/255.

    Binarising before the NEAREST resize equals binarising after it (NEAREST only picks pixels).
    Threshold: above half of the value range (> 127 for 8-bit); MVTec 3D-AD: any non-zero value.
    Multi-channel masks take the largest colour channel (alpha ignored)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("L")
            a = np.asarray(im)
    except Exception as err:
        raise DataError(f"could not decode mask {path}: {_reason(err)}") from err
    if a.ndim == 3:  # (H, W, C)
        a = a[..., :3].max(axis=2) if a.shape[2] >= 3 else a[..., 0]
    if dataset == "mvtec3d":
        on = a != 0
    elif a.dtype == bool:
        on = a
    elif np.issubdtype(a.dtype, np.floating):
        on = a > 0.5
    else:
        full = 255 if a.dtype == np.uint8 else 65535
        on = a > full / 2
    return Image.fromarray(on.astype(np.uint8) * 255, mode="L")


def load_mask(ref: SampleRef, size: int, mode: str, dataset: str) -> np.ndarray:
    """(S, S) uint8 in {0, 1}; zeros for a normal image. An anomalous image without a known mask is an
    error, never an all-normal mask."""
    if ref.label == 0:
        _check_geometry(size, mode)
        return np.zeros((size, size), dtype=np.uint8)
    if ref.mask_path is None:
        raise DataError(f"the mask of anomalous image {ref.path} is unknown (no ground_truth/ folder): "
                        "pixel metrics need masks")
    m = _geometry(_binary_mask(ref.mask_path, dataset), size, mode, Image.NEAREST)
    return (np.asarray(m) > 127).astype(np.uint8)


class SampleDataset(torch.utils.data.Dataset):
    """Labelled samples; items are dict(image, label, index[, mask, mask_known]). Bad files raise DataError.

    With masks, an anomalous image whose mask is unknown (a `folder` dataset without ground_truth/) gets a
    zero mask and mask_known=False, so callers can leave it out of pixel metrics instead of failing."""

    def __init__(self, refs: list[SampleRef], size: int, mode: str, dataset: str, with_masks: bool = False):
        _check_geometry(size, mode)
        self.refs = list(refs)
        self.size, self.mode, self.dataset, self.with_masks = size, mode, dataset, with_masks

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> dict:
        ref = self.refs[i]
        item = {"image": load_image(ref.path, self.size, self.mode), "label": ref.label, "index": i}
        if self.with_masks:
            known = ref.label == 0 or ref.mask_path is not None
            mask = load_mask(ref, self.size, self.mode, self.dataset) if known else \
                np.zeros((self.size, self.size), dtype=np.uint8)
            item["mask"] = torch.from_numpy(mask)
            item["mask_known"] = known
        return item


# ----------------------------------------------------------------------------------------------------------------
# arbitrary inputs for `ed infer`


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTS and not os.path.basename(name).startswith(".")


def _folder_images(folder: str, recursive: bool) -> list[str]:
    """Image files of a folder (by extension), sorted by their path below it; hidden names skipped."""
    if not recursive:
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if e.is_file() and _is_image_name(e.name))
        return [os.path.join(folder, n) for n in names]
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames if _is_image_name(f)]
    return sorted(found, key=lambda p: os.path.relpath(p, folder).split(os.sep))


def _expand_one(item: str, recursive: bool) -> list[str]:
    if os.path.isdir(item):
        got = _folder_images(item, recursive)
        if not got:
            hint = "" if recursive else "; add --recursive to look in sub-folders"
            raise DataError(f"folder {item} holds no image files ({', '.join(IMAGE_EXTS)}){hint}")
        return got
    if os.path.exists(item):  # any file is kept: a non-image becomes an error row, not a silent skip
        return [item]
    if any(c in item for c in "*?["):
        matches = sorted(glob.glob(item, recursive=recursive))
        got = [m for m in matches if os.path.isfile(m) and _is_image_name(m)]
        if not got:
            what = "nothing" if not matches else "no image files"
            raise DataError(f"pattern {item} matches {what}")
        return got
    raise DataError(f"input {item} does not exist")


def expand_inputs(inputs: list[str], recursive: bool = False, stdin: TextIO | None = None) -> list[str]:
    """Files, folders, glob patterns and "-" (one path per line from stdin, default sys.stdin) -> file paths.

    Paths keep the form they were given in; order is as given with folder contents sorted; duplicates
    (same absolute path) keep their first place. Stdin lines are taken literally (files or folders, no globs)."""
    out: dict[str, str] = {}
    stdin_read = False
    for item in inputs:
        if item == "-":
            if stdin_read:
                continue
            stdin_read = True
            stream = sys.stdin if stdin is None else stdin
            lines = [ln.rstrip("\r\n") for ln in stream]
            lines = [ln for ln in lines if ln.strip()]
            if not lines:
                raise DataError("no paths were read from stdin ('-')")
            for ln in lines:
                if not os.path.exists(ln):
                    raise DataError(f"input {ln} (read from stdin) does not exist")
                for p in _expand_one(ln, recursive):
                    out.setdefault(os.path.abspath(p), p)
            continue
        for p in _expand_one(item, recursive):
            out.setdefault(os.path.abspath(p), p)
    if not out:
        raise DataError("no input images given")
    return list(out.values())


class FileDataset(torch.utils.data.Dataset):
    """Unlabelled files. Never raises for a bad file: its item has a zero image and a non-empty `error`;
    orig_h/orig_w are the decoded size, 0 when decoding failed."""

    def __init__(self, paths: list[str], size: int, mode: str):
        _check_geometry(size, mode)  # fail early, not once per item
        self.paths = list(paths)
        self.size, self.mode = size, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i]
        try:
            img = _decode_rgb(path)
            orig_w, orig_h = img.size
            image = _pil_to_tensor(_geometry(img, self.size, self.mode, Image.LANCZOS))
            error = ""
        except Exception as err:  # one bad file must not stop a batch job
            image = torch.zeros(3, self.size, self.size)
            orig_h = orig_w = 0
            error = str(err) if isinstance(err, DataError) else f"could not read image {path}: {_reason(err)}"
        return {"image": image, "index": i, "orig_h": orig_h, "orig_w": orig_w, "error": error}
