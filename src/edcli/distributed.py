"""torch.distributed rank helpers: sharding work by rank, gathering rows and errors, per-rank sample orders; the
contiguous parts of `ed infer --shard I/N` (SLURM array jobs, Kubernetes indexed jobs, torchrun ranks)."""

from __future__ import annotations

from typing import Any

from edcli.errors import DistributedError, EdError, UsageError


def shard(items: list, dist) -> list:
    """This rank's share of `items` (every rank-th one from its own index); all of them when not distributed."""
    return items[dist.rank :: dist.world] if dist.enabled else list(items)


def parse_shard(text: str | None) -> tuple[int, int]:
    """`--shard I/N` -> (I, N), 0 <= I < N (0-based, as SLURM_ARRAY_TASK_ID of --array=0-N-1 and Kubernetes'
    JOB_COMPLETION_INDEX); None -> (0, 1), the whole list."""
    if text is None or text == "":
        return 0, 1
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise UsageError(f"--shard {text}: give I/N, e.g. 0/4 for the first of 4 parts") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text}: I counts from 0 to N-1 (0/{max(n, 1)} .. {max(n, 1) - 1}/{max(n, 1)})")
    return i, n


def part_of(shard: tuple[int, int], dist) -> tuple[int, int]:
    """(part, parts) of this process: shard I of N, split again by torchrun rank r of W into part I*W+r of N*W."""
    i, n = shard
    return (i * dist.world + dist.rank, n * dist.world) if dist.enabled else (i, n)


def block(n: int, part: int, parts: int) -> range:
    """The indices of part `part` of `parts` of a list of n items: contiguous, disjoint, covering 0..n-1, sizes
    differing by at most one, and a function of (n, part, parts) alone, so every process that expands the same
    inputs agrees on it and the parts concatenated in order are the list in order."""
    return range(part * n // parts, (part + 1) * n // parts)


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
