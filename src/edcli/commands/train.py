"""`ed train`: one ED model per category from the cached features, computing missing store entries first.

Categories go one after another, to torchrun ranks (`--strategy categories`), data-parallel over ranks
(`--strategy ddp`), or side by side in `--jobs N` worker processes.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from edcli.config import BackboneConfig, DataConfig, EvalConfig
from edcli.errors import ConfigError, DistributedError, EdError
from edcli.track import NullTracker


def run(data: DataConfig, bb_cfg: BackboneConfig, model_cfg, train_cfg, store: str, out: str,
        resume: bool = False, feature_batch_size: int = 16, num_workers: int = 0, eval_cfg=None,
        track=None) -> list[dict[str, Any]]:
    """Train every selected category and write RUN/checkpoints/<category>.pt and RUN/run.json."""
    from edcli.checkpoint import checkpoint_path
    from edcli.distributed import gather_rows, run_sharded, shard
    from edcli.engine import check_precision, init_distributed, rank_device
    from edcli.features import (
        build_context,
        categories_of,
        ensure_distmaps,
        ensure_features,
    )
    from edcli.store import FeatureFile
    from edcli.training import train_category

    track = track or NullTracker()
    eval_cfg = eval_cfg or EvalConfig()
    _check_train_cfg(model_cfg, train_cfg)
    cats = categories_of(data)
    dist = init_distributed(train_cfg.device)
    device = rank_device(train_cfg.device, dist)
    check_precision(train_cfg.precision, device)
    strategy = "categories" if train_cfg.strategy == "auto" else train_cfg.strategy
    train_cfg = replace(train_cfg, strategy=strategy)
    if strategy == "ddp" and not dist.enabled:
        raise ConfigError("--strategy ddp needs torchrun (e.g. torchrun --nproc-per-node 2 -m edcli train ...)")
    if strategy == "ddp" and len(cats) != 1:
        raise ConfigError(f"--strategy ddp trains ONE category data-parallel; pick one with --category (found {len(cats)})")
    if train_cfg.jobs > 1 and not dist.enabled and len(cats) > 1:
        return run_jobs(data, bb_cfg, model_cfg, train_cfg, store, out, resume, feature_batch_size, eval_cfg, cats, track)
    mine = shard(cats, dist) if strategy == "categories" else cats
    ctx = build_context(data, bb_cfg, train_cfg.device)
    ctx.device = device
    ctx.extractor.to(device)
    if ctx.winfo.random_init:
        track.warn("--random-init: the backbone is untrained (for tests and timing only); recorded in the checkpoint")
    if dist.is_main:
        ensure_distmaps(store, ctx.extractor.grids(data.image_size), track)
    if dist.enabled:  # the other ranks wait for the shared distmaps file
        import torch.distributed as tdist

        tdist.barrier()
    configs = {"data": data.to_dict(), "backbone": bb_cfg.to_dict(), "model": model_cfg.to_dict(),
               "train": train_cfg.to_dict(), "eval": eval_cfg.to_dict(), "store": str(Path(store).resolve())}
    if dist.is_main:
        from edcli.files import write_text

        write_text(Path(out) / "run.json", json.dumps(configs, indent=2))

    def one(cat: str) -> dict[str, Any]:
        if strategy == "ddp":  # one writer for the shared store file, the others wait for it
            import torch.distributed as tdist

            if dist.is_main:
                ensure_features(ctx, store, cat, feature_batch_size, num_workers, track)
            tdist.barrier()
        path = ensure_features(ctx, store, cat, feature_batch_size, num_workers, track)
        meta = dict(ctx.meta, category=cat)
        with FeatureFile.open(path, meta) as ff:
            ff.path = path
            return train_category(ff, cat, meta, configs, model_cfg, train_cfg, checkpoint_path(out, cat), device,
                                  track, resume=resume, eval_cfg=eval_cfg, dist=dist)

    rows, err = run_sharded(mine, dist, one)
    if dist.enabled and strategy == "categories":
        return gather_rows(rows, dist, order=cats, error=err)
    if err:
        raise DistributedError(f"rank {dist.rank}: {err}")
    return rows


def _check_train_cfg(model_cfg, cfg) -> None:
    from edcli.config import ARCHS, LR_SCHEDULES, OPTIMIZERS, SELECTIONS, WIDTHS

    if model_cfg.arch not in ARCHS:
        raise ConfigError(f"--arch {model_cfg.arch!r}: use ed or fod")
    if cfg.select not in SELECTIONS:
        raise ConfigError(f"--select {cfg.select!r}: use one of {', '.join(SELECTIONS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ConfigError("--epochs and --batch-size must be at least 1 and --lr positive")
    if cfg.select != "last" and cfg.eval_every < 1:
        raise ConfigError(f"--select {cfg.select} picks an epoch by its test metrics: add --eval-every N")
    if cfg.strategy not in ("auto", "categories", "ddp"):
        raise ConfigError(f"--strategy {cfg.strategy!r}: use categories or ddp")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer {cfg.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"--lr-schedule {cfg.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
    if not 0 <= cfg.warmup_epochs <= cfg.epochs:
        raise ConfigError(f"--warmup-epochs {cfg.warmup_epochs:g}: use 0 to --epochs ({cfg.epochs})")
    if model_cfg.width not in WIDTHS:
        raise ConfigError(f"model width {model_cfg.width!r}: use one of {', '.join(WIDTHS)} or explicit --d-model")


# ---------------------------------------------------------------------------------------------- --jobs N


def _job(args: tuple) -> list[dict[str, Any]]:
    """One worker process of `ed train --jobs N`: trains its categories one after another."""
    data, bb_cfg, model_cfg, train_cfg, store, out, resume, fbs, eval_cfg, device, threads = args
    import torch

    torch.set_num_threads(threads)
    cfg = replace(train_cfg, jobs=1, device=device)
    return run(data, bb_cfg, model_cfg, cfg, store, out, resume, fbs, 0, eval_cfg, NullTracker())


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
        device = f"cuda:{j % n_gpu}" if n_gpu > 1 else str(base) if base.type != "cpu" else "cpu"
        d = replace(data, categories=tuple(cats[j::jobs]))
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
