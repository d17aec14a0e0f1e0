"""Frozen configuration dataclasses of plain values. Their defaults are the CLI defaults."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

ARCHS = ("ed", "fod")
PRECISIONS = ("fp32", "bf16", "fp16")
SELECTIONS = ("last", "best-image", "best-pixel", "validation")
PIXEL_MAPS = ("raw", "smoothed")
STRATEGIES = ("auto", "categories", "ddp")  # under torchrun
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
    test_fraction: float = 0.2  # `folder` category without test/: share of the normal images held out as its test split
    split_seed: int = 3407  # which images that share is (ed train: its --seed)


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
    d_model: tuple[int, ...] = ()  # empty: C/2 rounded up to a multiple of 32, at least 64, per level
    attn_out_proj: bool = False  # the reference computes and discards it; off by default


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


@dataclass(frozen=True)
class EvalConfig(_Dictable):
    reducer: str = "max"  # max | mean | topk:<ratio>
    pixel_map: str = "raw"  # raw (unsmoothed, as the reference) | smoothed
    sigma: float = 4.0
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 8


def d_model_for(channels: int) -> int:
    """C/2 rounded up to a multiple of 32, at least 64 (256 and 512 for wide_resnet50_2)."""
    half = -(-channels // 2)
    return max(64, -(-half // 32) * 32)
