"""The option groups of every command's help and the options several commands share, as `Annotated` types."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

import typer

from edcli.config import PRECISIONS
from edcli.data.layouts import LAYOUTS

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
    typer.Option(
        "--precision",
        rich_help_panel=HARDWARE,
        help="Autocast precision of the matrix products: fp16 needs a GPU, bf16 a GPU or a CPU with bf16 units "
        "(AVX512-BF16 or AMX).",
    ),
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
