"""Distance matrices: STORE/distmaps.h5, /{H}x{W}/dx and /{H}x{W}/dy float32 (L, L).

The model computes these matrices itself from its grid (`grid_distances`) and never reads this file: it is an
export for inspection and for users of the reference's `create_distance_maps.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edcli.errors import StoreError
from edcli.method.prior import grid_distances
from edcli.store.hdf5 import _atomic_h5, _open_read

DISTMAPS_NAME = "distmaps.h5"
_DIST_REMEDY = "delete it; it is an export the model never reads, and `ed distmaps` writes it again"


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
