"""`ed train`: one ED model per category from the cached features, computing missing store entries first.

Categories go one after another, to torchrun ranks (`--strategy categories`), data-parallel over ranks
(`--strategy ddp`), or side by side in `--jobs N` worker processes.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from edcli.config import BackboneConfig, DataConfig, EvalConfig
from edcli.errors import ConfigError, DistributedError, EdError, TrainingError
from edcli.track import NullTracker


def run(
    *,
    data: DataConfig,
    bb_cfg: BackboneConfig,
    model_cfg,
    train_cfg,
    store: str,
    out: str,
    resume: bool = False,
    feature_batch_size: int = 16,
    num_workers: int = 0,
    eval_cfg=None,
    track=None,
    overwrite: bool = False,
    claim: bool = True,
) -> list[dict[str, Any]]:
    """Train every selected category and write RUN/checkpoints/<category>.pt and RUN/run.json.

    A run folder that holds checkpoints is refused unless `overwrite` (which removes them and the run's results) or
    `resume`; `claim=False` skips that check (the `--jobs` workers: their parent made it).
    """
    track = track or NullTracker()
    if claim:  # the first line, before torch is imported (seconds): what starts, with which settings
        track.log(start_line(data, bb_cfg, train_cfg, out, resume))
        from edcli.files import require_folder

        require_folder(out, "--out")  # one line before any work, not "File exists" from a mkdir later
        require_folder(store, "--store")
    from edcli.checkpoint import checkpoint_path, claim_run_folder
    from edcli.config import check_count
    from edcli.distributed import gather_rows, run_sharded, shard
    from edcli.engine import check_precision, engine_settings, init_distributed, rank_device
    from edcli.features import (
        build_context,
        categories_of,
        ensure_features,
    )
    from edcli.store import FeatureFile
    from edcli.training import train_category
    from edcli.training.resume import request, resume_refusals
    from edcli.validation import ensure_validation

    eval_cfg = eval_cfg or EvalConfig()
    _check_train_cfg(train_cfg)
    check_count("--num-workers", num_workers, 0)
    cats = categories_of(data)
    dist = init_distributed(train_cfg.device)
    device = rank_device(train_cfg.device, dist)
    check_precision(train_cfg.precision, device)
    strategy = "categories" if train_cfg.strategy == "auto" else train_cfg.strategy
    train_cfg = replace(train_cfg, strategy=strategy)
    if strategy == "ddp" and not dist.enabled:
        raise ConfigError("--strategy ddp needs torchrun (e.g. torchrun --nproc-per-node 2 -m edcli train ...)")
    if strategy == "ddp" and len(cats) != 1:
        raise ConfigError(
            f"--strategy ddp trains ONE category data-parallel; pick one with --category (found {len(cats)})"
        )
    from edcli.backbone import feature_shapes

    # shapes from a dry run on the meta device: a refused size or width costs no weights and no allocation
    _check_shapes(
        feature_shapes(bb_cfg.name, tuple(bb_cfg.levels), data.image_size), data, bb_cfg, model_cfg, train_cfg, device
    )
    asked = request(model_cfg, data.image_size, bb_cfg.name, bb_cfg.levels, eval_cfg.score)
    if claim and resume and not overwrite:  # every refusal before anything is written (run.json included)
        refused = resume_refusals(out, cats, train_cfg, asked)
        if refused:
            raise TrainingError("; ".join(refused))
    with contextlib.ExitStack() as lock:
        if claim:  # one writer per run folder, for the command's life (the --jobs workers run under it)
            _lock_run_folder(lock, out, dist)
            removed = claim_run_folder(out, cats, overwrite, resume, remove=dist.is_main)
            if removed:
                track.log(f"--overwrite: removed {', '.join(removed)} from {out}")
        if train_cfg.jobs > 1 and not dist.enabled and len(cats) > 1:
            return run_jobs(
                data, bb_cfg, model_cfg, train_cfg, store, out, resume, feature_batch_size, eval_cfg, cats, track
            )
        mine = shard(cats, dist) if strategy == "categories" else cats
        ctx = build_context(data, bb_cfg, train_cfg.device)
        ctx.device = device
        ctx.extractor.to(device)
        if ctx.winfo.random_init:
            track.warn(
                "--random-init: the backbone is untrained (for tests and timing only); recorded in the checkpoint"
            )
        if dist.enabled:  # the other ranks wait until rank 0's --overwrite removals (claim_run_folder) are done
            import torch.distributed as tdist

            tdist.barrier()
        configs = {
            "data": data.to_dict(),
            "backbone": bb_cfg.to_dict(),
            "model": model_cfg.to_dict(),
            "train": train_cfg.to_dict(),
            "eval": eval_cfg.to_dict(),
            "store": str(Path(store).resolve()),
            "selection": _selection_rule(train_cfg),
            "request": asked,  # what --resume compares (edcli.training.resume)
            "engine": engine_settings(device),  # how fp32 matrix products ran (TF32 on a GPU)
        }
        if dist.is_main:
            from edcli.files import write_text

            write_text(Path(out) / "run.json", json.dumps(configs, indent=2))

        def one(cat: str) -> dict[str, Any]:
            if strategy == "ddp":  # one writer for the shared store file, the others wait for it
                import torch.distributed as tdist

                if dist.is_main:
                    path = ensure_features(ctx, store, cat, feature_batch_size, num_workers, track)
                    if train_cfg.select == "validation":
                        with FeatureFile.open(path, dict(ctx.meta, category=cat)) as ff:
                            ensure_validation(ctx, store, cat, ff, train_cfg, track, feature_batch_size)
                tdist.barrier()
            path = ensure_features(ctx, store, cat, feature_batch_size, num_workers, track)
            meta = dict(ctx.meta, category=cat)
            with FeatureFile.open(path, meta) as ff:
                ff.path = path
                val = (
                    ensure_validation(ctx, store, cat, ff, train_cfg, track, feature_batch_size)
                    if train_cfg.select == "validation"
                    else None
                )
                return train_category(
                    ff,
                    cat,
                    meta,
                    configs,
                    model_cfg,
                    train_cfg,
                    checkpoint_path(out, cat),
                    device,
                    track,
                    resume=resume,
                    eval_cfg=eval_cfg,
                    dist=dist,
                    validation=val,
                )

        rows, err = run_sharded(mine, dist, one)
        if dist.enabled and strategy == "categories":
            return gather_rows(rows, dist, order=cats, error=err)
        if err:
            raise DistributedError(f"rank {dist.rank}: {err}")
        return rows


def _lock_run_folder(stack: contextlib.ExitStack, out: str, dist) -> None:
    """Lock --out (`files.run_lock`) until `stack` closes, or refuse at once when another command holds it. Under
    torchrun rank 0 holds it for the job (every rank writes there, all started together); the others learn
    whether it got it, so a refused job stops on every rank instead of waiting at a barrier."""
    from edcli.files import run_lock

    err = None
    if dist.is_main:
        try:
            stack.enter_context(run_lock(out, "ed train"))
        except EdError as exc:
            if not dist.enabled:
                raise
            err = exc
    if dist.enabled:
        import torch.distributed as tdist

        got: list = [None] * dist.world
        tdist.all_gather_object(got, None if err is None else str(err))
        if err is not None:
            raise err
        if got[0]:
            raise DistributedError(f"rank 0: {got[0]}")


def start_line(data: DataConfig, bb_cfg: BackboneConfig, cfg, out: str, resume: bool) -> str:
    cats = ", ".join(data.categories) if data.categories else "every category"
    jobs = f", {cfg.jobs} jobs" if cfg.jobs > 1 else ""
    return (
        f"ed train: {cats} of {data.data_path} ({data.dataset}) -> {out}{' (resuming)' if resume else ''}; "
        f"{bb_cfg.name} at {data.image_size} px, {_plural(cfg.epochs, 'epoch')}, batch {cfg.batch_size}, "
        f"lr {cfg.lr:g}, seed {cfg.seed}, device {cfg.device}, {cfg.precision}{jobs}"
    )


def _check_shapes(shapes, data, bb_cfg, model_cfg, cfg, device) -> None:
    """Before any allocation: grids of at least 2x2, the attention maps within memory, widths that split in heads."""
    from edcli.config import level_widths
    from edcli.errors import UsageError
    from edcli.features import check_image_size

    check_image_size(shapes, data.image_size, cfg.batch_size, device, model_cfg, bb_cfg.name)
    if model_cfg.d_model and len(model_cfg.d_model) != len(shapes):
        raise UsageError(
            f"--d-model {','.join(map(str, model_cfg.d_model))}: give one width per level "
            f"({len(shapes)} levels: --levels {','.join(map(str, bb_cfg.levels))})"
        )
    for d in level_widths([c for c, _, _ in shapes], model_cfg):
        if d % model_cfg.heads:
            raise UsageError(
                f"--heads {model_cfg.heads}: the model width {d} does not split into {model_cfg.heads} "
                "heads; use a --heads that divides it (e.g. 8) or set --d-model"
            )


def _check_train_cfg(cfg) -> None:
    """Combinations of values (each value alone was checked when its config was built)."""
    if cfg.select not in ("last", "validation") and cfg.eval_every < 1:
        raise ConfigError(f"--select {cfg.select} picks an epoch by its test metrics: add --eval-every N")
    if cfg.warmup_epochs > cfg.epochs:
        raise ConfigError(f"--warmup-epochs {cfg.warmup_epochs:g}: use 0 to --epochs ({cfg.epochs})")


def _selection_rule(cfg) -> dict[str, Any]:
    """How each category's epoch is chosen, for run.json (the chosen epochs are in the checkpoints and metrics)."""
    how = {
        "last": "the last epoch",
        "validation": f"the best validation epoch (--val-fraction {cfg.val_fraction:g} of the normal train images "
        "and their synthetic-defect copies); no test labels",
    }
    return {
        "select": cfg.select,
        "test_selected": cfg.select not in how,
        "how": how.get(cfg.select, f"{cfg.select}: the best epoch on the TEST set (test-selected)"),
    }


# ---------------------------------------------------------------------------------------------- --jobs N


_RELAY = None  # in a --jobs worker: the queue its progress goes to (set by the pool's initializer)


def _init_worker(queue) -> None:
    global _RELAY
    _RELAY = queue


def _job(args: tuple) -> list[dict[str, Any]]:
    """One worker process of `ed train --jobs N`: trains its categories one after another, relaying its progress."""
    from edcli.track import QueueTracker

    worker, data, bb_cfg, model_cfg, train_cfg, store, out, resume, fbs, eval_cfg, device, threads = args
    track = QueueTracker(_RELAY, worker) if _RELAY is not None else NullTracker()
    track.log(f"started (pid {os.getpid()}, {device}); loading torch and the backbone")
    import torch

    torch.set_num_threads(threads)
    cfg = replace(train_cfg, jobs=1, device=device)
    return run(
        data=data,
        bb_cfg=bb_cfg,
        model_cfg=model_cfg,
        train_cfg=cfg,
        store=store,
        out=out,
        resume=resume,
        feature_batch_size=fbs,
        num_workers=0,
        eval_cfg=eval_cfg,
        track=track,
        claim=False,
    )


def run_jobs(
    data, bb_cfg, model_cfg, train_cfg, store, out, resume, fbs, eval_cfg, cats: list[str], track
) -> list[dict]:
    """`--jobs N` without torchrun: N spawned processes, categories dealt round-robin, one GPU each when several
    exist."""
    import concurrent.futures as cf
    import multiprocessing as mp
    import threading

    import torch

    from edcli.engine import resolve_device
    from edcli.track import relay

    jobs = min(train_cfg.jobs, len(cats))
    base = resolve_device(train_cfg.device)
    n_gpu = torch.cuda.device_count() if base.type == "cuda" else 0
    threads = max(1, (os.cpu_count() or 1) // jobs)
    work = []
    for j in range(jobs):
        device = f"cuda:{j % n_gpu}" if n_gpu > 1 else str(base) if base.type != "cpu" else "cpu"
        d = replace(data, categories=tuple(cats[j::jobs]))
        work.append((j + 1, d, bb_cfg, model_cfg, train_cfg, store, out, resume, fbs, eval_cfg, device, threads))
    track.log(
        f"training {len(cats)} categories in {jobs} worker processes ({threads} CPU thread(s) each): "
        + "; ".join(f"worker {w[0]}: {', '.join(w[1].categories)}" for w in work)
    )
    rows: list[dict[str, Any]] = []
    errors = []
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    # the workers' progress (bars, epoch lines, logs) is replayed on this process's tracker by one thread
    relay_thread = threading.Thread(
        target=relay, args=(queue, track, {w[0]: f"worker {w[0]}" for w in work}), daemon=True
    )
    relay_thread.start()
    try:
        with cf.ProcessPoolExecutor(
            max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(queue,)
        ) as pool:
            futures = {pool.submit(_job, w): w[1].categories for w in work}
            for fut in cf.as_completed(futures):
                try:
                    got = fut.result()
                    rows.extend(got)
                    for r in got:
                        track.log(f"{r['category']}: trained in {r['seconds']} s")
                except EdError as exc:
                    errors.append(f"{', '.join(futures[fut])}: {exc}")
    finally:
        queue.put(None)
        relay_thread.join(timeout=10)
    if errors:
        raise DistributedError("; ".join(errors))
    pos = {c: i for i, c in enumerate(cats)}
    return sorted(rows, key=lambda r: pos[r["category"]])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
