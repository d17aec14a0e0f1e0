"""The training loop: optimizers, the learning-rate schedule and one epoch of every level over cached tokens."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

from edcli.config import TrainConfig
from edcli.engine import autocast
from edcli.errors import ConfigError, TrainingError

LOSS_KEYS = ("rec", "intra1", "intra2", "intra_ent", "inter1", "inter2", "inter_ent")


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The shuffling order of an epoch depends on (seed, epoch) only, so a resumed run sees the same batches."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def make_optimizers(levels: list, mode: str, lr: float) -> list:
    """`reference`: ONE Adam over every level model (the reference); `per-level`: one Adam per level."""
    params = [list(unwrap(m).parameters()) for m in levels]
    if mode == "reference":
        # torch's fused Adam: the same update in one kernel per tensor list, 4x faster on CPU than the loop over
        # tensors (every step touches both levels here); per-level keeps the default loop (bit-exact with before)
        return [torch.optim.Adam([p for ps in params for p in ps], lr=lr, fused=True)]
    if mode == "per-level":
        return [torch.optim.Adam(ps, lr=lr) for ps in params]
    raise ConfigError(f"--optimizer {mode!r}: use reference or per-level")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of --lr at batch `step` (0-based) of `total`: linear warm-up over `warmup` batches, then
    constant or a cosine decay that reaches 0 one batch after the last."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return 1.0


def lr_schedule(cfg: TrainConfig, batches: int) -> Callable[[int], float] | None:
    """The learning rate of batch `step` (0-based over the cfg.epochs epochs of `batches` batches each): --lr times
    lr_factor, the warm-up lasting round(--warmup-epochs * batches) batches. None for a constant --lr without
    warm-up: the optimizers keep the lr they were built with."""
    warmup = round(cfg.warmup_epochs * batches)
    if cfg.lr_schedule == "constant" and not warmup:
        return None
    total = cfg.epochs * batches

    def lr_at(step: int) -> float:
        return cfg.lr * lr_factor(step, total, warmup, cfg.lr_schedule)

    return lr_at


def fit_epoch(
    levels: list,
    optimizers: list,
    feats: list[torch.Tensor],
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
    *,
    ranks=None,
    lr_at: Callable[[int], float] | None = None,
    step0: int = 0,
    on_batch: Callable[[], None] | None = None,
    category: str = "",
    rpath: Path | None = None,
) -> dict[str, float]:
    """Epoch `epoch` (0-based) of train_epoch with the options of `cfg`, in the order of (cfg.seed, epoch): shared
    out over the ranks of `ranks` (a DistInfo) under --strategy ddp, else a shuffle of every row. A non-finite loss
    stops training: TrainingError, naming what the resume state `rpath` keeps."""
    order = None
    if ranks is not None:
        from edcli.distributed import epoch_order

        order = epoch_order(feats[0].shape[0], ranks, cfg.seed, epoch)
    try:
        return train_epoch(
            levels,
            optimizers,
            feats,
            cfg.batch_size,
            epoch_generator(cfg.seed, epoch),
            device,
            cfg.precision,
            cfg.lambda1,
            cfg.lambda2,
            sampler_indices=order,
            optimizer_mode=cfg.optimizer,
            lr_at=lr_at,
            step0=step0,
            on_batch=on_batch,
        )
    except FloatingPointError as exc:
        kept = rpath is not None and rpath.exists()
        keep = f"the last good state (epoch {epoch}) is kept in {rpath}" if kept else "no state was kept"
        raise TrainingError(
            f"{category}: {exc} in epoch {epoch + 1}; training stopped, {keep}. Try a lower --lr or --precision fp32"
        ) from exc


def train_epoch(
    levels: list,
    optimizers: list,
    feats: list[torch.Tensor],
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    precision: str,
    lambda1: float,
    lambda2: float,
    sampler_indices: torch.Tensor | None = None,
    optimizer_mode: str = TrainConfig.optimizer,  # the default of --optimizer ("reference")
    lr_at: Callable[[int], float] | None = None,
    step0: int = 0,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One epoch over cached tokens: per batch, each level in turn gets zero_grad / one backward / step.

    levels: the level modules (possibly DDP-wrapped); feats: per level (N, L, C) tensors (float16 on the CPU).
    optimizer_mode "per-level": optimizers[k] steps level k, gradients removed (set_to_none) before its backward,
    through the attention maps (the unfused step of before, bit for bit).
    "reference": optimizers[0] holds every level and gradients are zero-filled, as torch 1.13's zero_grad(): from
    the second batch on each level's step also gives the other levels a zero-gradient (momentum-only) Adam update.
    lr_at(step) (if given) sets the learning rate of batch step0 + b before its first step.
    Returns the mean loss terms over batches (summed over levels). Raises FloatingPointError on a non-finite loss
    before the step, so the weights stay the last good ones. `on_batch()` is called after each batch (progress).
    """
    from edcli.method.loss import ed_objective

    shared = optimizer_mode == "reference"
    # reference: the fused step (attention + loss terms chunk by chunk, no (L, L) map kept; equal to the maps path
    # within float rounding); per-level: the step edcli had before --optimizer, bit for bit
    branches = "train" if shared else "all"
    N = feats[0].shape[0]
    order = torch.randperm(N, generator=generator) if sampler_indices is None else sampler_indices
    sums = dict.fromkeys(LOSS_KEYS, 0.0)
    n_batches = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if lr_at is not None:
            lr = lr_at(step0 + n_batches)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
        for k, level in enumerate(levels):
            opt = optimizers[0] if shared else optimizers[k]
            module = unwrap(level)
            x = feats[k][idx].to(device, non_blocking=True).to(module.ref.dtype)  # (B, L, C), the model's dtype
            opt.zero_grad(set_to_none=not shared)
            with autocast(device, precision):
                out = level(x, branches=branches)
            terms = ed_objective(out, x, module.dx, module.dy, lambda1, lambda2)
            if not torch.isfinite(terms.total.detach()):
                raise FloatingPointError(f"non-finite loss at level {k}")
            terms.total.backward()
            opt.step()
            for key in LOSS_KEYS:
                sums[key] += float(getattr(terms, key))
        n_batches += 1
        if on_batch is not None:
            on_batch()
    return {k: v / max(1, n_batches) for k, v in sums.items()}
