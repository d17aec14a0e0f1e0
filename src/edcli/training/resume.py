"""What `--resume` may continue: the checks that refuse a resume before anything is written (run.json included),
naming each option with its recorded and requested values, and the recorded request kept in every resume state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edcli.config import ModelConfig, TrainConfig

# the options a resume state must share with the run that resumes it; older states lack the later ones
SAME = (
    "batch_size",
    "lr",
    "seed",
    "lambda1",
    "lambda2",
    "calib_fraction",
    "optimizer",
    "lr_schedule",
    "warmup_epochs",
    "epochs",
    "average",
    "ema_decay",
    "swa_start",
)
LEGACY = {
    "optimizer": "per-level",
    "lr_schedule": "constant",
    "warmup_epochs": 0.0,
    "average": "none",
    "ema_decay": TrainConfig.ema_decay,
    "swa_start": 0,
}
# what builds the model and its inputs: a resume state records the request (recorded from this version on)
_MODEL = ("d_model", "width", "heads", "layers", "arch", "intra", "inter", "ffn_ratio", "dropout", "attn_out_proj")
_ADVICE = "rerun with the same options to continue, or with --overwrite to start again"


def request(model_cfg: ModelConfig, image_size: int, backbone: str, levels, score: str = "ed") -> dict[str, Any]:
    """The model- and input-shaping part of a command line, and the --score that evaluations and validation use,
    as recorded in a resume state."""
    d = model_cfg.to_dict()
    return {
        **{k: d[k] for k in _MODEL if k in d},
        "image_size": int(image_size),
        "backbone": backbone,
        "levels": [int(x) for x in levels],
        "score": score,
    }


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v)) if v else "auto"  # an empty width list is the automatic choice
    return str(v)


def differences(recorded_train: dict, recorded_request: dict | None, cfg: TrainConfig, asked: dict) -> list[str]:
    """'--lr 0.001 (asked: 0.0005)' for every option that differs; the epochs only matter for a non-constant
    schedule (the schedule's length is part of it)."""
    now = cfg.to_dict()
    out = []
    for k in SAME:
        was = recorded_train.get(k, LEGACY.get(k))
        # the epochs count where the schedule or the SWA average's first epoch (the middle one by default) depend on
        # the run's length
        length_matters = cfg.lr_schedule != "constant" or (cfg.average == "swa" and cfg.swa_start == 0)
        if was != now[k] and (k != "epochs" or length_matters):
            out.append(f"{_option(k)} {_show(was)} (asked: {_show(now[k])})")
    for k, was in (recorded_request or {}).items():
        if k in asked and asked[k] != was:
            out.append(f"{_option(k)} {_show(was)} (asked: {_show(asked[k])})")
    return out


def refusal(category: str, what: Path, diffs: list[str]) -> str:
    return f"{category}: cannot resume {what}: it was trained with {', '.join(diffs)}; {_ADVICE}"


def resume_refusals(out: str | Path, cats: list[str], cfg: TrainConfig, asked: dict) -> list[str]:
    """Before anything is written: for each category with a resume state or a finished checkpoint in `out`, the
    reason `--resume` cannot continue it with these options (an empty list when every one can)."""
    from edcli.checkpoint import checkpoint_path, load_checkpoint, resume_path

    problems = []
    for cat in cats:
        ckpt = checkpoint_path(out, cat)
        rpath = resume_path(ckpt)
        if rpath.exists():
            state = torch.load(rpath, map_location="cpu", weights_only=True)
            diffs = differences(state.get("train", {}), state.get("request"), cfg, asked)
            if diffs:
                problems.append(refusal(cat, rpath, diffs))
        elif ckpt.exists():  # finished: resuming it with other settings would retrain and replace it
            ck = load_checkpoint(ckpt)
            recorded = ck.config.get("request") or _request_of(ck)
            diffs = differences(ck.config.get("train", {}), recorded, cfg, asked)
            if diffs:
                problems.append(refusal(cat, ckpt, diffs))
    return problems


def _request_of(ck) -> dict[str, Any]:
    """The request of a checkpoint written before requests were recorded: what its configs say (the widths it
    built are compared only when the command names them)."""
    model = dict(ck.config.get("model", {}))
    model.pop("d_model", None)
    model.pop("width", None)
    ident = ck.identity
    return {**{k: model[k] for k in _MODEL if k in model}, "image_size": ident.image_size,
            "backbone": ident.backbone, "levels": list(ident.levels)}  # fmt: skip
