"""Frozen configuration dataclasses of plain values. Their defaults are the CLI defaults."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

ARCHS = ("ed", "fod")
PRECISIONS = ("fp32", "bf16", "fp16")
SELECTIONS = ("last", "best-image", "best-pixel")
PIXEL_MAPS = ("raw", "smoothed")
WIDTHS = ("reference", "auto")  # ModelConfig.width when d_model is empty
REFERENCE_WIDTHS = (256, 512)  # the reference's d_model per level whatever the backbone; later levels take the last
OPTIMIZERS = ("reference", "per-level")
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_BACKBONE = "wide_resnet50_2"
DEMO_BACKBONE = "tf_efficientnet_lite0"


def _from_dict(cls, d: dict[str, Any]):
    """Build a dataclass from a dict, ignoring unknown keys and turning lists back into tuples."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    kw = {}
    for k, v in d.items():
        if k in names:
            kw[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


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


@dataclass(frozen=True)
class BackboneConfig(_Dictable):
    name: str = DEFAULT_BACKBONE
    levels: tuple[int, ...] = (2, 3)  # timm feature indices: strides 8 and 16, as the reference
    weights: Optional[str] = None  # a local weights file; None: packaged or hub weights
    random_init: bool = False  # explicit, for tests and timing only; recorded in every artefact


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
    strategy: str = "auto"  # auto|categories|ddp (under torchrun)
    jobs: int = 1
    optimizer: str = "reference"  # reference: one Adam, grads zero-filled between levels (torch 1.13); per-level
    lr_schedule: str = "constant"  # constant (the reference) | cosine (to 0 at the last step), per batch
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many epochs, then the schedule


@dataclass(frozen=True)
class EvalConfig(_Dictable):
    reducer: str = "max"  # max | mean | topk:<ratio>
    pixel_map: str = "raw"  # raw (unsmoothed, as the reference) | smoothed
    sigma: float = 4.0
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 8


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
