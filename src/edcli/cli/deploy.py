"""`ed infer`, `ed export`, `ed report` and `ed demo`: scoring new images, the ONNX graph, the HTML page of a run,
and the whole pipeline on a made-up dataset."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edcli.cli.core import command, human_bytes, run_command, tracker
from edcli.cli.evaluate import render_metrics
from edcli.cli.options import DATA, EVAL, OPTIM, OUTPUT, BatchSize, Category, Device, Json, Precision, Quiet, Workers


# ------------------------------------------------------------------------------------------- infer
@command(
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
    # one line: the first line of the docstring is the command's summary in `ed --help`
    """Score any images with a checkpoint or an exported .onnx model: predictions.csv/.jsonl, heat maps, masks, raw maps."""  # noqa: E501
    from edcli.commands.infer import run as run_infer

    res = run_command(
        lambda: run_infer(
            checkpoint=str(checkpoint),
            inputs=inputs,
            out=str(out),
            batch_size=batch_size,
            device=device,
            precision=precision,
            recursive=recursive,
            save_heatmaps=save_heatmaps,
            threshold=threshold,
            num_workers=num_workers,
            stdin=sys.stdin,
            track=tracker(quiet),
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
@command(
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
    from edcli.commands.export import run as run_export

    res = run_command(
        lambda: run_export(
            checkpoint=str(checkpoint), out=str(out) if out else None, opset=opset, batch=batch, track=tracker(quiet)
        )
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
@command(examples=("ed eval --run runs/ed && ed report runs/ed", "ed report runs/ed --out /tmp/ed-report.html"))
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
    from edcli.commands.report import run as run_report

    res = run_command(lambda: run_report(run_dir=str(run), out=str(out) if out else None, track=tracker(quiet)))
    if res is None:
        return
    from edcli.ui import print_json, print_text

    if json_out:
        print_json(res)
        return
    print_text(
        f"wrote {res['report']} ({human_bytes(res['bytes'])}, {len(res['categories'])} categories); "
        "open it in a browser, it needs no network"
    )


# ------------------------------------------------------------------------------------------- demo
@command(examples=("ed demo", "ed demo --quick --out /tmp/ed-demo"))
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
    from edcli.commands.demo import run as run_demo

    res = run_command(
        lambda: run_demo(
            out=str(out), categories=tuple(category or ()), quick=quick, device=device, track=tracker(quiet)
        )
    )
    if res is None:
        return
    from edcli.ui import print_text

    render_metrics(res["eval"])
    print_text(res["summary"])
