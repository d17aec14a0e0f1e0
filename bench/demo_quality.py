"""Mean image / pixel AUROC against epochs on the demo data, for a list of training settings, over seeds.

    python bench/demo_quality.py [--settings JSON] [--seeds 3407 1 2] [--eval-every 2] [--out DIR] [--jobs 3]
                                 [--image-size N]

The data are `ed demo`'s (three texture categories, tf_efficientnet_lite0 packaged weights) at --image-size (the
demo's by default; the images are made at that size, as the demo makes them), made once under --out and reused.
A setting is a dict of `TrainConfig` fields (epochs, lr, optimizer, lr_schedule, warmup_epochs, batch_size) plus
`d_model` ([w0, w1], or "auto" for the C/2 rule; default the reference 256/512).
Each (setting, seed) trains the three categories as the demo does (`--jobs` worker processes of one thread) with
a test pass every --eval-every epochs and after the last; the category mean per evaluated epoch is then averaged
over the seeds (the min and max over seeds are given too). Also reported: training seconds (the slowest
category of a run, i.e. the wall time of the parallel training), median over seeds.
Prints one JSON object: {"settings": [{"setting": ..., "epochs": [...], "image_auroc": {"mean", "min", "max"},
"pixel_auroc": {...}, "train_seconds": ...}, ...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

DEFAULT_SETTINGS = [
    {"epochs": 10, "lr": 1e-3},
    {"epochs": 10, "lr": 1e-3, "lr_schedule": "cosine", "warmup_epochs": 1},
]


def _prepare(out: Path, size: int, demo: dict):
    from edcli.commands import distmaps, features
    from edcli.config import DEMO_BACKBONE, BackboneConfig, DataConfig
    from edcli.data.synth import DEMO_CATEGORIES, SynthSpec, make_dataset

    data_root, store = out / f"data-{size}", out / f"store-{size}"
    spec = SynthSpec(
        n_train=demo["n_train"], n_test_good=demo["n_test_good"], n_per_defect=demo["n_per_defect"], size=size, seed=0
    )
    if not data_root.exists():
        make_dataset(data_root, DEMO_CATEGORIES, spec)
    data = DataConfig(dataset="mvtec", data_path=str(data_root), categories=DEMO_CATEGORIES, image_size=size)
    bb = BackboneConfig(name=DEMO_BACKBONE)
    distmaps.run(store=str(store), backbone=DEMO_BACKBONE, image_size=size, levels=bb.levels)
    features.run(data=data, bb_cfg=bb, store=str(store), device="cpu", batch_size=16)
    return data, bb, store


def _one(data, bb, store: Path, setting: dict, seed: int, eval_every: int, jobs: int, out: Path) -> dict:
    from edcli.checkpoint import load_checkpoint
    from edcli.commands import train
    from edcli.config import ModelConfig, TrainConfig

    s = dict(setting)
    width = s.pop("d_model", None)
    model = ModelConfig(width="auto") if width == "auto" else ModelConfig(d_model=tuple(width or ()))
    cfg = replace(TrainConfig(device="cpu", seed=seed, eval_every=eval_every, jobs=jobs), **s)
    run = Path(tempfile.mkdtemp(dir=out, prefix="run-"))
    rows = train.run(data=data, bb_cfg=bb, model_cfg=model, train_cfg=cfg, store=str(store), out=str(run))
    per_epoch: dict[int, list] = {}
    for cat in data.categories:
        for h in load_checkpoint(run / "checkpoints" / f"{cat}.pt").history:
            if h.get("image_auroc") is not None:
                per_epoch.setdefault(h["epoch"], []).append((h["image_auroc"], h["pixel_auroc"]))
    epochs = sorted(per_epoch)
    return {
        "epochs": epochs,
        "image": [statistics.fmean(a for a, _ in per_epoch[e]) for e in epochs],
        "pixel": [statistics.fmean(b for _, b in per_epoch[e]) for e in epochs],
        "seconds": max(r["seconds"] for r in rows),
    }


def _spread(runs: list[dict], key: str) -> dict:
    cols = list(zip(*(r[key] for r in runs)))
    return {
        "mean": [round(statistics.fmean(c), 4) for c in cols],
        "min": [round(min(c), 4) for c in cols],
        "max": [round(max(c), 4) for c in cols],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default=json.dumps(DEFAULT_SETTINGS), help="JSON list of setting dicts")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3407, 1, 2])
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "ed-demo-quality"))
    ap.add_argument("--image-size", type=int, default=None, help="default: the demo's")
    args = ap.parse_args()
    from edcli.commands.demo import DEMO

    size = args.image_size or DEMO["image_size"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, bb, store = _prepare(out, size, DEMO)
    result = {
        "image_size": size,
        "seeds": args.seeds,
        "eval_every": args.eval_every,
        "categories": list(data.categories),
        "settings": [],
    }
    for setting in json.loads(args.settings):
        runs = [_one(data, bb, store, setting, seed, args.eval_every, args.jobs, out) for seed in args.seeds]
        row = {
            "setting": setting,
            "epochs": runs[0]["epochs"],
            "image_auroc": _spread(runs, "image"),
            "pixel_auroc": _spread(runs, "pixel"),
            "train_seconds": round(statistics.median(r["seconds"] for r in runs), 1),
        }
        result["settings"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)  # progress: one line per finished setting
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
