"""Self-describing checkpoints: one file per category, loadable with torch.load(weights_only=True)."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edcli.errors import CheckpointError, ConfigError
from edcli.files import atomic_open
from edcli.identity import FeatureIdentity
from edcli.version import __version__

FORMAT = "edcli-checkpoint"
FORMAT_VERSION = 1


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save through the one atomic writer: the file is complete or absent. Serialised in memory first, so a
    failing disk is a plain OSError of the writer (torch would wrap it in its own RuntimeError)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getbuffer())


@dataclass
class Checkpoint:
    """What a trained category needs to be scored anywhere: configs, weights, backbone identity, calibration."""

    category: str
    dataset: str
    data_path: str
    config: dict[str, Any]  # {"data": ..., "backbone": ..., "model": ..., "train": ...}
    backbone: dict[
        str, Any
    ]  # name, levels, image_size, resize_mode, mean, std, weights_sha256, weights_source, random_init, channels, grids
    state_dicts: list[dict[str, torch.Tensor]]
    history: list[dict[str, Any]] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)  # select, epoch, test_selected
    calibration: dict[str, Any] | None = None
    epochs_done: int = 0
    complete: bool = False
    store_file: str = ""
    edcli_version: str = __version__

    @property
    def identity(self) -> FeatureIdentity:
        """The typed feature identity recorded in `backbone` (beside the model's channels and grids)."""
        return FeatureIdentity.from_dict(self.backbone)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["format"], d["format_version"] = FORMAT, FORMAT_VERSION
        return d


def tensor_digest(state_dicts: list[dict[str, torch.Tensor]]) -> str:
    """sha256 over every tensor of the state dicts, in order: level, key name, dtype, shape and raw bytes (any
    dtype, bf16 included, is hashed as its bytes). Cheap next to torch.load; catches a flipped byte in the weights,
    which torch itself loads without a word."""
    h = hashlib.sha256()
    for level, sd in enumerate(state_dicts):
        for key, t in sd.items():
            t = t.detach().cpu().contiguous()
            h.update(f"{level}\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(ck: Checkpoint, path: Path) -> None:
    d = ck.to_dict()
    d["tensor_sha256"] = tensor_digest(ck.state_dicts)
    atomic_torch_save(d, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train one with `ed train --out RUN` first")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is corrupt or not an edcli checkpoint"
        ) from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an edcli checkpoint")
    if raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {raw.get('format_version')}, this edcli reads "
            f"{FORMAT_VERSION}; retrain with this version"
        )
    want = raw.get("tensor_sha256")  # absent in checkpoints of an older edcli: those load unchecked
    if want is not None:
        try:
            have = tensor_digest(raw.get("state_dicts") or [])
        except (AttributeError, RuntimeError, TypeError) as exc:  # state_dicts that are not dicts of tensors
            have = f"unreadable ({type(exc).__name__})"
        if have != want:
            raise CheckpointError(
                f"checkpoint {path} is damaged (digest mismatch: its weights are not the bytes that were saved); "
                "restore it from a copy or retrain with `ed train --overwrite`"
            )
    fields = {k: raw[k] for k in Checkpoint.__dataclass_fields__ if k in raw}
    return Checkpoint(**fields)


def build_model(ck: Checkpoint):
    """Rebuild the EDModel from the checkpoint alone (no flags): shapes from the stored backbone info."""
    from edcli.config import ModelConfig
    from edcli.method.model import build_ed_model

    channels = list(ck.backbone["channels"])
    grids = [tuple(g) for g in ck.backbone["grids"]]
    refs = [torch.zeros(c, h * w) for c, (h, w) in zip(channels, grids)]
    model = build_ed_model(channels, grids, refs, ModelConfig.from_dict(ck.config["model"]))
    if len(ck.state_dicts) != len(model.levels):
        raise CheckpointError(
            f"checkpoint of {ck.category} has {len(ck.state_dicts)} level models, expected {len(model.levels)}"
        )
    for level, sd in zip(model.levels, ck.state_dicts):
        level.load_state_dict(sd, strict=True)
    model.eval()
    return model


def resume_path(path: Path) -> Path:
    """Optimizer and progress state of an unfinished run live beside the checkpoint until it completes."""
    return Path(path).with_suffix(".resume.pt")


def checkpoint_path(out: str | Path, category: str) -> Path:
    return Path(out) / "checkpoints" / f"{category}.pt"


def find_checkpoints(run: str | None, checkpoint: str | None, categories: tuple[str, ...] = ()) -> list[Path]:
    """The checkpoints of a run folder (optionally some categories), or the one file given."""
    if bool(run) == bool(checkpoint):
        raise ConfigError("give exactly one of --run RUN (a folder written by `ed train --out`) or --checkpoint FILE")
    if checkpoint:
        return [Path(checkpoint)]
    folder = Path(run) / "checkpoints"
    paths = sorted(p for p in folder.glob("*.pt") if not p.name.endswith(".resume.pt"))
    if not paths:
        raise CheckpointError(f"no checkpoints in {folder}; train first with `ed train --out {run}`")
    if categories:
        by_name = {p.stem: p for p in paths}
        unknown = [c for c in categories if c not in by_name]
        if unknown:
            raise ConfigError(
                f"--category {', '.join(unknown)}: no checkpoint in {folder} (have: {', '.join(by_name)})"
            )
        paths = [by_name[c] for c in categories]
    return paths


# what `ed eval` and a user's `ed infer --out RUN/predictions` leave in a run folder: stale once the models change
RUN_RESULTS = ("metrics.json", "metrics.csv", "predictions", "maps")


def claim_run_folder(
    out: str | Path, categories: list[str], overwrite: bool = False, resume: bool = False, remove: bool = True
) -> list[str]:
    """Refuse to train into a run folder that already holds checkpoints (or resume states) of these categories,
    unless --overwrite or --resume. Other categories may join a run.

    --overwrite removes those checkpoints and the run's results, stale once a model changes (`remove=False` only
    checks: the ranks of a torchrun job other than 0). Returns the names removed.
    """
    import shutil

    if overwrite and resume:
        raise ConfigError("--overwrite starts the run again and --resume continues it: give one of them")
    out = Path(out)
    held = [
        p for c in categories for p in (checkpoint_path(out, c), resume_path(checkpoint_path(out, c))) if p.exists()
    ]
    if resume:
        return []
    if held and not overwrite:
        names = ", ".join(p.name for p in held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise ConfigError(
            f"{out} already holds checkpoints ({names}): pass --overwrite to replace them and the "
            "run's metrics, --resume to continue them, or another --out"
        )
    removed: list[str] = []
    if overwrite and remove:
        for p in held:
            p.unlink(missing_ok=True)
            removed.append(str(p.relative_to(out)))
        for name in RUN_RESULTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
            else:
                continue
            removed.append(name)
    return removed
