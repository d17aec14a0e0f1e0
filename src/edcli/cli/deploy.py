"""`ed infer`, `ed export`, `ed report` and `ed demo`: scoring new images, the ONNX graph, the HTML page of a run,
and the whole pipeline on a made-up dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from edcli.cli.core import command, human_bytes, run_command, tracker
from edcli.cli.evaluate import render_metrics
from edcli.cli.options import (
    DATA,
    EVAL,
    HARDWARE,
    OPTIM,
    OUTPUT,
    BatchSize,
    Category,
    Device,
    Json,
    Precision,
    Quiet,
    Workers,
)
from edcli.config import TrainConfig
from edcli.infer_scoring import AUTO_ALL_UP_TO, HEATMAP_CHOICES


# ------------------------------------------------------------------------------------------- infer
class _InferOutput:
    """What `ed infer` prints as rows arrive: every row streamed for --json (one JSON array) and --csv; for a
    person, at most TABLE_ROWS rows (all of a small run, else the highest scores) under a summary. Each failed file
    is one line on stderr (the first FAILED_LINES, then a count), so a CI log says why the exit code is 1."""

    TABLE_ROWS, FAILED_LINES = 30, 20

    def __init__(self, json_out: bool, csv_out: bool, track):
        self.json_out, self.csv_out, self.track = json_out, csv_out, track
        self.first, self.kept, self.top, self.failed, self.flagged, self.n = [], [], [], 0, 0, 0

    def __call__(self, row: dict) -> None:
        import heapq

        self.n += 1
        if row.get("error"):
            self.failed += 1
            if self.failed <= self.FAILED_LINES:
                self.track.warn(f"failed: {row['error']}")
        self.flagged += row.get("label") == "anomalous"
        if self.json_out:
            from edcli.report import PREDICTION_FIELDS

            lead = "[\n  " if self.n == 1 else ",\n  "
            sys.stdout.write(lead + json.dumps({k: row.get(k) for k in PREDICTION_FIELDS}))
            sys.stdout.flush()
        elif self.csv_out:
            from edcli.report import predictions_csv_header, predictions_csv_line

            sys.stdout.write((predictions_csv_header() if self.n == 1 else "") + predictions_csv_line(row))
            sys.stdout.flush()
        else:
            if len(self.first) < self.TABLE_ROWS:
                self.first.append(row)
            key = (row["score"] if row.get("score") is not None else float("-inf"), -self.n)
            item = (key, self.n, row)
            if len(self.top) < self.TABLE_ROWS:
                heapq.heappush(self.top, item)
            else:
                heapq.heappushpop(self.top, item)

    def close(self, res: dict | None) -> None:
        if self.failed > self.FAILED_LINES:
            self.track.warn(f"failed: {self.failed - self.FAILED_LINES} more files (see the error column)")
        if self.json_out:
            sys.stdout.write("[]\n" if self.n == 0 else "\n]\n")
            sys.stdout.flush()
            return
        if self.csv_out or res is None:
            return
        from edcli.ui import print_table, print_text

        if self.n <= self.TABLE_ROWS:
            rows, title = self.first, f"predictions ({res['threshold_origin']})"
        else:
            rows = [r for _, _, r in sorted(self.top, reverse=True)]
            title = f"the {self.TABLE_ROWS} highest scores of {self.n} images ({res['threshold_origin']})"
        print_table(
            title,
            ["path", "score", "normalized", "label", "error"],
            [[r["path"], r["score"], r["normalized_score"], r["label"], r["error"] or ""] for r in rows],
        )
        rate = res.get("images_per_second")
        text = (
            f"scored {self.n - self.failed} of {self.n} images: {self.flagged} anomalous, {self.failed} failed"
            + (f"; {rate:.1f} images/s" if rate else "")
            + (f" ({res['kept']} kept from before)" if res.get("kept") else "")
            + f"; wrote {res['csv']} and {res['jsonl']}"
        )
        if res.get("heatmaps"):
            which = "" if res["heatmap_choice"] == "all" else " of the anomalous images"
            text += f"; heat maps{which} in {res['heatmaps']}"
        if res.get("waiting"):
            text += f"; merge into the final files waits ({res['waiting']})"
        print_text(text)


@command(
    examples=(
        "ed infer runs/ed/checkpoints/bottle.pt new_images/ --out predictions",
        "find shots -name '*.jpg' | ed infer runs/ed/checkpoints/bottle.pt - --csv --fail-on-anomaly",
        "ed infer bottle.pt /data/incoming -R --out preds --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT",
        "ed infer bottle.pt /data/incoming -R --out preds --resume",
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
    max_pixels: Annotated[
        int | None,
        typer.Option(
            "--max-pixels",
            metavar="N",
            rich_help_panel=DATA,
            help="Larger images are failed rows, decided from the header before decoding. Default 100000000.",
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="I/N",
            rich_help_panel=DATA,
            help="Score the I-th of N contiguous parts of the inputs (0-based); the last part to finish merges.",
        ),
    ] = None,
    json_out: Json = False,
    csv_out: Annotated[bool, typer.Option("--csv", rich_help_panel=OUTPUT, help="CSV rows on stdout.")] = False,
    save_heatmaps: Annotated[
        Literal[HEATMAP_CHOICES],
        typer.Option(
            "--save-heatmaps",
            rich_help_panel=OUTPUT,
            help=f"Heat-map panels and masks of which images; auto: all up to {AUTO_ALL_UP_TO} inputs, else anomalous.",
        ),
    ] = "auto",
    no_save_heatmaps: Annotated[
        bool, typer.Option("--no-save-heatmaps", rich_help_panel=OUTPUT, help="The same as --save-heatmaps none.")
    ] = False,
    save_raw_maps: Annotated[
        bool, typer.Option("--save-raw-maps", rich_help_panel=OUTPUT, help="Raw anomaly maps (.npy) of every image.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", rich_help_panel=OUTPUT, help="Score only the images without a row in --out (same model)."
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", rich_help_panel=OUTPUT, help="Replace the predictions and heat maps in --out."),
    ] = False,
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
    engine: Annotated[
        Literal["torch", "ray"],
        typer.Option(
            "--engine", rich_help_panel=HARDWARE, help="ray: score in a Ray Data pipeline (pip install 'edcli[ray]')."
        ),
    ] = "torch",
    num_workers: Workers = 2,
    quiet: Quiet = False,
) -> None:
    # one line: the first line of the docstring is the command's summary in `ed --help`
    """Score any images with a checkpoint or an exported .onnx model: predictions.csv/.jsonl, heat maps, masks, raw maps."""  # noqa: E501
    from edcli.commands.infer import run as run_infer

    track = tracker(quiet)
    shown = _InferOutput(json_out, csv_out, track)
    res = run_command(
        lambda: run_infer(
            checkpoint=str(checkpoint),
            inputs=inputs,
            out=str(out),
            batch_size=batch_size,
            device=device,
            precision=precision,
            recursive=recursive,
            save_heatmaps="none" if no_save_heatmaps else save_heatmaps,
            save_raw_maps=save_raw_maps,
            threshold=threshold,
            num_workers=num_workers,
            resume=resume,
            overwrite=overwrite,
            shard=shard,
            max_pixels=max_pixels,
            engine=engine,
            stdin=sys.stdin,
            track=track,
            on_row=shown,
        )
    )
    if res is None:
        if shown.n and shown.json_out:  # an error after rows were streamed: the JSON array still closes
            shown.close(None)
        return
    for r in res.get("rows") or ():  # a run that handed its rows back instead (a stand-in in tests)
        shown(r)
    shown.close(res)
    if shown.failed:
        raise typer.Exit(1)
    if fail_on_anomaly and shown.flagged:
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

    def go():
        track = tracker(quiet)
        # the first line at once: torch (to read the checkpoints' histories) takes seconds to load
        track.log(f"ed report: {run} -> {out or run / 'report.html'}")
        return run_report(run_dir=str(run), out=str(out) if out else None, track=track)

    res = run_command(go)
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
    seed: Annotated[
        int,
        typer.Option("--seed", metavar="N", rich_help_panel=OPTIM, help="Training seed (the dataset stays the same)."),
    ] = TrainConfig.seed,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Make a small MVTec-layout dataset from real textures with injected defects and run the whole pipeline on it."""
    from edcli.commands.demo import run as run_demo

    res = run_command(
        lambda: run_demo(
            out=str(out),
            categories=tuple(category or ()),
            quick=quick,
            seed=seed,
            device=device,
            track=tracker(quiet),
        )
    )
    if res is None:
        return
    from edcli.ui import print_text

    render_metrics(res["eval"])
    print_text(res["summary"])
