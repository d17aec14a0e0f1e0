"""Validation sets: the held-out features and synthetic-defect copies of `ed train --select validation`."""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edcli.errors import StoreError
from edcli.store.hdf5 import _STR, _atomic_h5, _canon, _from_attr, _open_read
from edcli.store.keys import SCHEMA_VERSION, _component, feature_key
from edcli.store.reader import Index, _row_list
from edcli.version import __version__

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
