"""FeatureWriter: writes one complete feature file of a category (attrs, /ref/{k}, /train/..., /test/...)."""

from __future__ import annotations

import datetime
from pathlib import Path

import h5py
import numpy as np

from edcli.errors import StoreError
from edcli.store.hdf5 import (
    _STR,
    _create_temp,
    _deferring,
    _discard,
    _finish,
    _sigint_deferred,
    _to_attr,
    _write_failed,
)
from edcli.store.keys import SCHEMA_VERSION
from edcli.version import __version__

_WRITER_ATTRS = ("schema_version", "edcli_version", "created")  # set by FeatureWriter, never taken from meta


class FeatureWriter:
    """Writes one complete feature file atomically: a temp file in the same folder, os.replace on success,
    the temp file removed on any exception. Use as a context manager; `commit()` happens on clean __exit__.

    Rows may come in any order and in any batch sizes, but commit fails (and saves nothing) unless every train
    and test row and every level's ref was written. Features are stored as float16 without compression by
    default: float16 activations barely compress (gzip saves a few percent) while every training run reads all
    of them, so a filter would slow each read several-fold. Masks (mostly zeros) are gzip-compressed per image.
    Every numeric dataset carries HDF5's fletcher32 checksum (per chunk, cheap next to the read itself), so a
    damaged chunk is an error on read, never wrong numbers; variable-length strings cannot take the filter.
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
                    fletcher32=bool(n),
                )
            g.create_dataset("paths", shape=(n,), dtype=_STR)
        g = f["test"]
        n = self.n_test
        # an empty dataset has no chunk to check (and chunking needs a non-zero extent): no filters there
        g.create_dataset("labels", shape=(n,), dtype=np.int8, chunks=(n,) if n else None, fletcher32=bool(n))
        g.create_dataset(
            "masks",
            shape=(n, S, S),
            dtype=np.uint8,
            chunks=(1, S, S) if n else None,
            compression="gzip" if n else None,
            compression_opts=1 if n else None,
            fletcher32=bool(n),
        )
        g.create_dataset("defect_types", shape=(n,), dtype=_STR)
        g.create_dataset("mask_known", shape=(n,), dtype=bool, chunks=(n,) if n else None, fletcher32=bool(n))
        g = f.create_group("ref")
        for k, (C, H, W) in enumerate(self.shapes):
            g.create_dataset(str(k), shape=(C, H * W), dtype=np.float32, chunks=(C, H * W), fletcher32=True)

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
