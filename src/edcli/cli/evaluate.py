"""`ed eval`: metrics of a run's checkpoints on the labelled test split, and the table they are shown in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from edcli.cli.core import command, run_command, tracker
from edcli.cli.options import (
    DATA,
    EVAL,
    OUTPUT,
    BatchSize,
    Category,
    DataPath,
    DatasetName,
    Device,
    Json,
    Precision,
    Quiet,
    Workers,
)
from edcli.config import PIXEL_MAPS, SCORES, EvalConfig

_E = EvalConfig()


# ------------------------------------------------------------------------------------------- eval
@command("eval", examples=("ed eval --run runs/ed", "ed eval --run runs/ed --reducer topk:0.01 --save-maps --json"))
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
    score: Annotated[
        str | None,
        typer.Option(
            "--score",
            metavar="|".join(SCORES),
            rich_help_panel=EVAL,
            help="Per-token score (ed, rec, rec-kl); default: the one each checkpoint was calibrated with.",
        ),
    ] = None,
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
    from edcli.commands.eval import run as run_eval

    res = run_command(
        lambda: run_eval(
            run_dir=str(run) if run else None,
            checkpoint=str(checkpoint) if checkpoint else None,
            eval_cfg=EvalConfig(
                reducer=reducer, pixel_map=pixel_map, device=device, precision=precision, batch_size=batch_size
            ),
            score=score,
            data_path=str(data_path) if data_path else None,
            dataset=dataset.value if dataset else None,
            categories=tuple(category or ()),
            store=str(store) if store else None,
            save_maps=save_maps,
            num_workers=num_workers,
            track=tracker(quiet),
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
    """The metrics table of `ed eval` (and of `ed demo`), then where the results were written."""
    from edcli.ui import print_table, print_text

    ts = res["protocol"].get("test_selected")
    title = "evaluation" + (" (TEST-SELECTED epochs: optimistic)" if ts else " (last epoch)")
    if not ts and "validation" in res["protocol"].get("selection", ()):
        title = "evaluation (epochs chosen on validation: no test labels)"
    rows = [*res["rows"], res["mean"]]
    proto = res["protocol"]
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
        caption=f"pixel metrics on the {proto['pixel_map']} map; image score {proto['reducer']} of the sigma-4 "
        f"smoothed map of the {proto.get('score', 'ed')} score; weights averaged: "
        f"{proto.get('weight_average', 'none')}; {proto['resolution']}; TPR, FPR, FP (false alarms), "
        "FN (misses) at each model's calibrated threshold; n/d = not defined",
        last_row_is_total=True,
    )
    print_text(
        f"wrote {res['metrics_json']} and {res['metrics_csv']}"
        + (f"; per-image scores in {res['predictions']}/<category>.csv" if res.get("predictions") else "")
        + (f"; maps in {res['maps']}" if res.get("maps") else "")
    )
