"""Feature-file keys and paths: STORE/features/{dataset}/{category}/{key}.h5, key over the KEY_FIELDS."""

from __future__ import annotations

from pathlib import Path

from edcli.errors import StoreError
from edcli.files import TMP_MARK, is_temp
from edcli.identity import KEY_FIELDS, identity_key
from edcli.store.hdf5 import _canon

SCHEMA_VERSION = 1

FEATURES_DIR = "features"


def feature_key(meta: dict) -> str:
    """edcli.identity's key of a store file's metadata (FeatureIdentity.key(), from the KEY_FIELDS only)."""
    missing = [k for k in KEY_FIELDS if k not in meta]
    if missing:
        raise StoreError(f"feature metadata lacks {', '.join(missing)}; cannot name the store file")
    return identity_key({k: _canon(meta[k]) for k in KEY_FIELDS})


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
