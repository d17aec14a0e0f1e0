"""How much a user can count on what `ed train` hands them: per seed and category, one training run observed under
every setting at once.

The raw weights train as `ed train` trains them (training.loop.fit_epoch); beside them an EMA average (after every
step) and an SWA average (each epoch from the middle one on) are kept with training.average.Averager. After every
epoch each of the three weight sets scores the test split, the validation set (held-out normals with synthetic
defects) and the held-out normals once (MapScorer.level_parts), and each --score (ed, rec, rec-kl) is made from
that one pass. Recorded per (weights, score): test image/pixel AUROC per epoch, the validation score per epoch, and
at the weights kept (last epoch, or validation's pick) the test scores and the held-out normal scores, so every
threshold rule is evaluated afterwards on the same numbers.

The validation hold-out is taken out of training in every setting (also "last"), so all settings see the same
training images; `ed train --select last` trains on those images too.

    python bench/stability.py --dataset demo --seeds 0 1 2 --out bench/results/stability_demo.json
    python bench/stability.py --dataset photos --seeds 0 1 2 --out bench/results/stability_photos.json
    python bench/stability.py --summary bench/results/stability_demo.json bench/results/stability_photos.json

Each (dataset, seed) is one process (one thread), several can run side by side; --summary prints the table of
every setting and writes bench/results/stability.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SCORES = ("ed", "rec", "rec-kl")
WEIGHTS = ("none", "ema", "swa")
RECIPES = {
    # the demo's recipe (commands/demo.py DEMO)
    "demo": dict(image_size=160, epochs=22, batch_size=1, lr=1e-3, optimizer="per-level", d_model=(64, 64)),
    # the reference's learning rate and widths, a few epochs
    "reference": dict(image_size=160, epochs=6, batch_size=1, lr=1e-4, optimizer="reference", d_model=(256, 512)),
}


def make_data(kind: str, root: Path, size: int) -> tuple[Path, tuple[str, ...]]:
    """The demo's dataset (its generator, seed 0) or bench/photo_dataset.py's (other photos, hand-made defects)."""
    if kind == "demo":
        from edcli.data.synth import DEMO_CATEGORIES, SynthSpec, make_dataset

        make_dataset(root, DEMO_CATEGORIES, SynthSpec(n_train=20, n_test_good=10, n_per_defect=3, size=size, seed=0))
        return root, DEMO_CATEGORIES
    sys.path.insert(0, str(HERE))
    from photo_dataset import CATEGORIES, make_photo_dataset

    make_photo_dataset(root, size=size)
    return root, tuple(CATEGORIES)


def train_rows(ff, rows: np.ndarray):
    """A read_level over the given train rows of a FeatureFile."""
    return lambda k, i: ff.train(k, rows[i])


def load_all(read, n: int, levels: int):
    import torch

    idx = np.arange(n)
    return [torch.from_numpy(read(k, idx)) for k in range(levels)]


def parts_of(model, size: int, feats, batch: int = 16):
    """Per level (rec, kl) per token for every row of `feats` (per level (N, C, H, W)): one pass, all scores."""
    import torch

    from edcli.method.scorer import MapScorer

    scorer = MapScorer(model.levels, size, 4.0, "max")
    n = feats[0].shape[0]
    with torch.inference_mode():
        chunks = [scorer.level_parts([f[s : s + batch] for f in feats]) for s in range(0, n, batch)]
    cat = [(torch.cat([c[k][0] for c in chunks]), torch.cat([c[k][1] for c in chunks])) for k in range(len(feats))]
    return scorer, cat


def maps_of(scorer, parts, score: str):
    import torch

    from edcli.method.scoring import token_score

    with torch.inference_mode():
        out = scorer.assemble([token_score(r, k, score) for r, k in parts])
    return out.raw.numpy(), out.scores.double().numpy()


def run_one(args) -> dict:
    import torch

    torch.set_num_threads(1)
    from edcli.commands.features import run as run_features
    from edcli.config import BackboneConfig, DataConfig, ModelConfig, TrainConfig
    from edcli.features import build_context
    from edcli.metrics import image_auroc, pixel_auroc
    from edcli.store import FeatureFile, features_path
    from edcli.track import NullTracker
    from edcli.training.average import Averager
    from edcli.training.category import build_training, prepare_data
    from edcli.training.loop import fit_epoch, lr_schedule
    from edcli.validation import ensure_validation

    recipe = RECIPES[args.recipe]
    S = recipe["image_size"]
    work = Path(args.work) / f"{args.dataset}_{S}"
    data_root, cats = make_data(args.dataset, work / "data", S)
    cats = tuple(args.categories) or cats
    store = work / "store"
    data = DataConfig(dataset="mvtec", data_path=str(data_root), categories=cats, image_size=S)
    bb = BackboneConfig(name="tf_efficientnet_lite0")
    run_features(data=data, bb_cfg=bb, store=str(store), device="cpu", batch_size=16)
    ctx = build_context(data, bb, "cpu")
    mcfg = ModelConfig(d_model=recipe["d_model"])
    epochs = args.epochs or recipe["epochs"]
    result = {"dataset": args.dataset, "recipe": args.recipe, "seed": args.seed, "epochs": epochs, "categories": {}}
    device = torch.device("cpu")
    for cat in cats:
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=recipe["batch_size"],
            lr=recipe["lr"],
            seed=args.seed,
            device="cpu",
            optimizer=recipe["optimizer"],
            select="validation",
            average="ema",
            ema_decay=args.ema_decay,
        )
        meta = dict(ctx.meta, category=cat)
        path = features_path(str(store), "mvtec", cat, meta)
        t0 = time.process_time()
        with FeatureFile.open(path, meta) as ff:
            vf = ensure_validation(ctx, str(store), cat, ff, cfg, NullTracker())
            prepared = prepare_data(ff, cfg, vf)
            model, levels, optims = build_training(prepared, mcfg, cfg, device, None)
            ema, swa = Averager(model, cfg), Averager(model, replace(cfg, average="swa"))
            n_levels = ff.n_levels
            test = load_all(ff.test, ff.n_test, n_levels)
            val = load_all(vf.read, vf.n, n_levels)
            held = load_all(train_rows(ff, prepared.cal), len(prepared.cal), n_levels)
            fit = load_all(train_rows(ff, prepared.fit), len(prepared.fit), n_levels)
            labels, masks = np.asarray(ff.test_labels), ff.test_masks()
            val_normal = np.asarray(vf.labels) == 0
            batches = -(-len(prepared.fit) // cfg.batch_size)
            lr_at = lr_schedule(cfg, batches)
            curves = {f"{w}/{s}": {"image": [], "pixel": [], "val": []} for w in WEIGHTS for s in SCORES}
            kept = {}
            best_val = {}
            train_seconds = 0.0
            for epoch in range(epochs):
                t = time.process_time()
                fit_epoch(levels, optims, prepared.feats, cfg, device, epoch, lr_at=lr_at, step0=epoch * batches,
                          on_batch=functools.partial(ema.after_step, model))  # fmt: skip
                swa.after_epoch(model, epoch + 1)
                train_seconds += time.process_time() - t
                if epoch + 1 < args.eval_from and epoch + 1 != epochs:
                    continue
                model.eval()
                passes = {}
                for w, m in (("none", model), ("ema", ema.scored(model)), ("swa", swa.scored(model))):
                    if id(m) not in passes:  # SWA before its first epoch is the raw model: one pass
                        m.eval()
                        fp = parts_of(m, S, fit)[1] if epoch + 1 == epochs else None  # in-sample, last epoch
                        passes[id(m)] = (parts_of(m, S, test), parts_of(m, S, val)[1], parts_of(m, S, held)[1], fp)
                    (scorer, tp), vp, hp, fp = passes[id(m)]
                    for s in SCORES:
                        raw, sc = maps_of(scorer, tp, s)
                        vraw, vsc = maps_of(scorer, vp, s)
                        _, hsc = maps_of(scorer, hp, s)
                        c = curves[f"{w}/{s}"]
                        c["image"].append(image_auroc(labels, sc))
                        c["pixel"].append(pixel_auroc(masks, raw))
                        vi, vpx = image_auroc(vf.labels, vsc), pixel_auroc(vf.masks, vraw)
                        c["val"].append(float(np.mean([v for v in (vi, vpx) if v is not None])))
                        snap = {
                            "epoch": epoch + 1,
                            "image_auroc": c["image"][-1],
                            "pixel_auroc": c["pixel"][-1],
                            "test_scores": [round(float(x), 7) for x in sc],
                            "held_scores": [round(float(x), 7) for x in hsc],
                            "val_normal_scores": [round(float(x), 7) for x in vsc[val_normal]],
                            "val_defect_scores": [round(float(x), 7) for x in vsc[~val_normal]],
                        }
                        key = f"{w}/{s}"
                        if epoch + 1 == epochs:
                            fsc = maps_of(scorer, fp, s)[1]
                            kept[f"{key}/last"] = dict(snap, fit_scores=[round(float(x), 7) for x in fsc])
                        if key not in best_val or c["val"][-1] > best_val[key][0]:
                            best_val[key] = (c["val"][-1], snap)
                model.train()
                print(f"{args.dataset} seed {args.seed} {cat} epoch {epoch + 1}/{epochs}: "
                      + " ".join(f"{k} {v['image'][-1]:.3f}" for k, v in curves.items() if k.endswith("/ed")
                                 or k.endswith("/rec")), file=sys.stderr, flush=True)  # fmt: skip
            for key, (_, snap) in best_val.items():
                kept[f"{key}/validation"] = snap
        result["categories"][cat] = {
            "labels": labels.astype(int).tolist(),
            "curves": curves,
            "kept": kept,
            "cpu_seconds_train": round(train_seconds, 1),
            "cpu_seconds_total": round(time.process_time() - t0, 1),
            "n_fit": int(len(prepared.fit)),
            "n_held": int(len(prepared.cal)),
            "n_val": int(vf.n),
        }
    return result


# ------------------------------------------------------------------------------------------------- summary
THRESHOLDS = {
    # today's: the 0.99 quantile ('higher') of the held-out normal scores, i.e. their maximum below 100 images
    "max-held": lambda k: max(k["held_scores"]),
    # every unseen normal there is (calibration hold-out + validation normals), mean + 3 standard deviations
    "mean+3sd-normals": lambda k: _mean_sd(k["held_scores"] + k["val_normal_scores"], 3.0),
    "max-normals": lambda k: max(k["held_scores"] + k["val_normal_scores"]),
    "max+1sd-normals": lambda k: _mean_sd(k["held_scores"] + k["val_normal_scores"], 1.0, base=max),
    # the in-sample training scores give the spread (many images), the held-out ones the level (unbiased): the
    # training scores' maximum moved by the gap between the held-out and the training medians, or scaled by their
    # ratio (last epoch only: the training images are scored then)
    "shift-train": lambda k: _train_rule(k, "shift"),
    "scale-train": lambda k: _train_rule(k, "scale"),
}


def _train_rule(k, how):
    if "fit_scores" not in k:
        return None
    fit, held = np.asarray(k["fit_scores"]), np.asarray(k["held_scores"])
    if how == "shift":
        return float(fit.max() + np.median(held) - np.median(fit))
    return float(fit.max() * np.median(held) / np.median(fit))


def _mean_sd(xs, z, base=None):
    xs = np.asarray(xs, float)
    sd = xs.std(ddof=1) if len(xs) > 1 else 0.0
    return float((base(xs) if base else xs.mean()) + z * sd)


def _mean_or_none(xs):
    return float(np.mean(xs)) if xs else None


def _spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def summarize(paths: list[str]) -> dict:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    table = {}
    for r in runs:
        for c in r["categories"].values():
            labels = np.asarray(c["labels"])
            for key in c["curves"]:
                cur = c["curves"][key]
                for sel in ("last", "validation"):
                    k = c["kept"][f"{key}/{sel}"]
                    row = table.setdefault((r["dataset"], r["recipe"], key, sel), {"seeds": {}})
                    seed = row["seeds"].setdefault(r["seed"], {"image": [], "pixel": [], "sd5": [], "rho": [],
                                                               "fpr": {}, "tpr": {}})  # fmt: skip
                    seed["image"].append(k["image_auroc"])
                    seed["pixel"].append(k["pixel_auroc"])
                    seed["sd5"].append(float(np.std(cur["image"][-5:])))
                    rho = _spearman(cur["val"], cur["image"])
                    if rho is not None:
                        seed["rho"].append(rho)
                    scores = np.asarray(k["test_scores"])
                    for name, rule in THRESHOLDS.items():
                        thr = rule(k)
                        if thr is None:
                            continue
                        flagged = scores > thr
                        for rate, label in (("fpr", 0), ("tpr", 1)):
                            hits = (int(flagged[labels == label].sum()), int((labels == label).sum()))
                            seed[rate].setdefault(name, []).append(hits)
    out = []
    for (dataset, recipe, key, sel), row in sorted(table.items()):
        per_seed_img = [float(np.mean(s["image"])) for s in row["seeds"].values()]
        per_seed_pix = [float(np.mean(s["pixel"])) for s in row["seeds"].values()]
        entry = {
            "dataset": dataset,
            "recipe": recipe,
            "weights": key.split("/")[0],
            "score": key.split("/", 1)[1],
            "select": sel,
            "seeds": len(per_seed_img),
            "image_auroc_mean": float(np.mean(per_seed_img)),
            "image_auroc_spread": float(np.max(per_seed_img) - np.min(per_seed_img)),
            "image_auroc_min": float(np.min(per_seed_img)),
            "pixel_auroc_mean": float(np.mean(per_seed_pix)),
            "sd_last5_mean": float(np.mean([x for s in row["seeds"].values() for x in s["sd5"]])),
            "val_rank_corr_mean": _mean_or_none([x for s in row["seeds"].values() for x in s["rho"]]),
            "per_seed_image": per_seed_img,
        }
        for name in THRESHOLDS:
            if not any(name in s["fpr"] for s in row["seeds"].values()):
                entry[f"fpr@{name}"] = entry[f"tpr@{name}"] = float("nan")
                continue
            fp = sum(a for s in row["seeds"].values() for a, _ in s["fpr"][name])
            nn = sum(b for s in row["seeds"].values() for _, b in s["fpr"][name])
            tp = sum(a for s in row["seeds"].values() for a, _ in s["tpr"][name])
            na = sum(b for s in row["seeds"].values() for _, b in s["tpr"][name])
            entry[f"fpr@{name}"] = fp / max(1, nn)
            entry[f"tpr@{name}"] = tp / max(1, na)
        out.append(entry)
    return {"runs": paths, "settings": out, "cpu_seconds": {f"{r['dataset']}/{r['recipe']}/{r['seed']}": sum(
        c["cpu_seconds_total"] for c in r["categories"].values()) for r in runs}}  # fmt: skip


def print_summary(summary: dict) -> None:
    head = f"{'dataset':8} {'weights':5} {'score':6} {'select':10} {'img mean':>8} {'spread':>6} {'min':>6} " \
           f"{'pix':>6} {'sd5':>6} {'rho':>6} " + " ".join(f"{n[:14]:>14}" for n in THRESHOLDS)  # fmt: skip
    print(head)
    for e in summary["settings"]:
        rho = "   n/a" if e["val_rank_corr_mean"] is None else f"{e['val_rank_corr_mean']:6.2f}"
        thr = " ".join(f"{e[f'fpr@{n}']:.2f}/{e[f'tpr@{n}']:.2f}".rjust(14) for n in THRESHOLDS)
        print(f"{e['dataset']:8} {e['weights']:5} {e['score']:6} {e['select']:10} {e['image_auroc_mean']:8.3f} "
              f"{e['image_auroc_spread']:6.3f} {e['image_auroc_min']:6.3f} {e['pixel_auroc_mean']:6.3f} "
              f"{e['sd_last5_mean']:6.3f} {rho} {thr}")  # fmt: skip
    print("threshold columns: FPR/TPR on the test split at each rule (pooled over seeds and categories)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("demo", "photos"), default="demo")
    ap.add_argument("--recipe", choices=tuple(RECIPES), default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=0, help="0: the recipe's")
    ap.add_argument("--categories", nargs="*", default=())
    ap.add_argument("--ema-decay", type=float, default=0.99)
    ap.add_argument("--eval-from", type=int, default=8, help="score every epoch from this one on (and the last)")
    ap.add_argument("--work", default=os.environ.get("ED_BENCH_WORK", "/tmp/ed-stability"))
    ap.add_argument("--out", help="JSON of this run")
    ap.add_argument("--summary", nargs="*", help="summarise these run JSONs instead of training")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.summary:
        summary = summarize(args.summary)
        print_summary(summary)
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "stability.json").write_text(json.dumps(summary, indent=1))
        return
    res = run_one(args)
    out = Path(args.out or HERE / "results" / f"stability_{args.dataset}_{args.recipe}_s{args.seed}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
