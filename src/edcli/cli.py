"""The `ed` Typer app: thin commands (parse -> config -> one commands.<cmd>.run(...) -> render). The only typer importer."""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperCommand, TyperGroup

from edcli.config import (
    ARCHS,
    DEFAULT_BACKBONE,
    LR_SCHEDULES,
    OPTIMIZERS,
    PIXEL_MAPS,
    PRECISIONS,
    SELECTIONS,
    STRATEGIES,
    BackboneConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
)
from edcli.data.layouts import LAYOUTS
from edcli.version import __version__

# ------------------------------------------------------------------------------------------- help layout
# the option groups of every command's help, in this order
DATA, BACKBONE, MODEL, OPTIM, EVAL, OUTPUT, HARDWARE = (
    "Data",
    "Backbone",
    "Model",
    "Optimisation",
    "Evaluation",
    "Output",
    "Hardware",
)
PANELS = (DATA, BACKBONE, MODEL, OPTIM, EVAL, OUTPUT, HARDWARE)


class _HelpParams:
    """Help panels in the order of PANELS (--help in Output); no `<bool>` type column for flags, nor `<list[str]>`
    for a variadic argument."""

    def get_params(self, ctx):
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
            if p.param_type_name == "option" and p.name == "help" and isinstance(self, TyperCommand):
                p.rich_help_panel = OUTPUT
            if p.param_type_name == "argument" and p.nargs != 1:  # its name (INPUTS...) says it; not <list[str]>
                p.display_type_rich = lambda ctx: None
        rank = {name: i for i, name in enumerate(PANELS)}
        return sorted(
            params,
            key=lambda p: (
                -1
                if p.param_type_name == "argument"
                else rank.get(getattr(p, "rich_help_panel", None) or "", len(PANELS))
            ),
        )


class _Group(_HelpParams, TyperGroup):
    pass


class _Command(_HelpParams, TyperCommand):
    """Usage as `ed infer [OPTIONS] CHECKPOINT INPUTS...` (Typer writes `{checkpoint} {inputs}...`)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                name = (p.metavar or p.name or "").upper()
                name += "..." if p.nargs != 1 and not name.endswith("...") else ""
                pieces.append(name if p.required else f"[{name}]")
        return pieces


app = typer.Typer(
    name="ed",
    cls=_Group,
    help="Unsupervised image anomaly detection with ED (Emphasize Differences): train on normal images, "
    "score new ones, localise their defects.",
    no_args_is_help=True,
    add_completion=False,  # the static scripts of `completions/` are the way (README "Shell completions")
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # help panels per option group; typer imports rich only to render help
    context_settings={"help_option_names": ["-h", "--help"]},
)

_T, _D, _M, _E = TrainConfig(), DataConfig(), ModelConfig(), EvalConfig()


def _escape(text: str) -> str:
    """Literal square brackets in rich markup (help text is rendered with rich_markup_mode="rich")."""
    return text.replace("[", "\\[")


def _examples(*lines: str) -> str:
    """The epilog of a command's help: a few complete command lines."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  [cyan]$ {_escape(line)}[/cyan]" for line in lines)


def _command(name: str | None = None, examples: tuple[str, ...] = (), **kw):
    return app.command(name, cls=_Command, epilog=_examples(*examples) if examples else None, **kw)


# ------------------------------------------------------------------------------------------- shared options
# the --dataset choices are the registered layouts (data/layouts.py); the other choices are config's tuples
DatasetName = enum.Enum("DatasetName", {name: name for name in LAYOUTS}, type=str)
Dataset = Annotated[
    DatasetName,
    typer.Option("--dataset", "-d", help="Layout of --data-path (see the README's table).", rich_help_panel=DATA),
]
DataPath = Annotated[
    Path | None,
    typer.Option(
        "--data-path", "-p", metavar="DIR", rich_help_panel=DATA, help="Dataset root: one folder per category."
    ),
]
NeedDataPath = Annotated[
    Path,
    typer.Option(
        "--data-path", "-p", metavar="DIR", rich_help_panel=DATA, help="Dataset root: one folder per category."
    ),
]
Category = Annotated[
    list[str] | None,
    typer.Option(
        "--category",
        "-c",
        metavar="NAME",
        rich_help_panel=DATA,
        help="Only this category (repeatable). Default: all found.",
    ),
]
Store = Annotated[
    Path,
    typer.Option("--store", "-s", metavar="DIR", rich_help_panel=DATA, help="Feature store directory (HDF5 files)."),
]
Backbone = Annotated[
    str,
    typer.Option(
        "--backbone", "-b", metavar="NAME", rich_help_panel=BACKBONE, help="timm model name with features_only support."
    ),
]
Weights = Annotated[
    Path | None,
    typer.Option("--weights", metavar="FILE", rich_help_panel=BACKBONE, help="Backbone weights file (offline use)."),
]
RandomInit = Annotated[
    bool,
    typer.Option(
        "--random-init", rich_help_panel=BACKBONE, help="Untrained backbone: for tests and timing only (recorded)."
    ),
]
ImageSize = Annotated[
    int,
    typer.Option(
        "--image-size", metavar="PX", rich_help_panel=DATA, help="Input size S in pixels: images become S x S."
    ),
]
Levels = Annotated[
    str,
    typer.Option(
        "--levels",
        metavar="I,J",
        rich_help_panel=BACKBONE,
        help="timm feature indices, comma separated (2,3 = strides 8 and 16).",
    ),
]
NormalName = Annotated[
    str,
    typer.Option(
        "--normal-name", metavar="NAME", rich_help_panel=DATA, help="Name of the normal folder for --dataset folder."
    ),
]
TestFraction = Annotated[
    float,
    typer.Option(
        "--test-fraction",
        metavar="F",
        rich_help_panel=DATA,
        help="--dataset folder without test/: this share of the normal images "
        "becomes the (normal-only) test split, picked by the seed.",
    ),
]
Device = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="auto|cpu|cuda|cuda:N|mps",
        rich_help_panel=HARDWARE,
        help="Where to compute; auto: cuda, then mps, then cpu.",
    ),
]
Precision = Annotated[
    Literal[PRECISIONS],
    typer.Option("--precision", rich_help_panel=HARDWARE, help="Autocast precision on a GPU (the CPU takes fp32)."),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", metavar="N", rich_help_panel=HARDWARE, help="Images per batch.")
]
Workers = Annotated[
    int,
    typer.Option(
        "--num-workers", metavar="N", rich_help_panel=HARDWARE, help="DataLoader worker processes for image decoding."
    ),
]
Json = Annotated[
    bool, typer.Option("--json", rich_help_panel=OUTPUT, help="Machine-readable JSON on stdout (nothing else).")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel=OUTPUT, help="No progress on stderr.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """ed: ED anomaly detection from the command line."""


def _run(fn: Callable[[], Any], quiet: bool = False) -> Any:
    """Run a command; EdError -> one red line + its exit code; an OSError (disk full, read-only, permission) -> one
    line naming the path, exit 1; Ctrl-C -> exit 130. Under torchrun only rank 0 renders."""
    import os

    from edcli.errors import EdError
    from edcli.ui import print_error

    # the command whose body built `fn` ("features.<locals>.<lambda>", "eval_.<locals>.go"): messages name it
    name = f"ed {fn.__qualname__.split('.')[0].rstrip('_')}" if ".<locals>." in fn.__qualname__ else "ed"
    finished = False
    try:
        result = fn()
        finished = True
        return result if os.environ.get("RANK", "0") == "0" else None
    except EdError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code)
    except OSError as exc:  # a write or read the layers below did not name themselves
        where = exc.filename if exc.filename is not None else "a file"
        print_error(f"{name}: cannot access {where}: {exc.strerror or exc}")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        hint = "; rerun with --resume to continue" if name == "ed train" else ""
        print_error(f"{name}: interrupted; completed work is kept{hint}")
        raise typer.Exit(130)
    finally:
        if "torch.distributed" in sys.modules:  # only under torchrun; --help never imports torch
            from edcli.engine import shutdown_distributed

            shutdown_distributed(finished)


def _int_list(text: str, option: str, example: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        values = ()
    if not values:
        raise typer.BadParameter(f"{text!r}: give integers like {example}", param_hint=option)
    return values


def _levels(text: str) -> tuple[int, ...]:
    return _int_list(text, "--levels", "2,3")


def _tracker(quiet: bool):
    from edcli.ui import Tracker

    return Tracker(quiet=quiet)


def _bb(backbone: str, levels: str, weights: Path | None, random_init: bool) -> BackboneConfig:
    return BackboneConfig(
        name=backbone, levels=_levels(levels), weights=str(weights) if weights else None, random_init=random_init
    )


def _data(
    dataset: DatasetName,
    data_path: Path | None,
    category: list[str] | None,
    image_size: int,
    normal_name: str,
    test_fraction: float = _D.test_fraction,
    split_seed: int = _D.split_seed,
) -> DataConfig:
    return DataConfig(
        dataset=dataset.value,
        data_path=str(data_path) if data_path else "",
        categories=tuple(category or ()),
        image_size=image_size,
        normal_name=normal_name,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ------------------------------------------------------------------------------------------- distmaps
@_command(
    examples=(
        "ed distmaps --store store --backbone tf_efficientnet_lite0 --image-size 128",
        "ed distmaps --store store --grid 16 --grid 8 --json",
    )
)
def distmaps(
    store: Store = Path("store"),
    backbone: Backbone = DEFAULT_BACKBONE,
    image_size: ImageSize = _D.image_size,
    levels: Levels = "2,3",
    grid: Annotated[
        list[int] | None,
        typer.Option(
            "--grid",
            metavar="H",
            rich_help_panel=BACKBONE,
            help="Grid side H (H x H tokens) instead of a backbone; repeatable.",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Write squared row/column index-distance matrices for each level's token grid (store/distmaps.h5)."""
    from edcli.commands import distmaps as command

    res = _run(lambda: command.run(str(store), backbone, image_size, _levels(levels), tuple(grid or ())))
    if json_out:
        from edcli.ui import print_json

        print_json(res)
        return
    from edcli.ui import print_table

    print_table(
        "distance maps",
        ["file", "grids", "tokens", "size"],
        [[res["path"], ", ".join(res["grids"]), ", ".join(map(str, res["tokens"])), _human_bytes(res["bytes"])]],
    )


# ------------------------------------------------------------------------------------------- features
@_command(
    examples=(
        "ed features --data-path mvtec --store store",
        "ed features --dataset folder --data-path photos --backbone tf_efficientnet_lite0 --image-size 128",
    )
)
def features(
    data_path: NeedDataPath,
    dataset: Dataset = DatasetName(_D.dataset),
    category: Category = None,
    store: Store = Path("store"),
    backbone: Backbone = DEFAULT_BACKBONE,
    weights: Weights = None,
    random_init: RandomInit = False,
    image_size: ImageSize = _D.image_size,
    levels: Levels = "2,3",
    normal_name: NormalName = _D.normal_name,
    test_fraction: TestFraction = _D.test_fraction,
    seed: Annotated[
        int,
        typer.Option(
            "--seed", metavar="N", rich_help_panel=DATA, help="Picks the --test-fraction images (ed train's --seed)."
        ),
    ] = _T.seed,
    device: Device = "auto",
    batch_size: BatchSize = 16,
    num_workers: Workers = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", rich_help_panel=OUTPUT, help="Recompute categories already in the store.")
    ] = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Run the frozen backbone once per category: prototypes and cached pooled features of train and test images."""
    from edcli.commands import features as command

    rows = _run(
        lambda: command.run(
            _data(dataset, data_path, category, image_size, normal_name, test_fraction, seed),
            _bb(backbone, levels, weights, random_init),
            str(store),
            device,
            batch_size,
            overwrite,
            num_workers,
            _tracker(quiet),
        )
    )
    if rows is None:
        return
    from edcli.ui import print_json, print_table

    if json_out:
        print_json(rows)
        return
    print_table(
        f"features in {store}",
        ["category", "#train", "#test", "levels (C, H, W)", "seconds", "file size", "status"],
        [
            [
                r["category"],
                r["train"],
                r["test"],
                "  ".join("x".join(map(str, s)) for s in r["shapes"]),
                r["seconds"],
                _human_bytes(r["bytes"]),
                r["status"],
            ]
            for r in rows
        ],
    )


# ------------------------------------------------------------------------------------------- train
@_command(
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
            help="Model width per level, comma separated, or auto (C/2 rounded up to 32, >= 64). Default: 256,512 (the reference).",
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
            help="Evaluate on the test split every N epochs (0: never); with --select validation: validate every N epochs (default 1).",
        ),
    ] = _T.eval_every,
    select: Annotated[
        Literal[SELECTIONS],
        typer.Option(
            "--select",
            rich_help_panel=EVAL,
            help="Which epoch's weights: last (honest), validation (best on held-out normal images with synthetic defects: no test labels), or the best by a TEST metric (best-image, best-pixel: test-selected, needs --eval-every).",
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
    resume: Annotated[
        bool, typer.Option("--resume", rich_help_panel=OUTPUT, help="Continue from the last completed epoch.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            rich_help_panel=OUTPUT,
            help="Replace the checkpoints of an existing run folder and remove its stale metrics, predictions and maps.",
        ),
    ] = False,
    num_workers: Workers = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train one ED model per category from the cached features (computing missing store entries first)."""
    from edcli.commands import train as command

    auto = (d_model or "").strip().lower() == "auto"
    dm = _int_list(d_model, "--d-model", "256,512") if d_model and not auto else ()

    def go():  # the configs validate on construction: inside _run, a bad value is one line, not a traceback
        data = _data(dataset, data_path, category, image_size, normal_name, test_fraction, seed)
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
        )
        return command.run(
            data,
            _bb(backbone, levels, weights, random_init),
            mcfg,
            tcfg,
            str(store),
            str(out),
            resume=resume,
            num_workers=num_workers,
            track=_tracker(quiet),
            overwrite=overwrite,
        )

    rows = _run(go)
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
    )


# ------------------------------------------------------------------------------------------- eval
@_command("eval", examples=("ed eval --run runs/ed", "ed eval --run runs/ed --reducer topk:0.01 --save-maps --json"))
def eval_(
    run: Annotated[
        Path | None,
        typer.Option(
            "--run", "-r", metavar="DIR", rich_help_panel=DATA, help="Run folder written by `ed train --out`."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", metavar="FILE", rich_help_panel=DATA, help="One checkpoint file instead of a run."
        ),
    ] = None,
    data_path: DataPath = None,
    dataset: Annotated[
        DatasetName | None,
        typer.Option(
            "--dataset", "-d", rich_help_panel=DATA, help="Layout of --data-path (default: the checkpoint's)."
        ),
    ] = None,
    category: Category = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", "-s", metavar="DIR", rich_help_panel=DATA, help="Feature store (default: the run's)."),
    ] = None,
    reducer: Annotated[
        str,
        typer.Option(
            "--reducer",
            metavar="max|mean|topk:R",
            rich_help_panel=EVAL,
            help="Image score from the smoothed map: its max, mean, or mean of the top share R (0 < R <= 1).",
        ),
    ] = _E.reducer,
    pixel_map: Annotated[
        Literal[PIXEL_MAPS],
        typer.Option(
            "--pixel-map",
            rich_help_panel=EVAL,
            help="Map for pixel metrics: raw (unsmoothed, as the reference) or smoothed.",
        ),
    ] = _E.pixel_map,
    device: Device = _E.device,
    precision: Precision = _E.precision,
    batch_size: BatchSize = _E.batch_size,
    save_maps: Annotated[
        bool,
        typer.Option(
            "--save-maps", rich_help_panel=OUTPUT, help="Write raw maps (.npy) and heat-map PNGs per test image."
        ),
    ] = False,
    num_workers: Workers = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Score the labelled test split; per-category metrics and their mean; writes metrics.json and metrics.csv."""
    from edcli.commands import eval as command

    res = _run(
        lambda: command.run(
            str(run) if run else None,
            str(checkpoint) if checkpoint else None,
            EvalConfig(reducer=reducer, pixel_map=pixel_map, device=device, precision=precision, batch_size=batch_size),
            str(data_path) if data_path else None,
            dataset.value if dataset else None,
            tuple(category or ()),
            str(store) if store else None,
            save_maps,
            num_workers,
            _tracker(quiet),
        )
    )
    if res is None:
        return
    from edcli.ui import print_json

    if json_out:
        print_json(res)
        return
    render_metrics(res)


def render_metrics(res: dict) -> None:
    from edcli.ui import print_table, print_text

    ts = res["protocol"].get("test_selected")
    title = "evaluation" + (" (TEST-SELECTED epochs: optimistic)" if ts else " (last epoch)")
    if not ts and "validation" in res["protocol"].get("selection", ()):
        title = "evaluation (epochs chosen on validation: no test labels)"
    rows = [*res["rows"], res["mean"]]
    print_table(
        title,
        [
            "category",
            "image AUROC",
            "pixel AUROC",
            "AUPRO@0.3",
            "image AP",
            "pixel AP",
            "F1-max",
            "TPR",
            "FPR",
            "FP",
            "FN",
            "test images",
            "epoch",
            "seconds",
        ],
        [
            [
                r["category"],
                r["image_auroc"],
                r["pixel_auroc"],
                r["aupro"],
                r["image_ap"],
                r["pixel_ap"],
                r["f1_max"],
                r.get("tpr"),
                r.get("fpr"),
                r.get("fp"),
                r.get("fn"),
                r["test_images"],
                r.get("epoch", ""),
                r["seconds"],
            ]
            for r in rows
        ],
        caption=f"pixel metrics on the {res['protocol']['pixel_map']} map; image score {res['protocol']['reducer']} "
        f"of the sigma-4 smoothed map; {res['protocol']['resolution']}; TPR, FPR, FP (false alarms), "
        "FN (misses) at each model's calibrated threshold; n/d = not defined",
        last_row_is_total=True,
    )
    print_text(
        f"wrote {res['metrics_json']} and {res['metrics_csv']}"
        + (f"; per-image scores in {res['predictions']}/<category>.csv" if res.get("predictions") else "")
        + (f"; maps in {res['maps']}" if res.get("maps") else "")
    )


# ------------------------------------------------------------------------------------------- infer
@_command(
    examples=(
        "ed infer runs/ed/checkpoints/bottle.pt new_images/ --out predictions",
        "find shots -name '*.jpg' | ed infer runs/ed/checkpoints/bottle.pt - --csv --fail-on-anomaly",
    )
)
def infer(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            metavar="CHECKPOINT", help="A checkpoint written by `ed train`, or a .onnx file of `ed export`."
        ),
    ],
    inputs: Annotated[
        list[str],
        typer.Argument(metavar="INPUTS...", help="Image files, folders, globs, or - to read paths from stdin."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="DIR", rich_help_panel=OUTPUT, help="Output folder for predictions and heat maps."
        ),
    ] = Path("predictions"),
    batch_size: BatchSize = 8,
    device: Device = "auto",
    precision: Precision = "fp32",
    recursive: Annotated[
        bool, typer.Option("--recursive", "-R", rich_help_panel=DATA, help="Descend into sub-folders.")
    ] = False,
    json_out: Json = False,
    csv_out: Annotated[bool, typer.Option("--csv", rich_help_panel=OUTPUT, help="CSV rows on stdout.")] = False,
    save_heatmaps: Annotated[
        bool,
        typer.Option(
            "--save-heatmaps/--no-save-heatmaps",
            rich_help_panel=OUTPUT,
            help="Heat-map PNGs, predicted masks and raw maps.",
        ),
    ] = True,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            metavar="SCORE",
            rich_help_panel=EVAL,
            help="Override the checkpoint's calibrated threshold (raw score).",
        ),
    ] = None,
    fail_on_anomaly: Annotated[
        bool, typer.Option("--fail-on-anomaly", rich_help_panel=OUTPUT, help="Exit 3 when any image is anomalous.")
    ] = False,
    num_workers: Workers = 2,
    quiet: Quiet = False,
) -> None:
    """Score any images with a checkpoint or an exported .onnx model: predictions.csv/.jsonl, heat maps, masks, raw maps."""
    from edcli.commands import infer as command

    res = _run(
        lambda: command.run(
            str(checkpoint),
            inputs,
            str(out),
            batch_size=batch_size,
            device=device,
            precision=precision,
            recursive=recursive,
            save_heatmaps=save_heatmaps,
            threshold=threshold,
            num_workers=num_workers,
            stdin=sys.stdin,
            track=_tracker(quiet),
        )
    )
    if res is None:
        return
    from edcli.ui import print_json, print_table, print_text

    rows = res["rows"]
    if json_out:
        print_json(rows)
    elif csv_out:
        from edcli.report import predictions_csv_text

        sys.stdout.write(predictions_csv_text(rows))
    else:
        print_table(
            f"predictions ({res['threshold_origin']})",
            ["path", "score", "normalized", "label", "error"],
            [[r["path"], r["score"], r["normalized_score"], r["label"], r["error"] or ""] for r in rows],
        )
        failed = sum(1 for r in rows if r["error"])
        print_text(
            f"scored {len(rows) - failed} of {len(rows)} images; wrote {res['csv']} and {res['jsonl']}"
            + (f"; heat maps in {res['heatmaps']}" if res["heatmaps"] else "")
        )
    if any(r["error"] for r in rows):
        raise typer.Exit(1)
    if fail_on_anomaly and any(r["label"] == "anomalous" for r in rows):
        raise typer.Exit(3)


# ------------------------------------------------------------------------------------------- export
@_command(
    examples=(
        "ed export runs/ed/checkpoints/bottle.pt --out bottle.onnx",
        "ed export runs/ed/checkpoints/bottle.pt --batch 1 --opset 17 && ed infer bottle.onnx images/",
    )
)
def export(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A checkpoint written by `ed train`.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            rich_help_panel=OUTPUT,
            help="The .onnx file. Default: the checkpoint's name with .onnx.",
        ),
    ] = None,
    opset: Annotated[
        int, typer.Option("--opset", metavar="N", rich_help_panel=OUTPUT, help="ONNX opset version (13..20).")
    ] = 17,
    batch: Annotated[
        str,
        typer.Option(
            "--batch",
            metavar="N|dynamic",
            rich_help_panel=OUTPUT,
            help="Batch size of the graph: a number, or dynamic.",
        ),
    ] = "dynamic",
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Export a checkpoint as one ONNX graph (images -> raw map, smoothed map, score) with its calibration."""
    from edcli.commands import export as command

    res = _run(
        lambda: command.run(str(checkpoint), str(out) if out else None, opset=opset, batch=batch, track=_tracker(quiet))
    )
    if res is None:
        return
    from edcli.ui import print_json, print_text

    if json_out:
        print_json(res)
    else:
        print_text(
            f"wrote {res['path']} ({res['bytes'] / 1e6:.1f} MB, opset {res['opset']}, batch {res['batch']}); "
            f"score it with `ed infer {res['path']} IMAGES` or `Detector.load({res['path']!r})`"
        )


# ------------------------------------------------------------------------------------------- report
@_command(examples=("ed eval --run runs/ed && ed report runs/ed", "ed report runs/ed --out /tmp/ed-report.html"))
def report(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder evaluated by `ed eval --run`.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", metavar="FILE", rich_help_panel=OUTPUT, help="HTML file to write. Default: RUN/report.html."
        ),
    ] = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """One self-contained HTML page of an evaluated run: protocol, metrics, curves, histograms, losses, worst images."""
    from edcli.commands import report as command

    res = _run(lambda: command.run(str(run), str(out) if out else None, _tracker(quiet)))
    if res is None:
        return
    from edcli.ui import print_json, print_text

    if json_out:
        print_json(res)
        return
    print_text(
        f"wrote {res['report']} ({_human_bytes(res['bytes'])}, {len(res['categories'])} categories); "
        "open it in a browser, it needs no network"
    )


# ------------------------------------------------------------------------------------------- demo
@_command(examples=("ed demo", "ed demo --quick --out /tmp/ed-demo"))
def demo(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", metavar="DIR", rich_help_panel=OUTPUT, help="Demo folder (dataset, store, run, predictions)."
        ),
    ] = Path("ed-demo"),
    category: Category = None,
    quick: Annotated[
        bool, typer.Option("--quick", rich_help_panel=OPTIM, help="A sub-minute version (fewer images and epochs).")
    ] = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Make a small MVTec-layout dataset from real textures with injected defects and run the whole pipeline on it."""
    from edcli.commands import demo as command

    res = _run(lambda: command.run(str(out), tuple(category or ()), quick=quick, device=device, track=_tracker(quiet)))
    if res is None:
        return
    from edcli.ui import print_text

    render_metrics(res["eval"])
    print_text(res["summary"])


def main() -> None:
    import os

    # idle OpenMP threads sleep instead of spinning: on a shared or small CPU (and beside DataLoader workers) spinning
    # threads steal the cores the work needs. Set before torch is imported; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import signal

    try:
        app(prog_name="ed")
    finally:
        # the command has finished and said so: a Ctrl-C from here on (interpreter shutdown, h5py and torch
        # finalisers) must not turn its exit code into a signal death or print a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@app.command("completions", hidden=True, cls=_Command)
def completions(
    folder: Annotated[Path, typer.Argument(help="Where to write ed.bash, ed.zsh and ed.fish.")] = Path("completions"),
) -> None:
    """Regenerate the static shell completion scripts."""
    from edcli.completions import completion_scripts
    from edcli.files import write_text

    for name, text in completion_scripts(typer.main.get_command(app)).items():
        _run(lambda: write_text(folder / name, text))
        typer.echo(str(folder / name))


if __name__ == "__main__":
    main()
