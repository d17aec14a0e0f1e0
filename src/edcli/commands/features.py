"""`ed features`: per category, prototypes and cached pooled features of the train and test images."""

from __future__ import annotations

from typing import Any

from edcli.config import BackboneConfig, DataConfig
from edcli.files import require_folder, run_lock
from edcli.track import NullTracker


def run(
    *,
    data: DataConfig,
    bb_cfg: BackboneConfig,
    store: str,
    device: str = "auto",
    batch_size: int = 16,
    overwrite: bool = False,
    num_workers: int = 0,
    track=None,
) -> list[dict[str, Any]]:
    """Run the frozen backbone once per category (under torchrun: this rank's categories)."""
    from edcli.config import check_count
    from edcli.distributed import gather_rows, run_sharded, shard
    from edcli.engine import init_distributed
    from edcli.features import (
        build_context,
        categories_of,
        check_image_size,
        extract_category,
    )
    from edcli.store import features_path

    track = track or NullTracker()
    require_folder(store, "--store")
    check_count("--batch-size", batch_size)
    check_count("--num-workers", num_workers, 0)
    cats = categories_of(data)
    dist = init_distributed(device)
    ctx = build_context(data, bb_cfg, device)
    S = data.image_size
    check_image_size(
        [(c, h, w) for c, (h, w) in zip(ctx.extractor.channels, ctx.extractor.grids(S))],
        S,
        batch_size,
        ctx.device,
        backbone=bb_cfg.name,
    )
    if ctx.winfo.random_init:
        track.warn("--random-init: features come from an untrained backbone (for tests and timing only)")

    def one(cat: str) -> dict[str, Any]:
        # one writer per store entry folder (STORE/features/<dataset>/<category>) for the category's extraction
        entry = features_path(store, data.dataset, cat, dict(ctx.meta, category=cat)).parent
        with run_lock(entry, "ed features", "--store"):
            return extract_category(ctx, store, cat, batch_size, num_workers, track, overwrite)

    rows, err = run_sharded(shard(cats, dist), dist, one)
    return gather_rows(rows, dist, order=cats, error=err) if dist.enabled else rows
