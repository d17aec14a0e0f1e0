"""Training one category from its cached features: calibration split, epochs, resume, selection, checkpoint."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edcli.checkpoint import Checkpoint, atomic_torch_save, resume_path, save_checkpoint
from edcli.config import EvalConfig, ModelConfig, TrainConfig
from edcli.engine import seed_everything
from edcli.errors import TrainingError
from edcli.method.scoring import calibrate, calibration_split
from edcli.track import NullTask
from edcli.training.average import Averager
from edcli.training.loop import fit_epoch, lr_schedule, make_optimizers, unwrap
from edcli.training.resume import differences, refusal, request


@dataclass
class _Data:
    """The train rows of one category: fitted, held out for the threshold, and the fitted rows' tokens."""

    n: int  # train images in the store
    fit: np.ndarray
    cal: np.ndarray
    feats: list[torch.Tensor]  # per level (N_fit, L, C) float16 tokens on the CPU: half the memory of float32
    refs: list[np.ndarray]  # per level (C, L)
    grids: list[tuple[int, int]]

    @property
    def channels(self) -> list[int]:
        return [int(f.shape[2]) for f in self.feats]


@dataclass
class _Run:
    """What the steps of train_category share; the epochs update `done`, `history`, `best` and `terms`."""

    category: str
    ff: Any
    image_size: int
    cfg: TrainConfig
    eval_cfg: EvalConfig
    device: torch.device
    track: Any
    data: _Data
    model: Any
    levels: list  # the model's levels, DistributedDataParallel-wrapped under DDP
    optims: list
    rpath: Path  # the resume state
    ranks: Any  # the DistInfo under --strategy ddp, else None
    validation: Any
    request: dict[str, Any]  # the model- and input-shaping options, recorded in the resume state
    averager: Any  # --average: the weights evaluated, selected, calibrated and saved (training.average)
    done: int = 0  # epochs done before this run (resume)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    terms: dict[str, float] = field(default_factory=dict)  # the last epoch's mean loss terms

    @property
    def writer(self) -> bool:
        """Under DDP rank 0 alone writes; with categories per rank each rank writes its own."""
        return self.ranks is None or self.ranks.is_main


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
    start_time = time.perf_counter()
    ranks = dist if dist is not None and dist.enabled and cfg.strategy == "ddp" else None
    data = prepare_data(ff, cfg, validation)
    model, levels, optims = build_training(data, model_cfg, cfg, device, ranks)
    # The checkpoint records the widths built, so a later default cannot change how it loads.
    configs = dict(configs, model=dict(configs["model"], d_model=[unwrap(m).d_model for m in levels]))
    run = _Run(
        category=category,
        ff=ff,
        image_size=meta["image_size"],
        cfg=cfg,
        eval_cfg=eval_cfg,
        device=device,
        track=track,
        data=data,
        model=model,
        levels=levels,
        optims=optims,
        rpath=resume_path(ckpt),
        ranks=ranks,
        validation=validation,
        request=request(model_cfg, meta["image_size"], meta["backbone"], meta["levels"], eval_cfg.score),
        averager=Averager(model, cfg),
    )
    if resume:
        _restore(run)
    _train_epochs(run)
    states, selection = _select(run)
    calib = _calibrate(run)
    if run.writer:
        save_checkpoint(_checkpoint(run, meta, configs, states, selection, calib), ckpt)
        run.rpath.unlink(missing_ok=True)
    return _summary(run, ckpt, selection, calib, time.perf_counter() - start_time)


def prepare_data(ff, cfg: TrainConfig, validation) -> _Data:
    """The fit/calibration split (the validation images are in neither) and the fitted rows as tokens."""
    seed_everything(cfg.seed)
    n = ff.n_train
    fit, cal = calibration_split(n, cfg.calib_fraction, cfg.seed)
    if validation is not None:
        fit = np.setdiff1d(fit, validation.train_index)
    feats, refs = [], []
    for k in range(ff.n_levels):
        f = torch.from_numpy(ff.train(k))  # (N, C, H, W) float16
        f = f[torch.from_numpy(fit)]
        refs.append(ff.ref(k) if len(fit) == n else f.double().mean(0).flatten(1).float().numpy())  # (C, L)
        feats.append(f.flatten(2).transpose(1, 2).contiguous())  # (N_fit, L, C)
    return _Data(n, fit, cal, feats, refs, [(int(h), int(w)) for _, h, w in ff.shapes])


def build_training(data: _Data, model_cfg: ModelConfig, cfg: TrainConfig, device, ranks) -> tuple[Any, list, list]:
    """The seeded model on `device`, its levels (DDP-wrapped under `ranks`) and their optimizers."""
    from edcli.method.model import build_ed_model

    seed_everything(cfg.seed)
    refs = [torch.from_numpy(np.ascontiguousarray(r)) for r in data.refs]
    model = build_ed_model(data.channels, data.grids, refs, model_cfg).to(device)
    levels: list = list(model.levels)
    if ranks is not None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        levels = [DDP(m, device_ids=[device.index] if device.type == "cuda" else None) for m in levels]
    return model, levels, make_optimizers(levels, cfg.optimizer, cfg.lr)


def _restore(run: _Run) -> None:
    """Weights, optimizer states, epochs done, history and best-so-far from the resume state, if there is one."""
    cfg, rpath, category = run.cfg, run.rpath, run.category
    if not rpath.exists():
        run.track.log(f"{category}: nothing to resume at {rpath}; training from the start")
        return
    state = torch.load(rpath, map_location="cpu", weights_only=True)
    diffs = differences(state["train"], state.get("request"), cfg, run.request)  # commands.train checked first
    if diffs:
        raise TrainingError(refusal(category, rpath, diffs))
    shapes = [{k: tuple(v.shape) for k, v in unwrap(m).state_dict().items()} for m in run.levels]
    saved = [{k: tuple(v.shape) for k, v in sd.items()} for sd in state["state_dicts"]]
    if shapes != saved:  # a state from before requests were recorded, of another width, size or depth
        raise TrainingError(
            f"{category}: cannot resume {rpath}: its model has other shapes (--d-model, --heads, --layers, --arch, "
            "--image-size, --backbone or --levels differ from when it was trained); rerun with the same options "
            "to continue, or with --overwrite to start again"
        )
    if state.get("validation") != (run.validation.settings if run.validation is not None else None):
        raise TrainingError(
            f"{category}: cannot resume {rpath}: it was trained with another validation hold-out "
            "(--select validation, --val-fraction); rerun with the same options to continue, or with --overwrite to "
            "start again"
        )
    for m, sd in zip(run.levels, state["state_dicts"]):
        unwrap(m).load_state_dict(sd)
    if len(state["optimizers"]) != len(run.optims):
        raise TrainingError(
            f"{category}: {rpath} holds {len(state['optimizers'])} optimizer state(s), this "
            f"--optimizer {cfg.optimizer} has {len(run.optims)}; rerun with --overwrite to start again"
        )
    for o, sd in zip(run.optims, state["optimizers"]):
        o.load_state_dict(sd)
    run.averager.load_state_dict(state.get("average"))
    if cfg.optimizer == "reference":  # the run kept zero-filled gradients between batches: so does its resume
        for o in run.optims:
            for p in o.state:
                p.grad = torch.zeros_like(p)
    run.done, run.history, run.best = int(state["epoch"]), list(state["history"]), dict(state.get("best", {}))
    run.track.log(f"{category}: resuming after epoch {run.done} from {rpath}")


def _train_epochs(run: _Run) -> None:
    """The remaining epochs, each followed by its evaluations, its history row and the resume state."""
    from edcli.evaluate import masks_if_known

    cfg, category, fit = run.cfg, run.category, run.data.fit
    if run.ranks is not None and run.ranks.is_main:
        run.track.log(
            f"{category}: data-parallel over {run.ranks.world} ranks, effective batch size "
            f"{cfg.batch_size * run.ranks.world} ({cfg.batch_size} per rank)"
        )
    test_masks = masks_if_known(run.ff) if cfg.eval_every else None
    epochs = range(run.done, cfg.epochs)
    rows_per_epoch = len(fit) if run.ranks is None else -(-len(fit) // run.ranks.world)  # the sampler pads shares
    batches = -(-rows_per_epoch // cfg.batch_size)  # per epoch (per rank)
    lr_at = lr_schedule(cfg, batches)
    if epochs:
        held = f"{len(run.data.cal)} held out for the threshold"
        if run.validation:
            held += f", {run.validation.n} for validation"
        run.track.log(
            f"{category}: training on {len(fit)} normal images ({held}), "
            f"{_epochs_left(run.done + 1, cfg.epochs)} of {batches} batches each"
        )
    # one bar over every batch of the remaining epochs (an ETA from the first batches on); none when resuming a
    # finished run
    bar_cm = (
        run.track.task(f"{category} epoch {run.done + 1}/{cfg.epochs}", total=len(epochs) * batches, unit="batches")
        if epochs
        else contextlib.nullcontext(NullTask())
    )
    with bar_cm as bar:

        def after_batch() -> None:
            run.averager.after_step(run.model)
            bar.advance()

        for epoch in epochs:
            bar.update(description=f"{category} epoch {epoch + 1}/{cfg.epochs}")
            terms = fit_epoch(
                run.levels,
                run.optims,
                run.data.feats,
                cfg,
                run.device,
                epoch,
                ranks=run.ranks,
                lr_at=lr_at,
                step0=epoch * batches,
                on_batch=after_batch,
                category=category,
                rpath=run.rpath,
            )
            run.averager.after_epoch(run.model, epoch + 1)
            run.terms = terms
            row: dict[str, Any] = {"epoch": epoch + 1, **{k: round(v, 6) for k, v in terms.items()}}
            _test_metrics(run, epoch, row, test_masks)
            _validate(run, epoch, row)
            run.history.append(row)
            bar.update(
                postfix=f"rec {terms['rec']:.4f} intra {terms['intra1']:.3f} inter {terms['inter1']:.3f} "
                f"H {terms['intra_ent']:.2f}/{terms['inter_ent']:.2f}"
            )
            bar.checkpoint()
            if run.writer:
                _save_resume(run, epoch)


def _test_metrics(run: _Run, epoch: int, row: dict[str, Any], test_masks) -> None:
    """--eval-every: the test metrics of this epoch in its row, and the best-so-far on them (best-image/pixel)."""
    from edcli.evaluate import category_metrics, read_from, score_cached

    cfg, ff = run.cfg, run.ff
    if not (cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs) and ff.n_test):
        return
    scored = run.averager.scored(run.model).eval()
    split = score_cached(
        scored, read_from(ff, "test"), ff.n_test, run.image_size, run.device, cfg.precision, run.eval_cfg
    )
    m = category_metrics(ff.test_labels, split, test_masks, run.eval_cfg)
    run.model.train()
    row.update({"image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"]})
    for key, metric in (("best-image", "image_auroc"), ("best-pixel", "pixel_auroc")):
        val = m[metric]
        if val is not None and (key not in run.best or val > run.best[key]["value"]):
            run.best[key] = {"value": val, "epoch": epoch + 1, "state": _state(scored.levels)}


def _validate(run: _Run, epoch: int, row: dict[str, Any]) -> None:
    """--select validation: the validation scores of this epoch in its row, and the best-so-far on them."""
    cfg = run.cfg
    if run.validation is None or not ((epoch + 1) % (cfg.eval_every or 1) == 0 or epoch + 1 == cfg.epochs):
        return
    from edcli.validation import keep_best, score

    scored = run.averager.scored(run.model).eval()
    row.update(score(scored, run.validation, run.image_size, run.device, cfg.precision, run.eval_cfg))
    run.model.train()
    keep_best(run.best, row, epoch + 1, lambda: _state(scored.levels))


def _save_resume(run: _Run, epoch: int) -> None:
    atomic_torch_save(
        {
            "epoch": epoch + 1,
            "state_dicts": _state(run.levels),
            "optimizers": [o.state_dict() for o in run.optims],
            "average": run.averager.state_dict(),
            "history": run.history,
            "best": run.best,
            "train": run.cfg.to_dict(),
            "validation": run.validation.settings if run.validation is not None else None,
            "request": run.request,
        },
        run.rpath,
    )


def _select(run: _Run) -> tuple[list[dict[str, torch.Tensor]], dict[str, Any]]:
    """The weights kept (the last epoch's, or the best by --select; the average's under --average), loaded into the
    model, and how they were chosen."""
    cfg = run.cfg
    run.model.eval()
    states = _state(run.averager.scored(run.model).levels)
    selection = {
        "select": cfg.select,
        "epoch": cfg.epochs,
        "test_selected": cfg.select != "last",
        "how": "last epoch (honest protocol)",
        "average": run.averager.describe(cfg),
    }
    if cfg.select == "validation":
        from edcli.validation import KEY
        from edcli.validation import selection as val_selection

        states = run.best[KEY]["state"]
        selection = dict(val_selection(run.validation, run.best), average=selection["average"])
    elif cfg.select != "last":
        if cfg.select not in run.best:
            raise TrainingError(f"--select {cfg.select} needs test metrics during training: add --eval-every N")
        pick = run.best[cfg.select]
        states = pick["state"]
        selection.update(epoch=pick["epoch"], how=f"{cfg.select}: best epoch on the TEST set (test-selected)")
    for m, sd in zip(run.model.levels, states):  # the weights kept are what gets calibrated and saved
        m.load_state_dict(sd)
    return states, selection


def _calibrate(run: _Run) -> dict[str, Any]:
    """The threshold from normal data only: the held-out images, else the training images themselves."""
    from edcli.evaluate import read_from, score_cached

    data, cfg = run.data, run.cfg
    cal_idx, source = (data.cal, "held-out") if len(data.cal) else (data.fit, "train")
    split = score_cached(
        run.model,
        read_from(run.ff, "train"),
        data.n,
        run.image_size,
        run.device,
        cfg.precision,
        run.eval_cfg,
        indices=cal_idx,
        keep_maps=False,
    )
    calib = calibrate(split.scores, source, run.eval_cfg.reducer, run.eval_cfg.sigma, run.eval_cfg.score)
    if calib["n"] < 10:
        calib["warning"] = (
            f"threshold from only {calib['n']} normal image(s): expect false alarms; hold out more "
            "(--calib-fraction) or pass --threshold to ed infer"
        )
        run.track.warn(f"{run.category}: {calib['warning']}")
    return calib


def _checkpoint(run: _Run, meta, configs, states, selection, calib) -> Checkpoint:
    return Checkpoint(
        category=run.category,
        dataset=meta["dataset"],
        data_path=meta["dataset_root"],
        config=configs,
        backbone=dict(meta, channels=run.data.channels, grids=[list(g) for g in run.data.grids]),
        state_dicts=states,
        history=run.history,
        selection=selection,
        calibration=calib,
        epochs_done=run.cfg.epochs,
        complete=True,
        store_file=str(run.ff.path) if hasattr(run.ff, "path") else "",
    )


def _summary(run: _Run, ckpt: Path, selection, calib, seconds: float) -> dict[str, Any]:
    """The row `ed train` reports for this category."""
    terms, validation = run.terms, run.validation
    return {
        "category": run.category,
        "epochs": run.cfg.epochs,
        "seconds": round(seconds, 2),
        "train_images": int(len(run.data.fit)),
        "calib_images": int(len(run.data.cal)),
        "effective_batch": run.cfg.batch_size * (run.ranks.world if run.ranks is not None else 1),
        **{k: (round(terms[k], 5) if terms else None) for k in ("rec", "intra1", "inter1", "intra_ent", "inter_ent")},
        "threshold": calib["threshold"],
        "checkpoint": str(ckpt),
        "test_selected": selection["test_selected"],
        "selection": selection["select"],
        "epoch": selection["epoch"],
        "average": run.cfg.average,
        "score": run.eval_cfg.score,
        "val_images": validation.n if validation is not None else 0,
        "val_seconds": round(sum(h.get("val_seconds", 0.0) for h in run.history), 3),
    }


def _state(levels) -> list[dict[str, torch.Tensor]]:
    return [{k: v.detach().cpu().clone() for k, v in unwrap(m).state_dict().items()} for m in levels]


def _epochs_left(first: int, last: int) -> str:
    """'epoch 3 of 3' or 'epochs 2 to 5 of 5': the epochs this run will train."""
    return f"epoch {first} of {last}" if first == last else f"epochs {first} to {last} of {last}"
