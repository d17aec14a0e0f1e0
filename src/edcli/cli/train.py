"""`ed train`: the command line of one ED model per category (its options map onto ModelConfig and TrainConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from edcli.cli.core import backbone_config, command, data_config, int_list, run_command, tracker
from edcli.cli.options import (
    EVAL,
    HARDWARE,
    MODEL,
    OPTIM,
    OUTPUT,
    Backbone,
    Category,
    Dataset,
    DatasetName,
    Device,
    ImageSize,
    Json,
    Levels,
    NeedDataPath,
    NormalName,
    Precision,
    Quiet,
    RandomInit,
    Store,
    TestFraction,
    Weights,
    Workers,
)
from edcli.config import (
    ARCHS,
    AVERAGES,
    DEFAULT_BACKBONE,
    LR_SCHEDULES,
    OPTIMIZERS,
    SCORES,
    SELECTIONS,
    STRATEGIES,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
)

_T, _D, _M, _E = TrainConfig(), DataConfig(), ModelConfig(), EvalConfig()


# ------------------------------------------------------------------------------------------- train
@command(
    examples=(
        "ed train --data-path mvtec --store store --out runs/ed --epochs 100",
        "ed train --dataset folder --data-path photos --backbone tf_efficientnet_lite0 --image-size 128 "
        "--epochs 25 --out runs/photos --jobs 2",
    )
)
def train(
    data_path: NeedDataPath,
    dataset: Dataset = DatasetName(_D.dataset),
    category: Category = None,
    store: Store = Path("store"),
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            rich_help_panel=OUTPUT,
            help="Run folder: checkpoints/<category>.pt, run.json, metrics.",
        ),
    ] = Path("runs/ed"),
    backbone: Backbone = DEFAULT_BACKBONE,
    weights: Weights = None,
    random_init: RandomInit = False,
    image_size: ImageSize = _D.image_size,
    levels: Levels = "2,3",
    normal_name: NormalName = _D.normal_name,
    test_fraction: TestFraction = _D.test_fraction,
    epochs: Annotated[
        int, typer.Option("--epochs", metavar="N", rich_help_panel=OPTIM, help="Training epochs per category.")
    ] = _T.epochs,
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", rich_help_panel=OPTIM, help="Images per training step.")
    ] = _T.batch_size,
    lr: Annotated[
        float, typer.Option("--lr", metavar="RATE", rich_help_panel=OPTIM, help="Adam learning rate.")
    ] = _T.lr,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", metavar="N", rich_help_panel=OPTIM, help="Random seed (reset per category, as the reference)."
        ),
    ] = _T.seed,
    arch: Annotated[
        Literal[ARCHS],
        typer.Option(
            "--arch", rich_help_panel=MODEL, help="ed, or fod (subtraction fusion, plain MLP, fixed temperature)."
        ),
    ] = _M.arch,
    intra: Annotated[
        bool, typer.Option("--intra/--no-intra", rich_help_panel=MODEL, help="Intra-image (self-attention) branch.")
    ] = _M.intra,
    inter: Annotated[
        bool,
        typer.Option(
            "--inter/--no-inter", rich_help_panel=MODEL, help="Inter-image (prototype cross-attention) branch."
        ),
    ] = _M.inter,
    layers: Annotated[
        int, typer.Option("--layers", metavar="N", rich_help_panel=MODEL, help="Encoder layers per level.")
    ] = _M.layers,
    heads: Annotated[
        int, typer.Option("--heads", metavar="N", rich_help_panel=MODEL, help="Attention heads.")
    ] = _M.heads,
    d_model: Annotated[
        str | None,
        typer.Option(
            "--d-model",
            metavar="W,W",
            rich_help_panel=MODEL,
            help="Model width per level, comma separated, or auto (C/2 rounded up to 32, >= 64). "
            "Default: 256,512 (the reference).",
        ),
    ] = None,
    attn_out_proj: Annotated[
        bool,
        typer.Option(
            "--attn-out-proj",
            rich_help_panel=MODEL,
            help="Apply the attention output projection (the reference discards it).",
        ),
    ] = _M.attn_out_proj,
    device: Device = _T.device,
    precision: Precision = _T.precision,
    eval_every: Annotated[
        int,
        typer.Option(
            "--eval-every",
            metavar="EPOCHS",
            rich_help_panel=EVAL,
            help="Evaluate on the test split every N epochs (0: never); "
            "with --select validation: validate every N epochs (default 1).",
        ),
    ] = _T.eval_every,
    select: Annotated[
        Literal[SELECTIONS],
        typer.Option(
            "--select",
            rich_help_panel=EVAL,
            help="Which epoch's weights: last (honest), validation (best on held-out normal images with synthetic "
            "defects: no test labels), or the best by a TEST metric (best-image, best-pixel: test-selected, "
            "needs --eval-every).",
        ),
    ] = _T.select,
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            metavar="F",
            rich_help_panel=EVAL,
            help="--select validation: share of the normal train images held out for validation.",
        ),
    ] = _T.val_fraction,
    calib_fraction: Annotated[
        float,
        typer.Option(
            "--calib-fraction",
            metavar="F",
            rich_help_panel=EVAL,
            help="Share of normal train images held out for the threshold.",
        ),
    ] = _T.calib_fraction,
    strategy: Annotated[
        Literal[STRATEGIES],
        typer.Option(
            "--strategy",
            rich_help_panel=HARDWARE,
            help="Under torchrun: categories (one per rank) or ddp (one category data-parallel).",
        ),
    ] = _T.strategy,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            metavar="N",
            rich_help_panel=HARDWARE,
            help="Categories trained side by side in worker processes.",
        ),
    ] = _T.jobs,
    optimizer: Annotated[
        Literal[OPTIMIZERS],
        typer.Option(
            "--optimizer",
            rich_help_panel=OPTIM,
            help="reference (one Adam, zero-filled grads: torch 1.13's extra momentum step) or per-level.",
        ),
    ] = _T.optimizer,
    lr_schedule: Annotated[
        Literal[LR_SCHEDULES],
        typer.Option(
            "--lr-schedule", rich_help_panel=OPTIM, help="constant (the reference) or cosine (per batch, to 0)."
        ),
    ] = _T.lr_schedule,
    warmup_epochs: Annotated[
        float,
        typer.Option(
            "--warmup-epochs",
            metavar="EPOCHS",
            rich_help_panel=OPTIM,
            help="Linear learning-rate warm-up over this many epochs.",
        ),
    ] = _T.warmup_epochs,
    average: Annotated[
        Literal[AVERAGES],
        typer.Option(
            "--average",
            rich_help_panel=OPTIM,
            help="Weights kept: none (the last step's), ema (moving average after every step) or swa (equal "
            "average of the epochs from --swa-start); the average is what is evaluated, selected and saved.",
        ),
    ] = _T.average,
    ema_decay: Annotated[
        float,
        typer.Option("--ema-decay", metavar="D", rich_help_panel=OPTIM, help="--average ema: decay per step."),
    ] = _T.ema_decay,
    swa_start: Annotated[
        int,
        typer.Option(
            "--swa-start",
            metavar="EPOCH",
            rich_help_panel=OPTIM,
            help="--average swa: first epoch in the average (0: the middle epoch).",
        ),
    ] = _T.swa_start,
    score: Annotated[
        Literal[SCORES],
        typer.Option(
            "--score",
            rich_help_panel=EVAL,
            help="Per-token anomaly score: rec-kl (reconstruction error x the attention-vs-prior KL; the default, "
            "steadier than the paper's), ed (the paper's: error x (max(s) - s), s a per-image softmax of the KL) or "
            "rec (reconstruction error); recorded in the checkpoint.",
        ),
    ] = _E.score,
    resume: Annotated[
        bool, typer.Option("--resume", rich_help_panel=OUTPUT, help="Continue from the last completed epoch.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            rich_help_panel=OUTPUT,
            help="Replace the checkpoints of an existing run folder and remove its stale metrics, predictions "
            "and maps.",
        ),
    ] = False,
    num_workers: Workers = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train one ED model per category from the cached features (computing missing store entries first)."""
    from edcli.commands.train import run as run_train

    auto = (d_model or "").strip().lower() == "auto"
    dm = int_list(d_model, "--d-model", "256,512") if d_model and not auto else ()

    def go():  # the configs validate on construction: inside run_command, a bad value is one line, not a traceback
        data = data_config(dataset, data_path, category, image_size, normal_name, test_fraction, seed)
        mcfg = ModelConfig(
            arch=arch,
            intra=intra,
            inter=inter,
            layers=layers,
            heads=heads,
            d_model=dm,
            attn_out_proj=attn_out_proj,
            width="auto" if auto else _M.width,
        )
        tcfg = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            device=device,
            precision=precision,
            eval_every=eval_every,
            select=select,
            calib_fraction=calib_fraction,
            strategy=strategy,
            jobs=jobs,
            val_fraction=val_fraction,
            optimizer=optimizer,
            lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs,
            average=average,
            ema_decay=ema_decay,
            swa_start=swa_start,
        )
        return run_train(
            data=data,
            bb_cfg=backbone_config(backbone, levels, weights, random_init),
            model_cfg=mcfg,
            train_cfg=tcfg,
            eval_cfg=EvalConfig(score=score),
            store=str(store),
            out=str(out),
            resume=resume,
            num_workers=num_workers,
            track=tracker(quiet),
            overwrite=overwrite,
        )

    rows = run_command(go)
    if rows is None:
        return
    from edcli.ui import print_json, print_table

    if json_out:
        print_json(rows)
        return
    sel = " (test-selected)" if any(r.get("test_selected") for r in rows) else ""
    if not sel and any(r.get("selection") == "validation" for r in rows):
        sel = " (epochs chosen on validation: no test labels)"
    print_table(
        f"training{sel}",
        [
            "category",
            "images (fit+calib)",
            "epochs",
            "seconds",
            "rec",
            "intra corr",
            "inter corr",
            "intra H",
            "inter H",
            "threshold",
            "epoch kept",
            "checkpoint",
        ],
        [
            [
                r["category"],
                f"{r['train_images']}+{r['calib_images']}",
                r["epochs"],
                r["seconds"],
                r["rec"],
                r["intra1"],
                r["inter1"],
                r["intra_ent"],
                r["inter_ent"],
                r["threshold"],
                f"{r.get('epoch', r['epochs'])} ({r.get('selection', 'last')})",
                r["checkpoint"],
            ]
            for r in rows
        ],
        caption=f"anomaly score: {rows[0].get('score', 'ed')}; weights kept: "
        f"{'the last step' if rows[0].get('average', 'none') == 'none' else rows[0]['average'] + ' average'}"
        if rows
        else "",
    )
