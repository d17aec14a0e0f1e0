"""FeatureFile: read access to a complete feature file, and the row readers it shares with validation files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from edcli.errors import StoreError
from edcli.store.hdf5 import _canon, _from_attr, _open_read
from edcli.store.keys import KEY_FIELDS, SCHEMA_VERSION

_REMEDY = "delete it or rerun `ed features --overwrite`"

Index = None | int | slice | Sequence[int] | np.ndarray


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
    @contextlib.contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        """HDF5's OSError on a read (a chunk whose fletcher32 checksum fails, a truncated file) as a StoreError."""
        try:
            yield
        except OSError as e:
            raise StoreError(f"{self.path} is damaged: {name} cannot be read ({e}); {_REMEDY}") from e

    def damaged(self) -> str | None:
        """Read every dataset once (HDF5 verifies each chunk's fletcher32 checksum): None, or what cannot be read."""
        names: list[str] = []
        self._file.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        for name in names:
            try:
                self._file[name][()]
            except OSError as e:
                return f"{name} fails its checksum or cannot be read ({e})"
        return None

    def _level(self, k: int) -> int:
        if not 0 <= k < self.n_levels:
            raise IndexError(f"level {k} is outside 0..{self.n_levels - 1} of {self.path}")
        return k

    def ref(self, k: int) -> np.ndarray:
        """(C, L) float32 prototype of level k."""
        with self._reading(f"ref/{k}"):
            return self._file[f"ref/{self._level(k)}"][()].astype(np.float32)

    def train(self, k: int, idx: Index = None) -> np.ndarray:
        """(N, C, H, W) float32: all train rows of level k, or those of idx (int, slice, indices, bool mask)."""
        with self._reading(f"train/{k}"):
            return _read_rows(self._file[f"train/{self._level(k)}"], idx, np.float32)

    def test(self, k: int, idx: Index = None) -> np.ndarray:
        """(N, C, H, W) float32 test rows of level k, indexed as train()."""
        with self._reading(f"test/{k}"):
            return _read_rows(self._file[f"test/{self._level(k)}"], idx, np.float32)

    def test_masks(self, idx: Index = None) -> np.ndarray:
        """(N, S, S) uint8 ground-truth masks; rows whose mask_known is False carry no ground truth."""
        with self._reading("test/masks"):
            return _read_rows(self._file["test/masks"], idx, np.uint8)

    def _strings(self, name: str) -> list[str]:
        with self._reading(name):
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
        with self._reading("test/labels"):
            return self._file["test/labels"][()].astype(np.int64)

    @cached_property
    def test_mask_known(self) -> np.ndarray:
        with self._reading("test/mask_known"):
            return self._file["test/mask_known"][()].astype(bool)
