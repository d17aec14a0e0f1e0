"""The `ed` Typer app: thin commands (parse -> config -> one commands.<cmd>.run(...) -> render). The only typer importer."""
from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from edcli.config import (
    DEFAULT_BACKBONE,
    BackboneConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
)
from edcli.data.layouts import LAYOUTS
from edcli.version import __version__

app = typer.Typer(
    name="ed",
    help="Unsupervised image anomaly detection with ED (Emphasize Differences): train on normal images, "
         "score new ones, localise their defects.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_T, _D, _M, _E = TrainConfig(), DataConfig(), ModelConfig(), EvalConfig()

# ------------------------------------------------------------------------------------------- shared options
# the --dataset choices are the registered layouts (data/layouts.py)
DatasetName = enum.Enum("DatasetName", {name: name for name in LAYOUTS}, type=str)
Dataset = Annotated[DatasetName, typer.Option("--dataset", "-d", help="Layout of --data-path (see the README's table).")]
DataPath = Annotated[Optional[Path], typer.Option("--data-path", "-p", help="Dataset root: one folder per category.")]
Category = Annotated[Optional[list[str]], typer.Option("--category", "-c", help="Only this category (repeatable). Default: all found.")]
Store = Annotated[Path, typer.Option("--store", "-s", help="Feature store directory (HDF5 files).")]
Backbone = Annotated[str, typer.Option("--backbone", "-b", help="timm model name with features_only support.")]
Weights = Annotated[Optional[Path], typer.Option("--weights", help="Backbone weights file (offline use).")]
RandomInit = Annotated[bool, typer.Option("--random-init", help="Untrained backbone: for tests and timing only (recorded).")]
ImageSize = Annotated[int, typer.Option("--image-size", help="Input size S: images become S x S.")]
Levels = Annotated[str, typer.Option("--levels", help="timm feature indices, comma separated (2,3 = strides 8 and 16).")]
NormalName = Annotated[str, typer.Option("--normal-name", help="Name of the normal folder for --dataset folder.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Precision = Annotated[str, typer.Option("--precision", help="fp32, bf16 or fp16 (autocast on GPU).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per batch.")]
Workers = Annotated[int, typer.Option("--num-workers", help="DataLoader worker processes for image decoding.")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout (nothing else).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Show the version and exit.")] = False) -> None:
    """ed: ED anomaly detection from the command line."""


def _run(fn: Callable[[], Any], quiet: bool = False) -> Any:
    """Run a command; EdError -> one red line + exit 1; Ctrl-C -> exit 130. Under torchrun only rank 0 renders."""
    import os

    from edcli.errors import EdError
    from edcli.ui import print_error

    try:
        result = fn()
        return result if os.environ.get("RANK", "0") == "0" else None
    except EdError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code)
    except KeyboardInterrupt:
        print_error("interrupted; completed work is kept (ed train: rerun with --resume to continue)")
        raise typer.Exit(130)
    finally:
        if "torch.distributed" in sys.modules:  # only under torchrun; --help never imports torch
            from edcli.engine import shutdown_distributed

            shutdown_distributed()


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


def _bb(backbone: str, levels: str, weights: Optional[Path], random_init: bool) -> BackboneConfig:
    return BackboneConfig(name=backbone, levels=_levels(levels), weights=str(weights) if weights else None,
                          random_init=random_init)


def _data(dataset: DatasetName, data_path: Optional[Path], category: Optional[list[str]], image_size: int,
          normal_name: str) -> DataConfig:
    return DataConfig(dataset=dataset.value, data_path=str(data_path) if data_path else "",
                      categories=tuple(category or ()), image_size=image_size, normal_name=normal_name)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ------------------------------------------------------------------------------------------- distmaps
@app.command()
def distmaps(
    store: Store = Path("store"),
    backbone: Backbone = DEFAULT_BACKBONE,
    image_size: ImageSize = _D.image_size,
    levels: Levels = "2,3",
    grid: Annotated[Optional[list[int]], typer.Option("--grid", help="Grid side H (H x H tokens) instead of a backbone; repeatable.")] = None,
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

    print_table("distance maps", ["file", "grids", "tokens", "size"],
                [[res["path"], ", ".join(res["grids"]), ", ".join(map(str, res["tokens"])), _human_bytes(res["bytes"])]])


# ------------------------------------------------------------------------------------------- features
@app.command()
def features(
    data_path: DataPath = None,
    dataset: Dataset = DatasetName(_D.dataset),
    category: Category = None,
    store: Store = Path("store"),
    backbone: Backbone = DEFAULT_BACKBONE,
    weights: Weights = None,
    random_init: RandomInit = False,
    image_size: ImageSize = _D.image_size,
    levels: Levels = "2,3",
    normal_name: NormalName = _D.normal_name,
    device: Device = "auto",
    batch_size: BatchSize = 16,
    num_workers: Workers = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute categories already in the store.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Run the frozen backbone once per category: prototypes and cached pooled features of train and test images."""
    from edcli.commands import features as command

    data = _data(dataset, data_path, category, image_size, normal_name)
    rows = _run(lambda: command.run(data, _bb(backbone, levels, weights, random_init), str(store), device,
                                     batch_size, overwrite, num_workers, _tracker(quiet)))
    if rows is None:
        return
    from edcli.ui import print_json, print_table

    if json_out:
        print_json(rows)
        return
    print_table(f"features in {store}", ["category", "#train", "#test", "levels (C, H, W)", "seconds", "file size", "status"],
                [[r["category"], r["train"], r["test"], "  ".join("x".join(map(str, s)) for s in r["shapes"]),
                  r["seconds"], _human_bytes(r["bytes"]), r["status"]] for r in rows])


# ------------------------------------------------------------------------------------------- train
@app.command()
def train(
    data_path: DataPath = None,
    dataset: Dataset = DatasetName(_D.dataset),
    category: Category = None,
    store: Store = Path("store"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints/<category>.pt, run.json, metrics.")] = Path("runs/ed"),
    backbone: Backbone = DEFAULT_BACKBONE,
    weights: Weights = None,
    random_init: RandomInit = False,
    image_size: ImageSize = _D.image_size,
    levels: Levels = "2,3",
    normal_name: NormalName = _D.normal_name,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs per category.")] = _T.epochs,
    batch_size: BatchSize = _T.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = _T.lr,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (reset per category, as the reference).")] = _T.seed,
    arch: Annotated[str, typer.Option("--arch", help="ed, or fod (subtraction fusion, plain MLP, fixed temperature).")] = _M.arch,
    intra: Annotated[bool, typer.Option("--intra/--no-intra", help="Intra-image (self-attention) branch.")] = _M.intra,
    inter: Annotated[bool, typer.Option("--inter/--no-inter", help="Inter-image (prototype cross-attention) branch.")] = _M.inter,
    layers: Annotated[int, typer.Option("--layers", help="Encoder layers per level.")] = _M.layers,
    heads: Annotated[int, typer.Option("--heads", help="Attention heads.")] = _M.heads,
    d_model: Annotated[Optional[str], typer.Option("--d-model", help="Model width per level, comma separated. Default: C/2 rounded up to 32, >= 64.")] = None,
    attn_out_proj: Annotated[bool, typer.Option("--attn-out-proj", help="Apply the attention output projection (the reference discards it).")] = _M.attn_out_proj,
    device: Device = _T.device,
    precision: Precision = _T.precision,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Evaluate on the test split every N epochs (0: never).")] = _T.eval_every,
    select: Annotated[str, typer.Option("--select", help="last (honest), best-image or best-pixel (test-selected).")] = _T.select,
    calib_fraction: Annotated[float, typer.Option("--calib-fraction", help="Share of normal train images held out for the threshold.")] = _T.calib_fraction,
    strategy: Annotated[str, typer.Option("--strategy", help="Under torchrun: categories (one per rank) or ddp (one category data-parallel).")] = _T.strategy,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Categories trained side by side in worker processes.")] = _T.jobs,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last completed epoch.")] = False,
    num_workers: Workers = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train one ED model per category from the cached features (computing missing store entries first)."""
    from edcli.commands import train as command

    dm = _int_list(d_model, "--d-model", "256,512") if d_model else ()
    data = _data(dataset, data_path, category, image_size, normal_name)
    mcfg = ModelConfig(arch=arch, intra=intra, inter=inter, layers=layers, heads=heads, d_model=dm,
                       attn_out_proj=attn_out_proj)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, precision=precision,
                       eval_every=eval_every, select=select, calib_fraction=calib_fraction, strategy=strategy, jobs=jobs)
    rows = _run(lambda: command.run(data, _bb(backbone, levels, weights, random_init), mcfg, tcfg, str(store), str(out),
                                  resume=resume, num_workers=num_workers, track=_tracker(quiet)))
    if rows is None:
        return
    from edcli.ui import print_json, print_table

    if json_out:
        print_json(rows)
        return
    sel = " (test-selected)" if any(r.get("test_selected") for r in rows) else ""
    print_table(f"training{sel}", ["category", "epochs", "seconds", "rec", "intra corr", "inter corr", "intra H",
                                   "inter H", "threshold", "checkpoint"],
                [[r["category"], r["epochs"], r["seconds"], r["rec"], r["intra1"], r["inter1"], r["intra_ent"],
                  r["inter_ent"], r["threshold"], r["checkpoint"]] for r in rows])


# ------------------------------------------------------------------------------------------- eval
@app.command("eval")
def eval_(
    run: Annotated[Optional[Path], typer.Option("--run", "-r", help="Run folder written by `ed train --out`.")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option("--checkpoint", help="One checkpoint file instead of a run.")] = None,
    data_path: DataPath = None,
    dataset: Annotated[Optional[DatasetName], typer.Option("--dataset", "-d", help="Layout of --data-path (default: the checkpoint's).")] = None,
    category: Category = None,
    store: Annotated[Optional[Path], typer.Option("--store", "-s", help="Feature store (default: the run's).")] = None,
    reducer: Annotated[str, typer.Option("--reducer", help="Image score from the smoothed map: max, mean or topk:<ratio>.")] = _E.reducer,
    pixel_map: Annotated[str, typer.Option("--pixel-map", help="Map for pixel metrics: raw (unsmoothed, as the reference) or smoothed.")] = _E.pixel_map,
    device: Device = _E.device,
    precision: Precision = _E.precision,
    batch_size: BatchSize = _E.batch_size,
    save_maps: Annotated[bool, typer.Option("--save-maps", help="Write raw maps (.npy) and heat-map PNGs per test image.")] = False,
    num_workers: Workers = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Score the labelled test split; per-category metrics and their mean; writes metrics.json and metrics.csv."""
    from edcli.commands import eval as command

    cfg = EvalConfig(reducer=reducer, pixel_map=pixel_map, device=device, precision=precision, batch_size=batch_size)
    res = _run(lambda: command.run(str(run) if run else None, str(checkpoint) if checkpoint else None, cfg,
                                str(data_path) if data_path else None, dataset.value if dataset else None, tuple(category or ()),
                                str(store) if store else None, save_maps, num_workers, _tracker(quiet)))
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
    rows = [*res["rows"], res["mean"]]
    print_table(title, ["category", "image AUROC", "pixel AUROC", "AUPRO@0.3", "image AP", "pixel AP", "F1-max",
                        "test images", "seconds"],
                [[r["category"], r["image_auroc"], r["pixel_auroc"], r["aupro"], r["image_ap"], r["pixel_ap"],
                  r["f1_max"], r["test_images"], r["seconds"]] for r in rows],
                caption=f"pixel metrics on the {res['protocol']['pixel_map']} map; image score {res['protocol']['reducer']} "
                        f"of the sigma-4 smoothed map; {res['protocol']['resolution']}; n/d = not defined",
                last_row_is_total=True)
    print_text(f"wrote {res['metrics_json']} and {res['metrics_csv']}" + (f"; maps in {res['maps']}" if res.get("maps") else ""))


# ------------------------------------------------------------------------------------------- infer
@app.command()
def infer(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `ed train`, or a .onnx file of `ed export`.")],
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders, globs, or - to read paths from stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for predictions and heat maps.")] = Path("predictions"),
    batch_size: BatchSize = 8,
    device: Device = "auto",
    precision: Precision = "fp32",
    recursive: Annotated[bool, typer.Option("--recursive", "-R", help="Descend into sub-folders.")] = False,
    json_out: Json = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV rows on stdout.")] = False,
    save_heatmaps: Annotated[bool, typer.Option("--save-heatmaps/--no-save-heatmaps", help="Heat-map PNGs, predicted masks and raw maps.")] = True,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Override the checkpoint's calibrated threshold (raw score).")] = None,
    fail_on_anomaly: Annotated[bool, typer.Option("--fail-on-anomaly", help="Exit 3 when any image is anomalous.")] = False,
    num_workers: Workers = 2,
    quiet: Quiet = False,
) -> None:
    """Score any images with a checkpoint: predictions.csv/.jsonl, heat maps, masks and raw maps."""
    from edcli.commands import infer as command

    res = _run(lambda: command.run(str(checkpoint), inputs, str(out), batch_size=batch_size, device=device,
                                 precision=precision, recursive=recursive, save_heatmaps=save_heatmaps,
                                 threshold=threshold, num_workers=num_workers, stdin=sys.stdin, track=_tracker(quiet)))
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
        print_table(f"predictions ({res['threshold_origin']})", ["path", "score", "normalized", "label", "error"],
                    [[r["path"], r["score"], r["normalized_score"], r["label"], r["error"] or ""] for r in rows])
        print_text(f"wrote {res['csv']} and {res['jsonl']}" + (f"; heat maps in {res['heatmaps']}" if res["heatmaps"] else ""))
    if any(r["error"] for r in rows):
        raise typer.Exit(1)
    if fail_on_anomaly and any(r["label"] == "anomalous" for r in rows):
        raise typer.Exit(3)


# ------------------------------------------------------------------------------------------- export
@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint written by `ed train`.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The .onnx file. Default: the checkpoint's name with .onnx.")] = None,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset version (13..20).")] = 17,
    batch: Annotated[str, typer.Option("--batch", help="Batch size of the graph: a number, or dynamic.")] = "dynamic",
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Export a checkpoint as one ONNX graph (images -> raw map, smoothed map, score) with its calibration."""
    from edcli.commands import export as command

    res = _run(lambda: command.run(str(checkpoint), str(out) if out else None, opset=opset, batch=batch,
                                   track=_tracker(quiet)))
    if res is None:
        return
    from edcli.ui import print_json, print_text

    if json_out:
        print_json(res)
    else:
        print_text(f"wrote {res['path']} ({res['bytes'] / 1e6:.1f} MB, opset {res['opset']}, batch {res['batch']}); "
                   f"score it with `ed infer {res['path']} IMAGES` or `Detector.load({res['path']!r})`")


# ------------------------------------------------------------------------------------------- demo
@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Demo folder (dataset, store, run, predictions).")] = Path("ed-demo"),
    category: Category = None,
    quick: Annotated[bool, typer.Option("--quick", help="A sub-minute version (smaller images, fewer epochs).")] = False,
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
    app(prog_name="ed")



@app.command("completions", hidden=True)
def completions(folder: Annotated[Path, typer.Argument(help="Where to write ed.bash, ed.zsh and ed.fish.")] = Path("completions")) -> None:
    """Regenerate the static shell completion scripts."""
    from edcli.completions import completion_scripts

    folder.mkdir(parents=True, exist_ok=True)
    for name, text in completion_scripts(typer.main.get_command(app)).items():
        (folder / name).write_text(text)
        typer.echo(str(folder / name))


if __name__ == "__main__":
    main()
