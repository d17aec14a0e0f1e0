"""Image and mask loading, the reference's resizing, and the datasets of files that feed the backbone.

Geometry follows the reference (method.md §3.0) with PIL directly, reproducing torchvision's rules:
`squash` is Resize((S, S)); `shorter_crop` is Resize(S) (shorter side S, the other `int(S * long / short)`)
then CenterCrop(S) (offsets `int(round((side - S) / 2))`). Images use LANCZOS, masks NEAREST.
Images come out in [0, 1] and unnormalised; the backbone normalises.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import TextIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from edcli.data.layouts import IMAGE_EXTS, SampleRef, layout
from edcli.errors import ConfigError, DataError

RESIZE_MODES = ("squash", "shorter_crop")


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


def decode_rgb(path: str) -> Image.Image:
    """The fully decoded file as an RGB PIL image, as every command reads it; DataError naming the file when it
    cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now so a truncated file fails here, not later
            return _to_rgb(upright(im))
    except Exception as err:  # PIL raises many unrelated types (OSError, ValueError, SyntaxError, struct.error, ...)
        raise DataError(f"could not decode image {path}: {_reason(err)}") from err


# EXIF orientations that turn the stored pixels by 90 degrees (5-8): the upright image has width and height swapped
_TURNED = (5, 6, 7, 8)
_ORIENTATION = 0x0112


def upright(img: Image.Image) -> Image.Image:
    """The image as every viewer shows it: its EXIF orientation applied (a phone photo stored sideways with
    orientation 6 is turned upright), the tag then dropped. Images without the tag come back as they are."""
    if img.getexif().get(_ORIENTATION, 1) == 1:
        return img
    return ImageOps.exif_transpose(img)


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    a = np.array(img, dtype=np.uint8)  # (S, S, 3), a writable copy
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)  # (3, S, S), as ToTensor


def load_image(path: str, size: int, mode: str) -> torch.Tensor:
    """(3, S, S) float32 in [0, 1], unnormalised."""
    return _pil_to_tensor(_geometry(decode_rgb(path), size, mode, Image.LANCZOS))


def _image_size(path: str) -> tuple[int, int]:
    """(width, height) from the image's header, without decoding it."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            return (h, w) if im.getexif().get(_ORIENTATION, 1) in _TURNED else (w, h)
    except Exception as err:
        raise DataError(f"could not decode image {path}: {_reason(err)}") from err


def prepare_image(img: Image.Image, size: int, mode: str) -> torch.Tensor:
    """A PIL image -> (3, S, S) float32 in [0, 1], unnormalised: the colour rules, resize and crop of `ed infer`."""
    return _pil_to_tensor(_geometry(_to_rgb(upright(img)), size, mode, Image.LANCZOS))


def _binary_mask(path: str, dataset: str) -> Image.Image:
    """The mask at full size as an L image of 0/255.

    Binarising before the NEAREST resize equals binarising after it (NEAREST only picks pixels).
    Threshold: above half of the value range (> 127 for 8-bit); MVTec 3D-AD: any non-zero value.
    Multi-channel masks take the largest colour channel (alpha ignored)."""
    try:
        with Image.open(path) as im:
            im.load()
            im = upright(im)  # drawn in the frame its image is shown in
            if im.mode == "P":
                im = im.convert("L")
            a = np.asarray(im)
    except Exception as err:
        raise DataError(f"could not decode mask {path}: {_reason(err)}") from err
    if a.ndim == 3:  # (H, W, C)
        a = a[..., :3].max(axis=2) if a.shape[2] >= 3 else a[..., 0]
    if layout(dataset).mask_nonzero:
        on = a != 0
    elif a.dtype == bool:
        on = a
    elif np.issubdtype(a.dtype, np.floating):
        on = a > 0.5
    else:
        full = 255 if a.dtype == np.uint8 else 65535
        on = a > full / 2
    return Image.fromarray(on.astype(np.uint8) * 255, mode="L")


def load_mask(
    ref: SampleRef, size: int, mode: str, dataset: str, image_wh: tuple[int, int] | None = None
) -> np.ndarray:
    """(S, S) uint8 in {0, 1}; zeros for a normal image. An anomalous image without a known mask is an
    error, never an all-normal mask; so is a mask of another size than its image (resizing both would misalign
    them). image_wh: the image's (width, height) when the caller has decoded it already."""
    if ref.label == 0:
        _check_geometry(size, mode)
        return np.zeros((size, size), dtype=np.uint8)
    if ref.mask_path is None:
        raise DataError(
            f"the mask of anomalous image {ref.path} is unknown (no ground_truth/ folder): pixel metrics need masks"
        )
    mask = _binary_mask(ref.mask_path, dataset)
    wh = tuple(image_wh) if image_wh is not None else _image_size(ref.path)
    if mask.size != wh:
        raise DataError(
            f"mask {ref.mask_path} is {mask.size[0]}x{mask.size[1]} but its image {ref.path} is "
            f"{wh[0]}x{wh[1]} (width x height); the mask must have the image's size"
        )
    m = _geometry(mask, size, mode, Image.NEAREST)
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
        img = decode_rgb(ref.path)
        item = {
            "image": _pil_to_tensor(_geometry(img, self.size, self.mode, Image.LANCZOS)),
            "label": ref.label,
            "index": i,
        }
        if self.with_masks:
            known = ref.label == 0 or ref.mask_path is not None
            mask = (
                load_mask(ref, self.size, self.mode, self.dataset, img.size)
                if known
                else np.zeros((self.size, self.size), dtype=np.uint8)
            )
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


DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above a 61 MP full-frame photo, far below a decompression bomb


def check_pixels(path: str, max_pixels: int | None) -> None:
    """DataError when the image's header says it has more than max_pixels pixels: decided before decoding (PIL
    reads the size lazily), so a 13000x13000 PNG of 437 KB costs no seconds and no gigabytes."""
    if max_pixels is None:
        return
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as err:
        raise DataError(f"could not decode image {path}: {_reason(err)}") from err
    if w * h > max_pixels:
        raise DataError(
            f"image {path} is {w}x{h} ({w * h / 1e6:.1f} MP), above --max-pixels {max_pixels} "
            f"({max_pixels / 1e6:g} MP): not decoded; raise --max-pixels to score it"
        )


class FileDataset(torch.utils.data.Dataset):
    """Unlabelled files. Never raises for a bad file: its item has a zero image and a non-empty `error`;
    orig_h/orig_w are the decoded size, 0 when decoding failed. max_pixels: larger images are errors, decided from
    the header (it replaces Pillow's own bomb limit, which it may exceed)."""

    def __init__(
        self, paths: list[str], size: int, mode: str, keep_original: bool = False, max_pixels: int | None = None
    ):
        _check_geometry(size, mode)  # fail early, not once per item
        self.paths = list(paths)
        self.size, self.mode, self.keep_original, self.max_pixels = size, mode, keep_original, max_pixels
        if max_pixels is not None and (Image.MAX_IMAGE_PIXELS or 0) < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels  # our cap is checked first; Pillow's must not stop what it allows

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i]
        original = None
        try:
            check_pixels(path, self.max_pixels)
            img = decode_rgb(path)
            orig_w, orig_h = img.size
            image = _pil_to_tensor(_geometry(img, self.size, self.mode, Image.LANCZOS))
            original = np.asarray(img) if self.keep_original else None
            error = ""
        except Exception as err:  # one bad file must not stop a batch job
            image = torch.zeros(3, self.size, self.size)
            orig_h = orig_w = 0
            error = str(err) if isinstance(err, DataError) else f"could not read image {path}: {_reason(err)}"
        item = {"image": image, "index": i, "orig_h": orig_h, "orig_w": orig_w, "error": error}
        if self.keep_original:  # the decoded RGB (h, w, 3) uint8 for the heat-map panel: no second decode
            item["original"] = original
        return item


def collate_files(items: list[dict]) -> dict:
    """A FileDataset batch: the default collation, with the originals (of different sizes) kept as a list."""
    originals = [item.pop("original") for item in items] if items and "original" in items[0] else None
    batch = torch.utils.data.default_collate(items)
    if originals is not None:
        batch["original"] = originals
    return batch
