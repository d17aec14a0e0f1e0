"""Scale-out helpers: rank sharding and gathering under torchrun, and `--jobs N` worker processes."""
from __future__ import annotations

import os
from typing import Any, Optional

from edcli.errors import DistributedError, EdError


def gather_rows(rows: list[dict[str, Any]], dist, order: Optional[list[str]] = None, key: Optional[str] = None,
                error: Optional[str] = None) -> list[dict[str, Any]]:
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


def run_sharded(items: list, dist, work) -> tuple[list[dict[str, Any]], Optional[str]]:
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


def _job(args: tuple) -> list[dict[str, Any]]:
    """One worker process of `ed train --jobs N`: trains its categories one after another."""
    data, bb_cfg, model_cfg, train_cfg, store, out, resume, fbs, eval_cfg, device, threads = args
    import torch

    from edcli.pipeline import NullTracker, run_train

    torch.set_num_threads(threads)
    cfg = type(train_cfg)(**{**train_cfg.to_dict(), "jobs": 1, "device": device})
    return run_train(data, bb_cfg, model_cfg, cfg, store, out, resume, fbs, 0, eval_cfg, NullTracker())


def run_jobs(data, bb_cfg, model_cfg, train_cfg, store, out, resume, fbs, eval_cfg, cats: list[str], track) -> list[dict]:
    """`--jobs N` without torchrun: N spawned processes, categories dealt round-robin, one GPU each when several exist."""
    import concurrent.futures as cf
    import multiprocessing as mp

    import torch

    from edcli.engine import resolve_device

    jobs = min(train_cfg.jobs, len(cats))
    base = resolve_device(train_cfg.device)
    n_gpu = torch.cuda.device_count() if base.type == "cuda" else 0
    threads = max(1, (os.cpu_count() or 1) // jobs)
    work = []
    for j in range(jobs):
        mine = tuple(cats[j::jobs])
        device = f"cuda:{j % n_gpu}" if n_gpu > 1 else str(base) if base.type != "cpu" else "cpu"
        d = type(data)(**{**data.to_dict(), "categories": mine})
        work.append((d, bb_cfg, model_cfg, train_cfg, store, out, resume, fbs, eval_cfg, device, threads))
    track.log(f"training {len(cats)} categories in {jobs} worker processes ({threads} CPU thread(s) each)")
    rows: list[dict[str, Any]] = []
    errors = []
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_job, w): w[0].categories for w in work}
        for fut in cf.as_completed(futures):
            try:
                got = fut.result()
                rows.extend(got)
                for r in got:
                    track.log(f"{r['category']}: trained in {r['seconds']} s")
            except EdError as exc:
                errors.append(f"{', '.join(futures[fut])}: {exc}")
    if errors:
        raise DistributedError("; ".join(errors))
    pos = {c: i for i, c in enumerate(cats)}
    return sorted(rows, key=lambda r: pos[r["category"]])
