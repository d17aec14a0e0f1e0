"""The feature identity: what makes two sets of pooled backbone features the same numbers, as one typed value.

Built once where the backbone is built (features.FeatureContext), stored flat in the feature store's attributes,
in the checkpoint (`Checkpoint.backbone`, with the model's channels and grids beside it) and in the export's
metadata, and read back with `from_dict`; the store key is `key()` over the fields that change the numbers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from edcli.errors import ConfigError

# the fields that change the numbers (mean/std follow from the backbone; provenance fields do not)
KEY_FIELDS = ("backbone", "weights_sha256", "levels", "image_size", "resize_mode")


@dataclass(frozen=True)
class FeatureIdentity:
    backbone: str  # timm model name
    weights_sha256: str  # of the weights actually loaded
    levels: tuple[int, ...]  # feature_info indices
    image_size: int  # S: square model input
    resize_mode: str  # "squash" or "crop" (data.layouts.resize_mode)
    mean: tuple[float, ...]  # input normalisation of the weights
    std: tuple[float, ...]
    weights_source: str | None = None  # where the weights came from (a path, a package, timm's cache)
    random_init: bool = False  # --random-init: timing and tests only, recorded in every artefact

    def __post_init__(self):  # plain, hashable values whatever the source (lists, numpy scalars, HDF5 attrs)
        object.__setattr__(self, "levels", tuple(int(x) for x in self.levels))
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "mean", tuple(float(x) for x in self.mean))
        object.__setattr__(self, "std", tuple(float(x) for x in self.std))
        object.__setattr__(self, "random_init", bool(self.random_init))

    def to_dict(self) -> dict[str, Any]:
        """JSON- and HDF5-ready: tuples as lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureIdentity:
        """From a store file's attributes, a checkpoint's `backbone` or export metadata (other keys ignored)."""
        names = {f.name for f in fields(cls)}
        missing = [k for k in (*KEY_FIELDS, "mean", "std") if k not in d]
        if missing:
            raise ConfigError(f"feature identity lacks {', '.join(missing)}; the file was not written by edcli")
        return cls(**{k: v for k, v in d.items() if k in names})

    def key(self) -> str:
        """16 hex chars of sha256 over canonical JSON of the KEY_FIELDS (the store's file name)."""
        return identity_key(self.to_dict())

    def differences(self, other: FeatureIdentity) -> list[str]:
        """'name: mine vs theirs' for each number-changing field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in KEY_FIELDS if mine[k] != theirs[k]]


def identity_key(values: dict[str, Any]) -> str:
    """The key over the KEY_FIELDS of plain values (lists, ints, strings) in `values`."""
    blob = json.dumps({k: values[k] for k in KEY_FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
