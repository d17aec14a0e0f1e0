"""Frozen configuration dataclasses of plain values. Their defaults are the CLI defaults."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from edcli.errors import UsageError

ARCHS = ("ed", "fod")
PRECISIONS = ("fp32", "bf16", "fp16")
SELECTIONS = ("last", "best-image", "best-pixel", "validation")
PIXEL_MAPS = ("raw", "smoothed")
SCORES = ("ed", "rec", "rec-kl")  # method.scoring.token_score
AVERAGES = ("none", "ema", "swa")  # training.average
STRATEGIES = ("auto", "categories", "ddp")  # under torchrun
WIDTHS = ("reference", "auto")  # ModelConfig.width when d_model is empty
REFERENCE_WIDTHS = (256, 512)  # the reference's d_model per level whatever the backbone; later levels take the last
OPTIMIZERS = ("reference", "per-level")
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_BACKBONE = "wide_resnet50_2"
SEED_LIMIT = 2**32  # numpy's seeds are 0 <= seed < 2**32
_DEVICE = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")
DEMO_BACKBONE = "tf_efficientnet_lite0"


def _from_dict(cls, d: dict[str, Any]):
    """Build a dataclass from a dict, ignoring unknown keys and turning lists back into tuples."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for k, v in d.items():
        if k in names:
            kw[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


# --------------------------------------------------------------------------------- validation on construction
# Every value is checked when its config is built, so a bad one fails in a line naming the option, the value and
# what is allowed, before any model, file or allocation (UsageError: exit 2).


def _bad(option: str, value: Any, allowed: str) -> UsageError:
    return UsageError(f"{option} {value!r}: {allowed}")


def _int(option: str, value: Any, low: int, high: int | None = None) -> None:
    """An integer in [low, high) (high None: no upper bound); bools are not counts."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value >= high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high - 1}"
        raise _bad(option, value, f"use {allowed}")


def _real(
    option: str, value: Any, low: float, *, low_open: bool, high: float | None = None, high_open: bool = True
) -> None:
    """A finite number in the interval (bounds open or closed as given)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            high is None or (value < high if high_open else value <= high)
        )
    if not ok:
        lo = f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high:g}"
        raise _bad(option, value, f"use a finite number {lo}{hi}")


def _choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _bad(option, value, f"choose one of {', '.join(choices)}")


def _device(option: str, value: Any) -> None:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value.lower()):
        raise _bad(option, value, "use auto, cpu, cuda, cuda:N or mps")


def check_reducer(reducer: Any) -> tuple[str, float]:
    """("max" | "mean" | "topk", ratio) of a --reducer value; UsageError otherwise."""
    if reducer in ("max", "mean"):
        return reducer, 0.0
    if isinstance(reducer, str) and reducer.startswith("topk:"):
        try:
            ratio = float(reducer.split(":", 1)[1])
        except ValueError:
            ratio = -1.0
        if 0.0 < ratio <= 1.0:
            return "topk", ratio
    raise _bad("--reducer", reducer, "use max, mean or topk:<ratio> with 0 < ratio <= 1 (e.g. topk:0.01)")


class _Dictable:
    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return _from_dict(cls, d)


@dataclass(frozen=True)
class DataConfig(_Dictable):
    dataset: str = "mvtec"
    data_path: str = ""
    categories: tuple[str, ...] = ()  # empty: every category found under data_path
    image_size: int = 256
    normal_name: str = "good"  # the normal folder's name for the `folder` layout
    test_fraction: float = 0.2  # `folder` category without test/: share of the normal images held out as its test split
    split_seed: int = 3407  # which images that share is (ed train: its --seed)

    def __post_init__(self) -> None:
        # the backbone-dependent limits (every grid >= 2x2, memory) are checked where the backbone is known
        _int("--image-size", self.image_size, 1)
        if not isinstance(self.normal_name, str) or not self.normal_name or "/" in self.normal_name:
            raise _bad("--normal-name", self.normal_name, "use a plain folder name")
        if not all(isinstance(c, str) and c for c in self.categories):
            raise _bad("--category", self.categories, "use non-empty category names")
        _real("--test-fraction", self.test_fraction, 0.0, low_open=True, high=1.0)
        _int("--seed", self.split_seed, 0, SEED_LIMIT)


@dataclass(frozen=True)
class BackboneConfig(_Dictable):
    name: str = DEFAULT_BACKBONE
    levels: tuple[int, ...] = (2, 3)  # timm feature indices: strides 8 and 16, as the reference
    weights: str | None = None  # a local weights file; None: packaged or hub weights
    random_init: bool = False  # explicit, for tests and timing only; recorded in every artefact

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise _bad("--backbone", self.name, "use a timm model name (e.g. wide_resnet50_2)")
        if not self.levels:
            raise _bad("--levels", self.levels, "give at least one feature index (e.g. 2,3)")
        for k in self.levels:
            _int("--levels", k, 0)


@dataclass(frozen=True)
class ModelConfig(_Dictable):
    arch: str = "ed"
    intra: bool = True
    inter: bool = True
    layers: int = 3
    heads: int = 8
    ffn_ratio: int = 4
    dropout: float = 0.0
    d_model: tuple[int, ...] = ()  # explicit widths per level; empty: chosen by `width`
    attn_out_proj: bool = False  # the reference computes and discards it; off by default
    width: str = "reference"  # with d_model empty: reference (256, 512) or auto (C/2 rule, d_model_for)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        # Checkpoints from before `width` existed stored d_model=() meaning the C/2 rule.
        if "width" not in d:
            d = dict(d, width="auto")
        return _from_dict(cls, d)

    def __post_init__(self) -> None:
        _choice("--arch", self.arch, ARCHS)
        _choice("width", self.width, WIDTHS)
        _int("--layers", self.layers, 1)
        _int("--heads", self.heads, 1)
        _int("ffn_ratio", self.ffn_ratio, 1)
        _real("dropout", self.dropout, 0.0, low_open=False, high=1.0)
        if not (self.intra or self.inter):
            raise UsageError("both --no-intra and --no-inter given; at least one attention branch is needed")
        for d in self.d_model:
            _int("--d-model", d, 1)
            if d % self.heads or d % 4:
                raise _bad(
                    "--d-model",
                    d,
                    f"use a width divisible by --heads {self.heads} and by 4 (the 2-D positional encoding)",
                )


@dataclass(frozen=True)
class TrainConfig(_Dictable):
    epochs: int = 100
    batch_size: int = 1
    lr: float = 1e-4
    seed: int = 3407
    lambda1: float = 0.5
    lambda2: float = 0.5
    device: str = "auto"
    precision: str = "fp32"
    eval_every: int = 0
    select: str = "last"
    calib_fraction: float = 0.1
    val_fraction: float = 0.1  # --select validation: share of the normal train images held out for validation
    strategy: str = "auto"  # auto|categories|ddp (under torchrun)
    jobs: int = 1
    optimizer: str = "reference"  # reference: one Adam, grads zero-filled between levels (torch 1.13); per-level
    lr_schedule: str = "constant"  # constant (the reference) | cosine (to 0 at the last step), per batch
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs, then the schedule
    average: str = "none"  # none | ema (per step) | swa (equal average per epoch from swa_start): the weights kept
    ema_decay: float = 0.99
    swa_start: int = 0  # the first epoch (1-based) in the SWA average; 0: the middle epoch

    def __post_init__(self) -> None:
        _int("--epochs", self.epochs, 1)
        _int("--batch-size", self.batch_size, 1)
        _real("--lr", self.lr, 0.0, low_open=True)
        _int("--seed", self.seed, 0, SEED_LIMIT)
        _real("lambda1", self.lambda1, 0.0, low_open=False)
        _real("lambda2", self.lambda2, 0.0, low_open=False)
        _device("--device", self.device)
        _choice("--precision", self.precision, PRECISIONS)
        _int("--eval-every", self.eval_every, 0)
        _choice("--select", self.select, SELECTIONS)
        _real("--calib-fraction", self.calib_fraction, 0.0, low_open=False, high=1.0)
        _real("--val-fraction", self.val_fraction, 0.0, low_open=True, high=1.0)
        _choice("--strategy", self.strategy, STRATEGIES)
        _int("--jobs", self.jobs, 1)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--lr-schedule", self.lr_schedule, LR_SCHEDULES)
        _real("--warmup-epochs", self.warmup_epochs, 0.0, low_open=False)
        _choice("--average", self.average, AVERAGES)
        _real("--ema-decay", self.ema_decay, 0.0, low_open=True, high=1.0)
        _int("--swa-start", self.swa_start, 0, self.epochs + 1)


@dataclass(frozen=True)
class EvalConfig(_Dictable):
    reducer: str = "max"  # max | mean | topk:<ratio>
    # rec-kl | rec | ed (the paper's): how a level's tokens are scored (method.scoring.token_score). rec-kl, not the
    # paper's ed, by measurement: steadier over epochs and seeds and higher on both bench datasets (README: "The
    # default score is not the paper's"). A checkpoint without a recorded score was calibrated with ed.
    score: str = "rec-kl"
    pixel_map: str = "raw"  # raw (unsmoothed, as the reference) | smoothed
    sigma: float = 4.0
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 8

    def __post_init__(self) -> None:
        check_reducer(self.reducer)
        _choice("--score", self.score, SCORES)
        _choice("--pixel-map", self.pixel_map, PIXEL_MAPS)
        _real("sigma", self.sigma, 0.0, low_open=True)
        _device("--device", self.device)
        _choice("--precision", self.precision, PRECISIONS)
        _int("--batch-size", self.batch_size, 1)


def check_count(option: str, value: Any, low: int = 1) -> None:
    """A plain count option outside any config (e.g. --batch-size of features/infer, --num-workers)."""
    _int(option, value, low)


def check_real(option: str, value: Any) -> None:
    """A finite number (e.g. infer's --threshold)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise _bad(option, value, "use a finite number")


def level_widths(channels: list[int], cfg: ModelConfig) -> tuple[int, ...]:
    """d_model per level: explicit values, else the reference's 256/512, else (width "auto") the C/2 rule."""
    if cfg.d_model:
        return tuple(cfg.d_model)
    if cfg.width == "auto":
        return tuple(d_model_for(c) for c in channels)
    return tuple(REFERENCE_WIDTHS[min(k, len(REFERENCE_WIDTHS) - 1)] for k in range(len(channels)))


def d_model_for(channels: int) -> int:
    """C/2 rounded up to a multiple of 32, at least 64 (256 and 512 for wide_resnet50_2)."""
    half = -(-channels // 2)
    return max(64, -(-half // 32) * 32)
