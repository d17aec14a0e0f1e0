"""torch.distributed rank helpers: sharding work by rank, gathering rows and errors, per-rank sample orders."""

from __future__ import annotations

from typing import Any

from edcli.errors import DistributedError, EdError


def shard(items: list, dist) -> list:
    """This rank's share of `items` (every rank-th one from its own index); all of them when not distributed."""
    return items[dist.rank :: dist.world] if dist.enabled else list(items)


def gather_rows(
    rows: list[dict[str, Any]], dist, order: list[str] | None = None, key: str | None = None, error: str | None = None
) -> list[dict[str, Any]]:
    """All ranks exchange their rows (and errors); every rank gets the merged list in a stable order.

    A failure on any rank becomes a DistributedError on every rank, naming the rank and its message, so the
    whole torchrun job exits non-zero while the other ranks' completed files stay as written.
    """
    import torch.distributed as tdist

    gathered: list = [None] * dist.world
    tdist.all_gather_object(gathered, {"rank": dist.rank, "rows": rows, "error": error})
    errors = [f"rank {g['rank']}: {g['error']}" for g in gathered if g["error"]]
    if errors:
        raise DistributedError("; ".join(errors))
    merged = [r for g in gathered for r in g["rows"]]
    if order is not None:
        pos = {c: i for i, c in enumerate(order)}
        merged.sort(key=lambda r: pos.get(r.get("category"), len(pos)))
    elif key is not None:
        merged.sort(key=lambda r: r[key])
    return merged


def run_sharded(items: list, dist, work) -> tuple[list[dict[str, Any]], str | None]:
    """Run work(item) for this rank's items; an EdError stops this rank and is returned for gather_rows."""
    rows = []
    for item in items:
        try:
            rows.append(work(item))
        except EdError as exc:
            if not dist.enabled:
                raise
            return rows, str(exc)
    return rows, None


def epoch_order(n: int, dist, seed: int, epoch: int):
    """This rank's sample order for an epoch: torch's DistributedSampler (shuffled by seed and epoch, padded)."""
    import torch
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)
