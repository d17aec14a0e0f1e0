"""Training one category from its cached features: calibration split, epochs, resume, selection, checkpoint."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edcli.checkpoint import Checkpoint, atomic_torch_save, resume_path, save_checkpoint
from edcli.config import EvalConfig, ModelConfig, TrainConfig
from edcli.engine import (
    epoch_generator,
    lr_factor,
    make_optimizers,
    seed_everything,
    train_epoch,
    unwrap,
)
from edcli.errors import TrainingError
from edcli.method.scoring import calibrate, calibration_split
from edcli.track import NullTask


def _state(levels) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().cpu().clone() for k, v in unwrap(m).state_dict().items()} for m in levels]


def _epoch(
    category: str,
    epoch: int,
    levels,
    optims,
    feats,
    fit,
    cfg: TrainConfig,
    device,
    dist,
    ddp: bool,
    rpath: Path,
    on_batch,
    lr_at=None,
    step0: int = 0,
) -> dict[str, float]:
    """One epoch of every level; a non-finite loss stops training with what was kept."""
    gen = epoch_generator(cfg.seed, epoch)
    order = None
    if ddp:
        from edcli.distributed import epoch_order

        order = epoch_order(len(fit), dist, cfg.seed, epoch)
    try:
        return train_epoch(
            levels,
            optims,
            feats,
            cfg.batch_size,
            gen,
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
        keep = f"the last good state (epoch {epoch}) is kept in {rpath}" if rpath.exists() else "no state was kept"
        raise TrainingError(
            f"{category}: {exc} in epoch {epoch + 1}; training stopped, {keep}. Try a lower --lr or --precision fp32"
        ) from exc


def train_category(
    ff,
    category: str,
    meta: dict[str, Any],
    configs: dict[str, dict],
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    ckpt: Path,
    device,
    track,
    resume: bool = False,
    eval_cfg: EvalConfig = EvalConfig(),
    dist=None,
    validation=None,
) -> dict[str, Any]:
    """Train one ED model per level on the cached train features of one category and write its checkpoint.
    validation: the validation set of `--select validation` (validation.ensure_validation), held out of training."""
    from edcli.evaluate import category_metrics, masks_if_known, read_from, score_cached
    from edcli.method.model import build_ed_model

    start_time = time.perf_counter()
    ddp = dist is not None and dist.enabled and cfg.strategy == "ddp"
    writer = not ddp or dist.is_main  # under DDP rank 0 alone writes; with categories per rank each rank writes its own
    seed_everything(cfg.seed)
    n = ff.n_train
    fit, cal = calibration_split(n, cfg.calib_fraction, cfg.seed)
    if validation is not None:  # the validation images are neither trained on nor in the calibration hold-out
        fit = np.setdiff1d(fit, validation.train_index)
    feats = []  # per level (N_fit, L, C) float16 tokens on the CPU: half the memory of float32
    refs = []
    for k in range(ff.n_levels):
        f = torch.from_numpy(ff.train(k))  # (N, C, H, W) float16
        f = f[torch.from_numpy(fit)]
        refs.append(ff.ref(k) if len(fit) == n else f.double().mean(0).flatten(1).float().numpy())  # (C, L)
        feats.append(f.flatten(2).transpose(1, 2).contiguous())  # (N_fit, L, C)
    channels = [int(f.shape[2]) for f in feats]
    grids = [(int(h), int(w)) for _, h, w in ff.shapes]
    seed_everything(cfg.seed)
    model = build_ed_model(channels, grids, [torch.from_numpy(np.ascontiguousarray(r)) for r in refs], model_cfg).to(
        device
    )
    levels: list = list(model.levels)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        levels = [DDP(m, device_ids=[device.index] if device.type == "cuda" else None) for m in levels]
    optims = make_optimizers(levels, cfg.optimizer, cfg.lr)
    # The checkpoint records the widths built, so a later default cannot change how it loads.
    configs = dict(configs, model=dict(configs["model"], d_model=[unwrap(m).d_model for m in levels]))
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    start_epoch = 0
    rpath = resume_path(ckpt)
    if resume and rpath.exists():
        state = torch.load(rpath, map_location="cpu", weights_only=True)
        same = (
            "batch_size",
            "lr",
            "seed",
            "lambda1",
            "lambda2",
            "calib_fraction",
            "optimizer",
            "lr_schedule",
            "warmup_epochs",
            "epochs",
        )
        legacy = {"optimizer": "per-level", "lr_schedule": "constant", "warmup_epochs": 0.0}  # older resume states
        diff = [
            k
            for k in same
            if state["train"].get(k, legacy.get(k)) != cfg.to_dict()[k]
            and (k != "epochs" or cfg.lr_schedule != "constant")
        ]  # a cosine's length is part of it
        if diff:
            was = ", ".join(f"--{k.replace('_', '-')} {state['train'].get(k)}" for k in diff)
            raise TrainingError(
                f"{category}: cannot resume {rpath}: it was trained with {was}; "
                "use the same options, or drop --resume to start again"
            )
        if state.get("validation") != (validation.settings if validation is not None else None):
            raise TrainingError(
                f"{category}: cannot resume {rpath}: it was trained with another validation hold-out "
                "(--select validation, --val-fraction); use the same options, or drop --resume"
            )
        for m, sd in zip(levels, state["state_dicts"]):
            unwrap(m).load_state_dict(sd)
        if len(state["optimizers"]) != len(optims):
            raise TrainingError(
                f"{category}: {rpath} holds {len(state['optimizers'])} optimizer state(s), this "
                f"--optimizer {cfg.optimizer} has {len(optims)}; drop --resume to start again"
            )
        for o, sd in zip(optims, state["optimizers"]):
            o.load_state_dict(sd)
        if cfg.optimizer == "reference":  # the run kept zero-filled gradients between batches: so does its resume
            for o in optims:
                for p in o.state:
                    p.grad = torch.zeros_like(p)
        start_epoch, history, best = int(state["epoch"]), list(state["history"]), dict(state.get("best", {}))
        track.log(f"{category}: resuming after epoch {start_epoch} from {rpath}")
    elif resume:
        track.log(f"{category}: nothing to resume at {rpath}; training from the start")

    if ddp and dist.is_main:
        track.log(
            f"{category}: data-parallel over {dist.world} ranks, effective batch size "
            f"{cfg.batch_size * dist.world} ({cfg.batch_size} per rank)"
        )
    test_masks = masks_if_known(ff) if cfg.eval_every else None
    terms: dict[str, float] = {}
    epochs = range(start_epoch, cfg.epochs)
    rows_per_epoch = len(fit) if not ddp else -(-len(fit) // dist.world)  # DistributedSampler pads to equal shares
    batches = -(-rows_per_epoch // cfg.batch_size)  # per epoch (per rank)
    warmup = round(cfg.warmup_epochs * batches)
    lr_at = None
    if cfg.lr_schedule != "constant" or warmup:

        def lr_at(step: int) -> float:
            return cfg.lr * lr_factor(step, cfg.epochs * batches, warmup, cfg.lr_schedule)

    if epochs:
        held = f"{len(cal)} held out for the threshold" + (f", {validation.n} for validation" if validation else "")
        track.log(
            f"{category}: training on {len(fit)} normal images ({held}), "
            f"epochs {start_epoch + 1}-{cfg.epochs} of {batches} batches"
        )
    # one bar over every batch of the remaining epochs (an ETA from the first batches on); none when resuming a
    # finished run
    bar_cm = (
        track.task(f"{category} epoch {start_epoch + 1}/{cfg.epochs}", total=len(epochs) * batches, unit="batches")
        if epochs
        else contextlib.nullcontext(NullTask())
    )
    with bar_cm as bar:
        for epoch in epochs:
            bar.update(description=f"{category} epoch {epoch + 1}/{cfg.epochs}")
            terms = _epoch(
                category,
                epoch,
                levels,
                optims,
                feats,
                fit,
                cfg,
                device,
                dist,
                ddp,
                rpath,
                bar.advance,
                lr_at,
                epoch * batches,
            )
            row: dict[str, Any] = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in terms.items()}}
            if cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs) and ff.n_test:
                model.eval()
                split = score_cached(
                    model, read_from(ff, "test"), ff.n_test, meta["image_size"], device, cfg.precision, eval_cfg
                )
                m = category_metrics(ff.test_labels, split, test_masks, eval_cfg)
                model.train()
                row.update({"image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"]})
                for key, metric in (("best-image", "image_auroc"), ("best-pixel", "pixel_auroc")):
                    val = m[metric]
                    if val is not None and (key not in best or val > best[key]["value"]):
                        best[key] = {"value": val, "epoch": epoch + 1, "state": _state(levels)}
            if validation is not None and ((epoch + 1) % (cfg.eval_every or 1) == 0 or epoch + 1 == cfg.epochs):
                from edcli.validation import keep_best, score

                model.eval()
                row.update(score(model, validation, meta["image_size"], device, cfg.precision, eval_cfg))
                model.train()
                keep_best(best, row, epoch + 1, lambda: _state(levels))
            history.append(row)
            bar.update(
                postfix=f"rec {terms['rec']:.4f} intra {terms['intra1']:.3f} inter {terms['inter1']:.3f} "
                f"H {terms['intra_ent']:.2f}/{terms['inter_ent']:.2f}"
            )
            bar.checkpoint()
            if writer:
                atomic_torch_save(
                    {
                        "epoch": epoch + 1,
                        "state_dicts": _state(levels),
                        "optimizers": [o.state_dict() for o in optims],
                        "history": history,
                        "best": best,
                        "train": cfg.to_dict(),
                        "validation": validation.settings if validation is not None else None,
                    },
                    rpath,
                )
    model.eval()
    final_states = _state(levels)
    selection = {
        "select": cfg.select,
        "epoch": cfg.epochs,
        "test_selected": cfg.select != "last",
        "how": "last epoch (honest protocol)",
    }
    if cfg.select == "validation":
        from edcli.validation import KEY
        from edcli.validation import selection as val_selection

        final_states = best[KEY]["state"]
        selection = val_selection(validation, best)
    elif cfg.select != "last":
        if cfg.select not in best:
            raise TrainingError(f"--select {cfg.select} needs test metrics during training: add --eval-every N")
        pick = best[cfg.select]
        final_states = pick["state"]
        selection.update(epoch=pick["epoch"], how=f"{cfg.select}: best epoch on the TEST set (test-selected)")
    if cfg.select != "last":  # the chosen epoch's weights are what gets calibrated and saved
        for m, sd in zip(model.levels, final_states):
            m.load_state_dict(sd)
    # calibration on normal data only: held-out images, else the training images themselves
    cal_idx, source = (cal, "held-out") if len(cal) else (fit, "train")
    split = score_cached(
        model,
        read_from(ff, "train"),
        n,
        meta["image_size"],
        device,
        cfg.precision,
        eval_cfg,
        indices=cal_idx,
        keep_maps=False,
    )
    calib = calibrate(split.scores, source, eval_cfg.reducer, eval_cfg.sigma)
    if calib["n"] < 10:
        calib["warning"] = (
            f"threshold from only {calib['n']} normal image(s): expect false alarms; hold out more "
            "(--calib-fraction) or pass --threshold to ed infer"
        )
        track.warn(f"{category}: {calib['warning']}")
    ck = Checkpoint(
        category=category,
        dataset=meta["dataset"],
        data_path=meta["dataset_root"],
        config=configs,
        backbone=dict(meta, channels=channels, grids=[list(g) for g in grids]),
        state_dicts=final_states,
        history=history,
        selection=selection,
        calibration=calib,
        epochs_done=cfg.epochs,
        complete=True,
        store_file=str(ff.path) if hasattr(ff, "path") else "",
    )
    if writer:
        save_checkpoint(ck, ckpt)
        rpath.unlink(missing_ok=True)
    return {
        "category": category,
        "epochs": cfg.epochs,
        "seconds": round(time.perf_counter() - start_time, 2),
        "train_images": int(len(fit)),
        "calib_images": int(len(cal)),
        "effective_batch": cfg.batch_size * (dist.world if ddp else 1),
        **{k: (round(terms[k], 5) if terms else None) for k in ("rec", "intra1", "inter1", "intra_ent", "inter_ent")},
        "threshold": calib["threshold"],
        "checkpoint": str(ckpt),
        "test_selected": selection["test_selected"],
        "selection": selection["select"],
        "epoch": selection["epoch"],
        "val_images": validation.n if validation is not None else 0,
        "val_seconds": round(sum(h.get("val_seconds", 0.0) for h in history), 3),
    }
