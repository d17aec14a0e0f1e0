"""`ed distmaps` and `ed features`: the feature store (distance maps, then prototypes and cached features)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edcli.cli.core import backbone_config, command, data_config, human_bytes, parse_levels, run_command, tracker
from edcli.cli.options import (
    BACKBONE,
    DATA,
    OUTPUT,
    Backbone,
    BatchSize,
    Category,
    Dataset,
    DatasetName,
    Device,
    ImageSize,
    Json,
    Levels,
    NeedDataPath,
    NormalName,
    Quiet,
    RandomInit,
    Store,
    TestFraction,
    Weights,
    Workers,
)
from edcli.config import DEFAULT_BACKBONE, DataConfig, TrainConfig

_D, _T = DataConfig(), TrainConfig()


# ------------------------------------------------------------------------------------------- distmaps
@command(
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
    from edcli.commands.distmaps import run as run_distmaps

    res = run_command(
        lambda: run_distmaps(
            store=str(store),
            backbone=backbone,
            image_size=image_size,
            levels=parse_levels(levels),
            grids=tuple(grid or ()),
        )
    )
    if json_out:
        from edcli.ui import print_json

        print_json(res)
        return
    from edcli.ui import print_table

    print_table(
        "distance maps",
        ["file", "grids", "tokens", "size"],
        [[res["path"], ", ".join(res["grids"]), ", ".join(map(str, res["tokens"])), human_bytes(res["bytes"])]],
    )


# ------------------------------------------------------------------------------------------- features
@command(
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
    from edcli.commands.features import run as run_features

    def go():
        data = data_config(dataset, data_path, category, image_size, normal_name, test_fraction, seed)
        bb_cfg = backbone_config(backbone, levels, weights, random_init)
        track = tracker(quiet)
        # the first line at once: torch and the backbone take seconds to load before any image is read
        cats = ", ".join(data.categories) if data.categories else "every category"
        track.log(
            f"ed features: {cats} of {data.data_path} ({data.dataset}) -> {store}"
            f"{' (--overwrite)' if overwrite else ''}; {bb_cfg.name} at {data.image_size} px, levels "
            f"{','.join(map(str, bb_cfg.levels))}, batch {batch_size}, device {device}"
        )
        return run_features(
            data=data,
            bb_cfg=bb_cfg,
            store=str(store),
            device=device,
            batch_size=batch_size,
            overwrite=overwrite,
            num_workers=num_workers,
            track=track,
        )

    rows = run_command(go)
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
                human_bytes(r["bytes"]),
                r["status"],
            ]
            for r in rows
        ],
    )
