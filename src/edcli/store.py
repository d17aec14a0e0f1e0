"""The HDF5 feature store: distance matrices and per-category cached backbone features.

A store is a directory::

    STORE/distmaps.h5                                /{H}x{W}/dx, /{H}x{W}/dy  float32 (L, L)
    STORE/features/{dataset}/{category}/{key}.h5     attrs, /ref/{k}, /train/..., /test/...

Every file is complete or absent: it is written as ``<final>.tmp-<pid>-<random>`` in the same folder, closed,
fsynced and renamed onto its final name with ``os.replace``; a failed or killed writer leaves at most that temp
file, which readers ignore. This is the only module that imports h5py; numpy goes in and out.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from functools import cached_property, wraps
from pathlib import Path
from typing import Any, Union

import h5py
import numpy as np

from edcli.errors import StoreError
from edcli.files import TMP_MARK, GuardedFile, discard, is_temp, prepare, publish
from edcli.method.prior import grid_distances
from edcli.version import __version__

SCHEMA_VERSION = 1
KEY_FIELDS = ("backbone", "weights_sha256", "levels", "image_size", "resize_mode")  # what changes the numbers

DISTMAPS_NAME = "distmaps.h5"
FEATURES_DIR = "features"
_STR = h5py.string_dtype("utf-8")
_WRITER_ATTRS = ("schema_version", "edcli_version", "created")  # set by FeatureWriter, never taken from meta
_REMEDY = "delete it or rerun `ed features --overwrite`"
_DIST_REMEDY = "delete it and rerun `ed distmaps`"

Index = Union[None, int, slice, Sequence[int], np.ndarray]


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside HDF5 until the call returns: raised in a file callback, h5py would print
    it and swallow it, and the command would go on (and exit 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if pending and callable(old):
        old(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here, outside HDF5


def _deferring(method):
    @wraps(method)
    def wrapper(*args, **kwargs):
        with _sigint_deferred():
            return method(*args, **kwargs)

    return wrapper


def _create_temp(final: Path) -> tuple[Path, GuardedFile, h5py.File]:
    """Create the folder and an empty HDF5 temp file next to `final`, written through a GuardedFile: HDF5 never
    touches the disk itself, so a full disk is an error we report, not flush errors and a crash at exit."""
    tmp = prepare(final)  # WriteError naming the folder if it cannot be made
    stream = None
    try:
        stream = GuardedFile(tmp)
        return tmp, stream, h5py.File(stream, "w")
    except OSError as e:
        _discard(None, stream, tmp)
        raise _write_failed(final, e) from e


def _write_failed(final: Path, e: BaseException) -> StoreError:
    cause = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return StoreError(
        f"cannot write {final}: {cause}; nothing there was changed (free space, or choose a writable --store)"
    )


def _discard(f: h5py.File | None, stream: GuardedFile | None, tmp: Path) -> None:
    """Close the HDF5 file and its stream whatever state they are in, then remove the temp file."""
    if f is not None:
        with contextlib.suppress(Exception):
            f.close()
    if stream is not None:
        with contextlib.suppress(Exception):
            stream.close()
    discard(tmp)


def _finish(f: h5py.File, stream: GuardedFile, tmp: Path, final: Path) -> None:
    """Close (HDF5 flushes through the stream), check that every byte reached the disk, publish."""
    try:
        f.close()
        stream.close()  # raises the first write error
        publish(tmp, final)
    except (OSError, RuntimeError) as e:
        _discard(f, stream, tmp)
        raise _write_failed(final, stream.error or e) from e


@contextlib.contextmanager
def _atomic_h5(final: Path) -> Iterator[h5py.File]:
    """Yield a writable HDF5 file that appears at `final` only if the block finishes (a Ctrl-C waits for it)."""
    with _sigint_deferred():
        tmp, stream, f = _create_temp(final)
        try:
            yield f
        except BaseException as e:
            _discard(f, stream, tmp)
            if stream.error is not None:
                raise _write_failed(final, stream.error) from e
            raise
        _finish(f, stream, tmp, final)


def _open_read(path: Path, what: str, run: str, remedy: str) -> h5py.File:
    """Open an existing HDF5 file read-only, turning a missing or corrupt file into a StoreError."""
    if not path.is_file():
        raise StoreError(f"no {what} at {path}; run `{run}` first")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise StoreError(f"{path} is not a valid HDF5 file (corrupt or truncated: {e}); {remedy}") from e


def distance_matrices(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy) float32 (L, L) of an h x w grid as numpy (the model's own `grid_distances`)."""
    if int(h) < 1 or int(w) < 1:
        raise StoreError(f"token grid {h}x{w} is empty; both sides must be at least 1")
    dx, dy = grid_distances((int(h), int(w)))
    return dx.numpy(), dy.numpy()


def _grid_name(h: int, w: int) -> str:
    return f"{int(h)}x{int(w)}"


def write_distmaps(store: str | Path, grids: list[tuple[int, int]]) -> Path:
    """Add the grids to STORE/distmaps.h5, keeping those already there; the file is rewritten atomically."""
    final = Path(store) / DISTMAPS_NAME
    have: list[str] = []
    if final.exists():
        with _open_read(final, "distance maps", "ed distmaps", _DIST_REMEDY) as f:
            have = list(f.keys())
    wanted = list(dict.fromkeys(_grid_name(h, w) for h, w in grids))
    if all(name in have for name in wanted):
        return final  # nothing new: the matrices are deterministic, so the file already holds the answer
    with _atomic_h5(final) as out:
        if have:
            with _open_read(final, "distance maps", "ed distmaps", _DIST_REMEDY) as src:
                for name in have:
                    src.copy(src[name], out, name=name)
        for name in wanted:
            if name in have:
                continue
            h, w = (int(s) for s in name.split("x"))
            dx, dy = distance_matrices(h, w)
            g = out.create_group(name)
            g.create_dataset("dx", data=dx)
            g.create_dataset("dy", data=dy)
    return final


def read_distmaps(store: str | Path, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(dx, dy) float32 (L, L) for an h x w grid from STORE/distmaps.h5."""
    path = Path(store) / DISTMAPS_NAME
    name = _grid_name(h, w)
    with _open_read(path, "distance maps", "ed distmaps", _DIST_REMEDY) as f:
        if name not in f:
            raise StoreError(
                f"{path} has no {name} grid (it has: {', '.join(sorted(f.keys())) or 'none'}); "
                f"run `ed distmaps` for this backbone and image size"
            )
        return f[name]["dx"][()].astype(np.float32), f[name]["dy"][()].astype(np.float32)


def _canon(v: Any) -> Any:
    """Plain JSON-able Python value, so lists/tuples/numpy scalars compare and hash alike."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_canon(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, Path):
        return str(v)
    return v


def feature_key(meta: dict) -> str:
    """16 hex chars of sha256 over canonical JSON of the KEY_FIELDS values (other fields do not matter)."""
    missing = [k for k in KEY_FIELDS if k not in meta]
    if missing:
        raise StoreError(f"feature metadata lacks {', '.join(missing)}; cannot name the store file")
    blob = json.dumps({k: _canon(meta[k]) for k in KEY_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _component(value: str, what: str) -> str:
    s = str(value)
    if not s or s in (".", "..") or "/" in s or "\\" in s or TMP_MARK in s:
        raise StoreError(f"{what} name {s!r} cannot be a store folder name; use a plain name without slashes")
    return s


def features_path(store: str | Path, dataset: str, category: str, meta: dict) -> Path:
    """STORE/features/{dataset}/{category}/{key}.h5"""
    d, c = _component(dataset, "dataset"), _component(category, "category")
    return Path(store) / FEATURES_DIR / d / c / f"{feature_key(meta)}.h5"


def find_features(store: str | Path, dataset: str, category: str, meta: dict) -> Path | None:
    """The path if its file exists (files only ever appear complete), else None; FeatureFile.open validates it."""
    path = features_path(store, dataset, category, meta)
    return path if path.is_file() else None


def list_feature_files(store: str | Path) -> list[Path]:
    """Every complete feature file of the store, sorted; leftover temp files of killed writers are ignored."""
    root = Path(store) / FEATURES_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.h5") if p.is_file() and not is_temp(p))


def file_size(path: str | Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError as e:
        raise StoreError(f"cannot read the size of {path}: {e}") from e


def _to_attr(key: str, v: Any) -> Any:
    v = _canon(v)
    if isinstance(v, list):
        if v and all(isinstance(x, str) for x in v):
            return np.array(v, dtype=_STR)
        arr = np.asarray(v)
        if arr.dtype.kind not in "biuf":
            raise StoreError(f"feature metadata {key}={v!r} is not a list of numbers or strings")
        return arr
    if isinstance(v, (bool, int, float, str)):
        return v
    raise StoreError(f"feature metadata {key}={v!r} has type {type(v).__name__}; use a plain value")


def _from_attr(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return tuple(_from_attr(x) for x in v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return v


class FeatureWriter:
    """Writes one complete feature file atomically: a temp file in the same folder, os.replace on success,
    the temp file removed on any exception. Use as a context manager; `commit()` happens on clean __exit__.

    Rows may come in any order and in any batch sizes, but commit fails (and saves nothing) unless every train
    and test row and every level's ref was written. Features are stored as float16 without compression by
    default: float16 activations barely compress (gzip saves a few percent) while every training run reads all
    of them, so a filter would slow each read several-fold. Masks (mostly zeros) are gzip-compressed per image.
    """

    def __init__(
        self,
        path: Path,
        meta: dict,
        levels_shapes: list[tuple[int, int, int]],
        n_train: int,
        n_test: int,
        image_size: int,
        *,
        compression: str | None = None,
    ):
        self.path = Path(path)
        self.shapes = [tuple(int(s) for s in shape) for shape in levels_shapes]
        self.n_train, self.n_test, self.image_size = int(n_train), int(n_test), int(image_size)
        if not self.shapes or any(len(s) != 3 or min(s) < 1 for s in self.shapes):
            raise StoreError(f"levels_shapes must be non-empty (C, H, W) triples, got {levels_shapes!r}")
        if self.n_train < 0 or self.n_test < 0 or self.image_size < 1:
            raise StoreError(f"bad sizes for {self.path}: n_train={n_train}, n_test={n_test}, image_size={image_size}")
        if "levels" in meta and len(meta["levels"]) != len(self.shapes):
            raise StoreError(f"meta levels {meta['levels']!r} do not match {len(self.shapes)} level shapes")
        if "image_size" in meta and int(meta["image_size"]) != self.image_size:
            raise StoreError(f"meta image_size {meta['image_size']} differs from image_size={image_size}")
        self._train_done = np.zeros(self.n_train, dtype=bool)
        self._test_done = np.zeros(self.n_test, dtype=bool)
        self._ref_done = [False] * len(self.shapes)
        self._tmp, self._stream, self._f = None, None, None
        try:
            with _sigint_deferred():  # a Ctrl-C held until here is raised inside the try: the temp file goes
                self._tmp, self._stream, self._f = _create_temp(self.path)
                self._layout(meta, compression)
        except BaseException:
            self.abort()
            raise

    def _layout(self, meta: dict, compression: str | None) -> None:
        f = self._f
        for key, value in meta.items():
            if key not in _WRITER_ATTRS and value is not None:  # None is stored as an absent attr
                f.attrs[key] = _to_attr(key, value)
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["edcli_version"] = __version__
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        S = self.image_size
        for split, n in (("train", self.n_train), ("test", self.n_test)):
            g = f.create_group(split)
            for k, (C, H, W) in enumerate(self.shapes):
                # one image per chunk: any subset of images is read without touching the others
                g.create_dataset(
                    str(k),
                    shape=(n, C, H, W),
                    dtype=np.float16,
                    chunks=(1, C, H, W) if n else None,
                    compression=compression if n else None,
                )
            g.create_dataset("paths", shape=(n,), dtype=_STR)
        g = f["test"]
        n = self.n_test
        g.create_dataset("labels", shape=(n,), dtype=np.int8)
        g.create_dataset(
            "masks",
            shape=(n, S, S),
            dtype=np.uint8,
            chunks=(1, S, S) if n else None,
            compression="gzip" if n else None,
            compression_opts=1 if n else None,
        )
        g.create_dataset("defect_types", shape=(n,), dtype=_STR)
        g.create_dataset("mask_known", shape=(n,), dtype=bool)
        g = f.create_group("ref")
        for k, (C, H, W) in enumerate(self.shapes):
            g.create_dataset(str(k), shape=(C, H * W), dtype=np.float32)

    # -- writing
    def _open_file(self) -> h5py.File:
        if self._f is None:
            raise StoreError(f"{self.path}: the writer is already closed")
        return self._f

    def _rows(self, split: str, start: int, b: int, n: int) -> slice:
        self._open_file()
        if start < 0 or start + b > n:
            raise StoreError(f"{self.path}: {split} rows {start}..{start + b - 1} are outside 0..{n - 1}")
        return slice(start, start + b)

    def _write_feats(self, split: str, rows: slice, feats: list[np.ndarray]) -> None:
        b = rows.stop - rows.start
        if len(feats) != len(self.shapes):
            raise StoreError(f"{self.path}: got {len(feats)} feature levels, expected {len(self.shapes)}")
        for k, (x, shape) in enumerate(zip(feats, self.shapes)):
            x = np.asarray(x)
            if x.shape != (b, *shape):
                raise StoreError(f"{self.path}: {split} level {k} has shape {x.shape}, expected {(b, *shape)}")
            with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
                x16 = x.astype(np.float16)
            # float16 tops out at 65504: an overflow would silently turn into inf and poison every score
            if not np.isfinite(x16).all():
                raise StoreError(
                    f"{self.path}: {split} level {k} rows {rows.start}..{rows.stop - 1} are not "
                    f"finite in float16 (NaN or |x| > 65504); check the backbone and its weights"
                )
            self._f[f"{split}/{k}"][rows] = x16
        self._check_disk()

    def _check_disk(self) -> None:
        """Stop at the first failed write (the rest would be lost anyway)."""
        if self._stream.error is not None:
            raise _write_failed(self.path, self._stream.error)

    @_deferring
    def write_train(self, start: int, feats: list[np.ndarray], paths: list[str]) -> None:
        """feats[k]: (b, C, H, W) float for rows start..start+b-1; stored as float16."""
        rows = self._rows("train", start, len(paths), self.n_train)
        if rows.stop == rows.start:
            return
        self._write_feats("train", rows, feats)
        self._f["train/paths"][rows] = np.array([str(p) for p in paths], dtype=object)
        self._train_done[rows] = True

    @_deferring
    def write_test(
        self, start: int, feats: list[np.ndarray], paths: list[str], labels, masks, defect_types, mask_known
    ) -> None:
        """masks (b, S, S) bool or integer (0/1); labels (b,) int; defect_types list[str]; mask_known (b,) bool."""
        b, S = len(paths), self.image_size
        rows = self._rows("test", start, b, self.n_test)
        if b == 0:
            return
        labels, masks, mask_known = np.asarray(labels), np.asarray(masks), np.asarray(mask_known)
        if labels.shape != (b,) or mask_known.shape != (b,) or len(defect_types) != b:
            raise StoreError(
                f"{self.path}: labels {labels.shape}, mask_known {mask_known.shape} and "
                f"{len(defect_types)} defect types do not match {b} test paths"
            )
        if masks.shape != (b, S, S):
            raise StoreError(f"{self.path}: test masks have shape {masks.shape}, expected {(b, S, S)}")
        if masks.dtype.kind not in "biu" or (masks.size and (masks.min() < 0 or masks.max() > 255)):
            raise StoreError(f"{self.path}: test masks must be bool or integers in 0..255, got {masks.dtype}")
        if labels.dtype.kind not in "biu" or (labels.size and (labels.min() < 0 or labels.max() > 1)):
            raise StoreError(f"{self.path}: test labels must be 0 (normal) or 1 (anomalous), got {labels.tolist()}")
        self._write_feats("test", rows, feats)
        g = self._f["test"]
        g["paths"][rows] = np.array([str(p) for p in paths], dtype=object)
        g["labels"][rows] = labels.astype(np.int8)
        g["masks"][rows] = masks.astype(np.uint8)
        g["defect_types"][rows] = np.array([str(t) for t in defect_types], dtype=object)
        g["mask_known"][rows] = mask_known.astype(bool)
        self._test_done[rows] = True

    @_deferring
    def write_source(self, split: str, rows: list[str]) -> None:
        """What the split was made from (data/fingerprint.py: one line per image and mask), for later checks."""
        f = self._open_file()
        if split not in ("train", "test"):
            raise StoreError(f"{self.path}: unknown split {split!r} for the source listing")
        name = f"source/{split}"
        if name in f:
            del f[name]
        f.create_dataset(name, data=np.array([str(r) for r in rows], dtype=object), dtype=_STR)
        self._check_disk()

    @_deferring
    def write_ref(self, level: int, ref: np.ndarray) -> None:
        """ref: (C, L) float32, the mean pooled train feature map of the level (L = H*W, row-major)."""
        self._open_file()
        if not 0 <= level < len(self.shapes):
            raise StoreError(f"{self.path}: ref level {level} is outside 0..{len(self.shapes) - 1}")
        C, H, W = self.shapes[level]
        ref = np.asarray(ref, dtype=np.float32)
        if ref.shape != (C, H * W):
            raise StoreError(f"{self.path}: ref level {level} has shape {ref.shape}, expected {(C, H * W)}")
        if not np.isfinite(ref).all():
            raise StoreError(f"{self.path}: ref level {level} is not finite; check the backbone and its weights")
        self._f[f"ref/{level}"][...] = ref
        self._ref_done[level] = True

    # -- finishing
    def _check_complete(self) -> None:
        for split, done in (("train", self._train_done), ("test", self._test_done)):
            if not done.all():
                missing = np.flatnonzero(~done)
                raise StoreError(
                    f"{self.path}: {split} rows {missing[:5].tolist()}{'...' if len(missing) > 5 else ''}"
                    f" were never written ({len(missing)} of {len(done)}); nothing was saved"
                )
        missing_refs = [k for k, done in enumerate(self._ref_done) if not done]
        if missing_refs:
            raise StoreError(f"{self.path}: ref levels {missing_refs} were never written; nothing was saved")

    @_deferring
    def commit(self) -> Path:
        """Check that everything was written, then move the file into place. On failure nothing is left."""
        f = self._open_file()
        try:
            self._check_complete()
        except BaseException:
            self.abort()
            raise
        self._f = None
        _finish(f, self._stream, self._tmp, self.path)
        return self.path

    @_deferring
    def abort(self) -> None:
        """Close and remove the temp file; the final path is left as it was."""
        if self._tmp is not None:
            _discard(self._f, self._stream, self._tmp)
        self._f = None

    def _raise_disk_error(self, exc: BaseException) -> None:
        if self._stream is not None and self._stream.error is not None:
            raise _write_failed(self.path, self._stream.error) from exc

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
            if exc is not None and not isinstance(exc, StoreError):
                self._raise_disk_error(exc)  # an HDF5 error caused by a full disk: say so, not HDF5's words
        return False


_READ_BLOCK_BYTES = 8 << 20  # rows are read and converted in blocks of about this size


def _row_list(idx: Index, n: int, name: str) -> np.ndarray:
    """The rows idx asks for, in order, as non-negative int64 indices (duplicates kept)."""
    if idx is None:
        return np.arange(n)
    if isinstance(idx, slice):
        return np.arange(*idx.indices(n))
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"boolean index of shape {arr.shape} for {n} rows of {name}")
        return np.flatnonzero(arr)
    arr = arr.astype(np.int64).reshape(-1)
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise IndexError(f"rows {arr.tolist()} go outside 0..{n - 1} of {name}")
    return np.where(arr < 0, arr + n, arr)


def _read_rows(ds: h5py.Dataset, idx: Index, dtype: type) -> np.ndarray:
    """Rows of ds along axis 0 (all, an int, a slice, indices in any order, or a bool mask) as `dtype`.

    Runs of consecutive rows are read as hyperslabs in blocks and converted straight into the output:
    h5py's own fancy indexing is ~50x slower on chunked data and only takes increasing unique indices,
    and a whole float16 read followed by astype would hold both copies at once.
    """
    n = ds.shape[0]
    if isinstance(idx, (int, np.integer)):
        if not -n <= idx < n:
            raise IndexError(f"row {idx} is outside 0..{n - 1} of {ds.name}")
        return ds[int(idx) % n].astype(dtype)
    rows = _row_list(idx, n, ds.name)
    out = np.empty((len(rows), *ds.shape[1:]), dtype=dtype)
    if not len(rows):
        return out
    row_bytes = max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize)
    block = max(1, _READ_BLOCK_BYTES // row_bytes)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # where a run of consecutive rows ends
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
        first = int(rows[a])
        for j in range(a, b, block):
            e = min(b, j + block)
            out[j:e] = ds[first + j - a : first + e - a]
    return out


class FeatureFile:
    """Read access to a complete feature file; checks schema_version and the attrs against the request on open.

    The HDF5 handle stays open between calls (lazy reads). It belongs to the process that opened it: a pickled
    FeatureFile reopens the file by path when unpickled, and a forked child reopens it on first use, so no
    HDF5 handle is ever shared between processes. Rows of a level are read in ~8 MiB blocks straight into one
    float32 array (no float16 copy of the whole level is held on the way).
    """

    def __init__(self, path: Path, h5: h5py.File, expected: dict | None):
        self.path, self._h5, self._pid, self._expected = path, h5, os.getpid(), expected
        self.meta: dict = {k: _from_attr(v) for k, v in h5.attrs.items()}
        if "levels" in self.meta:
            self.meta["levels"] = tuple(int(x) for x in np.atleast_1d(self.meta["levels"]))
        self.n_levels = len(self.meta.get("levels", ())) or sum(name.isdigit() for name in h5["train"])
        self.n_train = int(h5["train/paths"].shape[0])
        self.n_test = int(h5["test/paths"].shape[0])
        self.shapes = [tuple(int(s) for s in h5[f"train/{k}"].shape[1:]) for k in range(self.n_levels)]

    @classmethod
    def open(cls, path: str | Path, expected: dict | None = None) -> FeatureFile:
        """Open and validate; StoreError if missing, corrupt, of another schema or made with other KEY_FIELDS."""
        path = Path(path)
        h5 = _open_read(path, "feature file", "ed features", _REMEDY)
        try:
            cls._validate(path, h5, expected)
            return cls(path, h5, expected)
        except BaseException:
            h5.close()
            raise

    @staticmethod
    def _validate(path: Path, h5: h5py.File, expected: dict | None) -> None:
        version = _from_attr(h5.attrs.get("schema_version"))
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path} has store schema version {version}, this edcli reads version {SCHEMA_VERSION}; "
                f"rerun `ed features --overwrite` to rebuild it"
            )
        for k in KEY_FIELDS:
            if expected is not None and k in expected:
                have = _canon(_from_attr(h5.attrs[k])) if k in h5.attrs else None
                want = _canon(expected[k])
                if have != want:
                    raise StoreError(
                        f"{path} was made with {k}={have!r} but {k}={want!r} was requested; "
                        f"rerun `ed features` with these settings (or --overwrite) to rebuild it"
                    )
        levels = h5.attrs.get("levels")
        n_levels = len(np.atleast_1d(levels)) if levels is not None else None
        needed = ["train/paths", "test/paths", "test/labels", "test/masks", "test/defect_types", "test/mask_known"]
        needed += [f"{s}/{k}" for s in ("train", "test", "ref") for k in range(n_levels or 1)]
        missing = [name for name in needed if name not in h5]
        if missing:
            raise StoreError(f"{path} lacks {', '.join(missing)} (not a complete edcli feature file); {_REMEDY}")

    # -- handle per process
    @property
    def _file(self) -> h5py.File:
        if self._h5 is None:
            raise StoreError(f"{self.path} is closed; open it again with FeatureFile.open")
        if self._pid != os.getpid():  # a forked child: never read through the parent's HDF5 handle
            self._h5 = _open_read(self.path, "feature file", "ed features", _REMEDY)
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self) -> dict:
        return {"path": self.path, "expected": self._expected}

    def __setstate__(self, state: dict) -> None:
        other = FeatureFile.open(state["path"], state["expected"])
        self.__dict__.update(other.__dict__)

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- data
    def _level(self, k: int) -> int:
        if not 0 <= k < self.n_levels:
            raise IndexError(f"level {k} is outside 0..{self.n_levels - 1} of {self.path}")
        return k

    def ref(self, k: int) -> np.ndarray:
        """(C, L) float32 prototype of level k."""
        return self._file[f"ref/{self._level(k)}"][()].astype(np.float32)

    def train(self, k: int, idx: Index = None) -> np.ndarray:
        """(N, C, H, W) float32: all train rows of level k, or those of idx (int, slice, indices, bool mask)."""
        return _read_rows(self._file[f"train/{self._level(k)}"], idx, np.float32)

    def test(self, k: int, idx: Index = None) -> np.ndarray:
        """(N, C, H, W) float32 test rows of level k, indexed as train()."""
        return _read_rows(self._file[f"test/{self._level(k)}"], idx, np.float32)

    def test_masks(self, idx: Index = None) -> np.ndarray:
        """(N, S, S) uint8 ground-truth masks; rows whose mask_known is False carry no ground truth."""
        return _read_rows(self._file["test/masks"], idx, np.uint8)

    def _strings(self, name: str) -> list[str]:
        return [str(s) for s in self._file[name].asstr()[()].tolist()]

    @cached_property
    def train_paths(self) -> list[str]:
        return self._strings("train/paths")

    def source(self, split: str) -> list[str] | None:
        """The recorded listing of the files the split was made from; None for a file written without one."""
        name = f"source/{split}"
        return self._strings(name) if name in self._file else None

    @cached_property
    def test_paths(self) -> list[str]:
        return self._strings("test/paths")

    @cached_property
    def test_defect_types(self) -> list[str]:
        return self._strings("test/defect_types")

    @cached_property
    def test_labels(self) -> np.ndarray:
        return self._file["test/labels"][()].astype(np.int64)

    @cached_property
    def test_mask_known(self) -> np.ndarray:
        return self._file["test/mask_known"][()].astype(bool)


# ---------------------------------------------------------------------------------------------- validation sets
# STORE/validation/{dataset}/{category}/{key}.h5: the pooled features of held-out normal train images and of their
# synthetic-defect copies (`ed train --select validation`), with exact masks. A tree of its own, beside features/,
# so a feature file stays what it was. `key` hashes the feature key and the validation settings.
VALIDATION_DIR = "validation"
_VAL_FIELDS = ("labels", "masks", "kinds", "sources", "train_index")


def validation_path(store: str | Path, dataset: str, category: str, meta: dict, settings: dict) -> Path:
    """STORE/validation/{dataset}/{category}/{key}.h5, key over the feature key and the validation settings."""
    d, c = _component(dataset, "dataset"), _component(category, "category")
    blob = json.dumps(
        {"features": feature_key(meta), **{k: _canon(v) for k, v in settings.items()}},
        sort_keys=True,
        separators=(",", ":"),
    )
    return Path(store) / VALIDATION_DIR / d / c / f"{hashlib.sha256(blob.encode('utf-8')).hexdigest()[:16]}.h5"


def write_validation(
    path: Path,
    settings: dict,
    shapes: list[tuple[int, int, int]],
    n: int,
    image_size: int,
    batches: Iterator[tuple[int, list[np.ndarray], dict[str, Any]]],
) -> Path:
    """Write a validation file atomically from batches (start row, per-level (b, C, H, W) features, and the rows'
    labels (b,), masks (b, S, S), kinds, sources (train image paths) and train_index); every row must come."""
    S = int(image_size)
    with _atomic_h5(Path(path)) as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["edcli_version"] = __version__
        f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.attrs["settings"] = json.dumps({k: _canon(v) for k, v in settings.items()}, sort_keys=True)
        g = f.create_group("val")
        for k, shape in enumerate(shapes):
            g.create_dataset(str(k), shape=(n, *shape), dtype=np.float16, chunks=(1, *shape))
        g.create_dataset("labels", shape=(n,), dtype=np.int8)
        g.create_dataset(
            "masks", shape=(n, S, S), dtype=np.uint8, chunks=(1, S, S), compression="gzip", compression_opts=1
        )
        g.create_dataset("kinds", shape=(n,), dtype=_STR)
        g.create_dataset("sources", shape=(n,), dtype=_STR)
        g.create_dataset("train_index", shape=(n,), dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        for start, feats, rows in batches:
            b = len(rows["labels"])
            for k, x in enumerate(feats):
                x16 = np.asarray(x).astype(np.float16)
                if x16.shape != (b, *shapes[k]) or not np.isfinite(x16).all():
                    raise StoreError(
                        f"{path}: validation level {k} rows {start}..{start + b - 1} have shape "
                        f"{x16.shape} (expected {(b, *shapes[k])}) or are not finite in float16"
                    )
                g[str(k)][start : start + b] = x16
            for name in _VAL_FIELDS:
                value = rows[name]
                g[name][start : start + b] = (
                    np.array([str(v) for v in value], dtype=object)
                    if name in ("kinds", "sources")
                    else np.asarray(value)
                )
            done[start : start + b] = True
        if not done.all():
            raise StoreError(f"{path}: validation rows {np.flatnonzero(~done)[:5].tolist()} were never written")
    return Path(path)


class ValidationFile:
    """A validation file read whole into memory (it is small: a tenth of the train images and their copies);
    features stay float16 until a batch is read."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with _open_read(self.path, "validation file", "ed train --select validation", "delete it") as f:
            version = _from_attr(f.attrs.get("schema_version"))
            if version != SCHEMA_VERSION or "val" not in f or not all(n in f["val"] for n in _VAL_FIELDS):
                raise StoreError(f"{self.path} is not a validation file of store schema {SCHEMA_VERSION}; delete it")
            g = f["val"]
            self.settings = json.loads(_from_attr(f.attrs["settings"]))
            self.n_levels = sum(name.isdigit() for name in g)
            self._feats = [g[str(k)][()] for k in range(self.n_levels)]
            self.labels = g["labels"][()].astype(np.int64)
            self.masks = g["masks"][()]
            self.kinds = [str(s) for s in g["kinds"].asstr()[()].tolist()]
            self.sources = [str(s) for s in g["sources"].asstr()[()].tolist()]
            self.train_index = g["train_index"][()].astype(np.int64)
        self.n = int(len(self.labels))

    def read(self, k: int, idx: Index = None) -> np.ndarray:
        """(b, C, H, W) float32 rows of level k (the read_level of evaluate.score_cached)."""
        return self._feats[k][_row_list(idx, self.n, f"{self.path}:val/{k}")].astype(np.float32)
