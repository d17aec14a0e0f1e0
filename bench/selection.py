"""Epoch selection without test labels: `--select validation` against the last epoch and the best test epoch.

    python bench/selection.py [--seeds 0 1 2] [--epochs 12] [--size 128] [--out bench-select.json]

Two datasets: the demo (`data/synth.py`: brick and grass, its five test defect kinds) and "objects", crops of other
scikit-image photos (coffee, astronaut) with defects made here and nowhere else (a solid polygon, two swapped
rectangles, a posterised ellipse). Validation uses data/defects.py's VALIDATION_KINDS (perlin, smear, crack; blur,
noise and erase before), which neither test split contains. For every dataset, category and seed one run `--select
validation --eval-every 1` gives, per epoch, the validation and the test metrics: the test image / pixel AUROC of
the epoch validation chose, of the last epoch and of the best test epoch (image and pixel separately, as the
reference reports). For the first seed a plain `--select last` run (no hold-out for validation, no evaluation) gives
the training time the validation cost is compared with, and the test AUROC of the last epoch trained on those extra
images. One JSON."""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

OBJECT_PHOTOS = ("coffee", "astronaut")
OBJECT_KINDS = ("polygon", "swap", "posterize")


# ---------------------------------------------------------------------------------------------- the objects data
def _object_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """An aligned view of the photo's centre (as an object category): shift <= 4 %, rotation <= 3 deg, brightness."""
    from PIL import Image

    H, W, _ = photo.shape
    side = int(0.85 * min(H, W))
    dy, dx = (rng.uniform(-0.04, 0.04, 2) * side).astype(int)
    cy, cx = H // 2 + dy, W // 2 + dx
    box = (cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side)
    img = (
        Image.fromarray(photo)
        .rotate(float(rng.uniform(-3, 3)), resample=Image.Resampling.BICUBIC, center=(cx, cy))
        .crop(box)
        .resize((size, size), Image.Resampling.LANCZOS)
    )
    return np.clip(np.rint(np.asarray(img, np.float32) * rng.uniform(0.9, 1.1)), 0, 255).astype(np.uint8)


def _object_defect(kind: str, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Defects synth.py does not make; the mask is computed from the changed pixels by the caller."""
    from PIL import Image, ImageDraw

    S = image.shape[0]
    m = math.ceil(0.12 * S)
    if kind == "polygon":  # a solid, random-colour polygon (paint, a sticker)
        r = rng.uniform(0.07, 0.11) * S
        cy, cx = rng.uniform(m + r, S - m - r, 2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
        pts = [
            (float(cx + r * rng.uniform(0.6, 1) * np.cos(a)), float(cy + r * rng.uniform(0.6, 1) * np.sin(a)))
            for a in angles
        ]
        pil = Image.fromarray(image)
        ImageDraw.Draw(pil).polygon(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        return np.asarray(pil)
    if kind == "swap":  # two rectangles swapped: parts in the wrong place
        h = w = int(rng.uniform(0.12, 0.18) * S)
        out = image.copy()
        y0, x0 = (int(v) for v in rng.integers(m, S // 2 - h, 2))
        y1, x1 = (int(v) for v in rng.integers(S // 2, S - m - h, 2))
        out[y0 : y0 + h, x0 : x0 + w], out[y1 : y1 + h, x1 : x1 + w] = (
            image[y1 : y1 + h, x1 : x1 + w],
            image[y0 : y0 + h, x0 : x0 + w],
        )
        return out
    # posterize: an ellipse where every channel is cut to two levels (an overexposed, burnt spot)
    a, b = rng.uniform(0.06, 0.1, 2) * S
    cy, cx = rng.uniform(m + max(a, b), S - m - max(a, b), 2)
    yy, xx = np.mgrid[0:S, 0:S]
    inside = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1
    out = image.copy()
    out[inside] = np.where(image[inside] >= 128, 255, 0).astype(np.uint8)
    return out


def make_objects(root: Path, size: int, n_train: int, n_good: int, n_per: int) -> None:
    """An MVTec-layout dataset: one category per photo, train/good, test/good, test/<kind>, ground_truth/<kind>."""
    import skimage.data
    from PIL import Image

    for c, name in enumerate(OBJECT_PHOTOS):
        photo = np.asarray(getattr(skimage.data, name)())[..., :3]
        cat = root / name

        def save(rel: str, arr: np.ndarray, cat: Path = cat) -> None:
            (cat / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(cat / rel)

        for i in range(n_train):
            save(f"train/good/{i:03d}.png", _object_crop(photo, size, np.random.default_rng([c, 0, i])))
        for i in range(n_good):
            save(f"test/good/{i:03d}.png", _object_crop(photo, size, np.random.default_rng([c, 1, i])))
        for k, kind in enumerate(OBJECT_KINDS):
            for i in range(n_per):
                rng = np.random.default_rng([c, 2 + k, i])
                img = _object_crop(photo, size, rng)
                for _ in range(8):
                    bad = _object_defect(kind, img, rng)
                    mask = (bad != img).any(-1)
                    if mask.mean() >= 0.002:
                        break
                save(f"test/{kind}/{i:03d}.png", bad)
                save(f"ground_truth/{kind}/{i:03d}_mask.png", mask.astype(np.uint8) * 255)


# ---------------------------------------------------------------------------------------------- one run
def _summary(history: list[dict], chosen: int) -> dict:
    img = [h["image_auroc"] for h in history]
    pix = [h["pixel_auroc"] for h in history]

    def pick(key: str) -> int:  # the first epoch of the best value of a validation curve
        vals = [h[key] for h in history]
        return int(np.argmax(vals)) + 1

    return {
        "chosen_epoch": chosen,
        "validation": {"image_auroc": img[chosen - 1], "pixel_auroc": pix[chosen - 1]},
        "last": {"image_auroc": img[-1], "pixel_auroc": pix[-1]},
        "best_test": {
            "image_auroc": max(img),
            "pixel_auroc": max(pix),
            "image_epoch": int(np.argmax(img)) + 1,
            "pixel_epoch": int(np.argmax(pix)) + 1,
        },
        # what choosing by one validation metric alone would have given (from the same curves, for information)
        "by_val_image_only": {
            "epoch": pick("val_image_auroc"),
            "image_auroc": img[pick("val_image_auroc") - 1],
            "pixel_auroc": pix[pick("val_image_auroc") - 1],
        },
        "by_val_pixel_only": {
            "epoch": pick("val_pixel_auroc"),
            "image_auroc": img[pick("val_pixel_auroc") - 1],
            "pixel_auroc": pix[pick("val_pixel_auroc") - 1],
        },
        "curves": {
            "test_image": img,
            "test_pixel": pix,
            "val_image": [h["val_image_auroc"] for h in history],
            "val_pixel": [h["val_pixel_auroc"] for h in history],
        },
    }


def bench_dataset(name: str, root: Path, cats: tuple[str, ...], store: Path, runs: Path, args) -> dict:
    from edcli.checkpoint import load_checkpoint
    from edcli.commands.eval import run as run_eval
    from edcli.commands.features import run as run_features
    from edcli.commands.train import run as run_train
    from edcli.config import (
        BackboneConfig,
        DataConfig,
        EvalConfig,
        ModelConfig,
        TrainConfig,
    )
    from edcli.features import build_context
    from edcli.store import FeatureFile, features_path
    from edcli.track import NullTracker
    from edcli.validation import ensure_validation

    data = DataConfig(dataset="mvtec", data_path=str(root), categories=cats, image_size=args.size)
    bb = BackboneConfig(name="tf_efficientnet_lite0")
    model = ModelConfig()
    run_features(data=data, bb_cfg=bb, store=str(store), device="cpu", batch_size=16)
    ctx = build_context(data, bb, "cpu")
    out: dict = {}
    for cat in cats:
        rows = []
        for s, seed in enumerate(args.seeds):
            cfg = TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=seed,
                device="cpu",
                select="validation",
                eval_every=1,
                val_fraction=args.val_fraction,
            )
            fpath = features_path(store, "mvtec", cat, dict(ctx.meta, category=cat))
            t0 = time.perf_counter()
            with FeatureFile.open(fpath) as ff:
                vf = ensure_validation(ctx, str(store), cat, ff, cfg, NullTracker())
            build = time.perf_counter() - t0
            d = replace(data, categories=(cat,))
            run_dir = runs / f"{name}-{cat}-{seed}"
            row = run_train(data=d, bb_cfg=bb, model_cfg=model, train_cfg=cfg, store=str(store), out=str(run_dir))[0]
            ck = load_checkpoint(run_dir / "checkpoints" / f"{cat}.pt")
            res = _summary(ck.history, ck.selection["epoch"])
            # the checkpoint as `ed eval` sees it
            ev = run_eval(run_dir=str(run_dir), checkpoint=None, eval_cfg=EvalConfig(device="cpu"))["rows"][0]
            assert abs(ev["image_auroc"] - res["validation"]["image_auroc"]) < 1e-9, (ev, res["validation"])
            res.update(
                seed=seed,
                val_images=vf.n,
                train_images=row["train_images"],
                validation_seconds={"build_once": round(build, 2), "scoring_all_epochs": row["val_seconds"]},
            )
            if s == 0:  # the plain run a user would make without validation: same settings, no hold-out, no eval
                plain_dir = runs / f"{name}-{cat}-{seed}-last"
                plain = run_train(
                    data=d,
                    bb_cfg=bb,
                    model_cfg=model,
                    train_cfg=replace(cfg, select="last", eval_every=0),
                    store=str(store),
                    out=str(plain_dir),
                )[0]
                pe = run_eval(run_dir=str(plain_dir), checkpoint=None, eval_cfg=EvalConfig(device="cpu"))["rows"][0]
                res["plain_last"] = {
                    "image_auroc": pe["image_auroc"],
                    "pixel_auroc": pe["pixel_auroc"],
                    "train_images": plain["train_images"],
                    "train_seconds": plain["seconds"],
                }
                res["validation_cost_fraction"] = round((build + row["val_seconds"]) / plain["seconds"], 3)
            rows.append(res)
            print(
                f"{name}/{cat} seed {seed}: chosen {res['chosen_epoch']} "
                f"val {res['validation']} last {res['last']} best {res['best_test']}",
                flush=True,
            )
        out[cat] = rows
    return out


def _means(results: dict) -> dict:
    """Per dataset: means over categories and seeds of each way of choosing the epoch."""
    out = {}
    for ds, cats in results.items():
        rows = [r for rs in cats.values() for r in rs]
        out[ds] = {
            way: {m: round(float(np.mean([r[way][m] for r in rows])), 4) for m in ("image_auroc", "pixel_auroc")}
            for way in ("validation", "last", "best_test", "by_val_image_only", "by_val_pixel_only")
        }
        plain = [r["plain_last"] for r in rows if "plain_last" in r]
        out[ds]["plain_last_first_seed"] = {
            m: round(float(np.mean([p[m] for p in plain])), 4) for m in ("image_auroc", "pixel_auroc")
        }
        wins = [
            (r["validation"]["image_auroc"] + r["validation"]["pixel_auroc"])
            - (r["last"]["image_auroc"] + r["last"]["pixel_auroc"])
            for r in rows
        ]
        out[ds]["validation_minus_last_mean_of_both"] = round(float(np.mean(wins)) / 2, 4)
        out[ds]["validation_better_than_last_runs"] = (
            f"{sum(w > 1e-12 for w in wins)} of {len(wins)} (equal: {sum(abs(w) <= 1e-12 for w in wins)})"
        )
        out[ds]["validation_cost_fraction_first_seed"] = [
            r["validation_cost_fraction"] for r in rows if "validation_cost_fraction" in r
        ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--n-train", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--datasets", nargs="+", default=["demo", "objects"])
    p.add_argument("--out", default="")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from edcli.data.defects import VALIDATION_KINDS
    from edcli.data.synth import SynthSpec, make_dataset

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="ed-bench-select-"))
    start = time.perf_counter()
    results = {}
    if "demo" in args.datasets:
        make_dataset(
            tmp / "demo",
            ("brick", "grass"),
            SynthSpec(n_train=args.n_train, n_test_good=10, n_per_defect=3, size=args.size, seed=0),
        )
        results["demo"] = bench_dataset(
            "demo", tmp / "demo", ("brick", "grass"), tmp / "store-demo", tmp / "runs", args
        )
    if "objects" in args.datasets:
        make_objects(tmp / "objects", args.size, args.n_train, 10, 4)
        results["objects"] = bench_dataset(
            "objects", tmp / "objects", OBJECT_PHOTOS, tmp / "store-objects", tmp / "runs", args
        )
    res = {
        "settings": {
            "backbone": "tf_efficientnet_lite0 (packaged ImageNet weights)",
            "image_size": args.size,
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "model": "ModelConfig()",
            "seeds": args.seeds,
            "n_train": args.n_train,
            "calib_fraction": 0.1,
            "val_fraction": args.val_fraction,
            "validation_kinds": list(VALIDATION_KINDS),
            "demo": "brick, grass; test: 10 good + 3 of each of scratch, hole, stain, patch, distortion",
            "objects": f"{', '.join(OBJECT_PHOTOS)}; test: 10 good + 4 of each of {', '.join(OBJECT_KINDS)}",
            "threads": args.threads,
            "selection_metric": "mean of validation image and pixel AUROC",
        },
        "summary": _means(results),
        "runs": results,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
