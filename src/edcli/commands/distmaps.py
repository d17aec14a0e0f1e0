"""`ed distmaps`: the squared row/column index-distance matrices of each level's token grid, as an HDF5 export.

The model computes these matrices itself from its grid; `distmaps.h5` is for inspection and for the reference's
`create_distance_maps.py` users.
"""

from __future__ import annotations

from typing import Any

from edcli.config import BackboneConfig


def run(
    *, store: str, backbone: str | None, image_size: int, levels: tuple[int, ...], grids: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Squared row/column index-distance matrices for each level's token grid (or the given grid sizes)."""
    from edcli.config import check_count
    from edcli.store import write_distmaps

    check_count("--image-size", image_size)
    for g in grids:
        check_count("--grid", g)

    if grids:
        shapes = [(int(g), int(g)) for g in grids]
    else:
        from edcli.backbone import feature_shapes

        shapes = [(h, w) for _, h, w in feature_shapes(backbone or BackboneConfig().name, tuple(levels), image_size)]
    path = write_distmaps(store, shapes)
    return {
        "path": str(path),
        "grids": [f"{h}x{w}" for h, w in shapes],
        "tokens": [h * w for h, w in shapes],
        "bytes": path.stat().st_size,
    }
