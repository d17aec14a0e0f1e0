"""`ed eval`: score the labelled test split of each checkpoint's category; metrics per category and their mean."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from edcli.errors import DataError
from edcli.track import NullTracker


def run(
    *,
    run_dir: str | None,
    checkpoint: str | None,
    eval_cfg,
    data_path: str | None = None,
    dataset: str | None = None,
    categories: tuple[str, ...] = (),
    store: str | None = None,
    save_maps: bool = False,
    num_workers: int = 0,
    score: str | None = None,
    track=None,
) -> dict[str, Any]:
    """Metrics of every checkpoint of a run (or of one checkpoint); writes RUN/metrics.json and metrics.csv, the
    per-image RUN/predictions/<category>.csv and heat-map panels (of every test image with save_maps, else of the
    hardest few per class, for `ed report`). `score` (--score) overrides the one each checkpoint was calibrated
    with."""
    from dataclasses import replace

    from edcli.checkpoint import build_model, find_checkpoints, load_checkpoint
    from edcli.config import check_count
    from edcli.engine import check_precision, setup_device
    from edcli.evaluate import (
        calibrated_threshold,
        category_metrics,
        masks_if_known,
        read_from,
        score_cached,
    )
    from edcli.features import context_for_checkpoint, ensure_features
    from edcli.method.scoring import normalize
    from edcli.metrics import macro_mean, threshold_counts
    from edcli.report import (
        hardest,
        save_eval_maps,
        write_eval_predictions,
        write_metrics,
    )
    from edcli.store import FeatureFile, features_path

    track = track or NullTracker()
    check_count("--num-workers", num_workers, 0)
    if score is not None:
        replace(eval_cfg, score=score)  # a bad --score is one line before any checkpoint is read
    base_cfg = eval_cfg
    device = setup_device(eval_cfg.device)
    check_precision(eval_cfg.precision, device)
    paths = find_checkpoints(run_dir, checkpoint, categories)
    out_dir = Path(run_dir) if run_dir else Path(checkpoint).resolve().parent.parent
    cache: dict = {}
    rows, protocol = [], None
    tmp_store = None
    try:
        for cpath in paths:
            ck = load_checkpoint(cpath)
            eval_cfg = replace(base_cfg, score=score or (ck.calibration or {}).get("score", "ed"))
            model = build_model(ck).to(device)
            meta = dict(ck.backbone)
            st = store or ck.config.get("store")
            fpath = features_path(st, dataset or ck.dataset, ck.category, meta) if st else None
            why = _cache_problem(fpath, meta, ck, data_path, dataset)
            if why:
                ctx = context_for_checkpoint(ck, data_path, device, cache, dataset)
                other = data_path and Path(data_path).resolve() != Path(ck.data_path).resolve()
                if st is None or other:  # scoring other images: never overwrite the run's store entry with them
                    tmp_store = tmp_store or tempfile.mkdtemp(prefix="ed-eval-store-")
                    st = tmp_store
                track.log(f"{ck.category}: {why}; running the backbone on the test images")
                fpath = ensure_features(ctx, st, ck.category, eval_cfg.batch_size, num_workers, track)
            with FeatureFile.open(fpath, meta) as ff:
                if ff.n_test == 0:
                    raise DataError(f"{ck.category}: the test split is empty; nothing to evaluate")
                with track.task(f"{ck.category} eval", total=ff.n_test, unit="images") as bar:
                    split = score_cached(
                        model,
                        read_from(ff, "test"),
                        ff.n_test,
                        ck.identity.image_size,
                        device,
                        eval_cfg.precision,
                        eval_cfg,
                        batch_size=eval_cfg.batch_size,
                        on_batch=bar.advance,
                    )
                masks = masks_if_known(ff)
                m = category_metrics(ff.test_labels, split, masks, eval_cfg)
                thr_scale = calibrated_threshold(ck.calibration, eval_cfg)
                if thr_scale is None:
                    track.warn(
                        f"{ck.category}: the checkpoint's threshold was calibrated for another image score "
                        "(--reducer); no counts or labels at the threshold"
                    )
                thr, norm = (thr_scale[0], normalize(split.scores, *thr_scale)) if thr_scale else (None, None)
                at = threshold_counts(ff.test_labels, split.scores, thr) if thr is not None else {}
                m.update({"threshold": thr, **{k: at.get(k) for k in THRESHOLD_NAMES}})
                which = None if save_maps else hardest(ff.test_labels, split.scores)
                panels = save_eval_maps(
                    out_dir / "maps" / ck.category,
                    ff,
                    split,
                    ck,
                    masks,
                    indices=which,
                    npy=save_maps,
                    threshold=thr,
                    normalized=norm,
                )
                pred_csv = write_eval_predictions(
                    out_dir / "predictions" / f"{ck.category}.csv",
                    _prediction_rows(ff, split.scores, thr, norm, panels, out_dir),
                )
            sel = ck.selection or {}
            rows.append(
                {
                    "category": ck.category,
                    **m,
                    "test_images": int(ff.n_test),
                    "data_path": str(ff.meta.get("dataset_root", "")),
                    "seconds": round(split.seconds, 3),
                    "seconds_per_image": split.seconds / max(1, ff.n_test),
                    "epoch": sel.get("epoch", ck.epochs_done),
                    "selection": sel.get("select", "last"),
                    "score": eval_cfg.score,
                    "average": ck.config.get("train", {}).get("average", "none"),
                    "test_selected": bool(sel.get("test_selected", False)),
                    "predictions": str(pred_csv),
                }
            )
            protocol = protocol or _protocol(ck, sel, eval_cfg)
    finally:
        if tmp_store:
            shutil.rmtree(tmp_store, ignore_errors=True)
    mean = {
        "category": "mean",
        **macro_mean(rows),
        "test_images": int(sum(r["test_images"] for r in rows)),
        "seconds": round(sum(r["seconds"] for r in rows), 3),
        "threshold": None,
        **macro_mean(rows, ("tpr", "fpr")),
        **_sums(rows, ("fp", "fn")),
    }
    test_selected = any(r["test_selected"] for r in rows)
    mean["test_selected"] = test_selected
    protocol["test_selected"] = test_selected
    protocol["selection"] = sorted({r["selection"] for r in rows})  # e.g. ["validation"]: chosen without test labels
    if test_selected:
        protocol["warning"] = "test-selected: some epochs were chosen by their test metrics; not an honest estimate"
    jpath, cpath = write_metrics(out_dir, rows, mean, protocol)
    return {
        "rows": rows,
        "mean": mean,
        "protocol": protocol,
        "metrics_json": str(jpath),
        "metrics_csv": str(cpath),
        "maps": str(out_dir / "maps") if save_maps else None,
        "predictions": str(out_dir / "predictions"),
    }


THRESHOLD_NAMES = ("tpr", "fpr", "fp", "fn")


def _sums(rows: list[dict], names: tuple[str, ...]) -> dict[str, int | None]:
    """Per count, the total over the categories that have it (None where none does)."""
    return {
        k: (sum(r[k] for r in rows if r.get(k) is not None) if any(r.get(k) is not None for r in rows) else None)
        for k in names
    }


def _prediction_rows(ff, scores, thr: float | None, norm, panels: dict, run_dir: Path) -> list[dict[str, Any]]:
    """The rows of RUN/predictions/<category>.csv; heat-map paths relative to the run folder, so it can move."""
    rows = []
    for i, (path, defect, label) in enumerate(zip(ff.test_paths, ff.test_defect_types, ff.test_labels)):
        score = float(scores[i])
        rows.append(
            {
                "path": path,
                "defect_type": defect,
                "label": "anomalous" if label else "normal",
                "score": score,
                "normalized_score": None if norm is None else float(norm[i]),
                "threshold": thr,
                "predicted": None if thr is None else ("anomalous" if score > thr else "normal"),
                "heatmap": panels[i].relative_to(run_dir).as_posix() if i in panels else None,
            }
        )
    return rows


def _cache_problem(fpath: Path | None, meta: dict, ck, data_path: str | None, dataset: str | None) -> str:
    """Why the cached test features cannot be scored for these images ('' when they can)."""
    from edcli.config import DataConfig
    from edcli.features import split_listings, stale_reason
    from edcli.store import FeatureFile

    if fpath is None or not fpath.exists():
        return "no cached test features match the checkpoint"
    root = data_path or ck.data_path
    if not data_path and not Path(root).is_dir():
        return ""  # the training images are gone; their cached features are all that is left to score
    data = DataConfig(
        dataset=dataset or ck.dataset,
        data_path=root,
        image_size=ck.identity.image_size,
        normal_name=ck.config.get("data", {}).get("normal_name", "good"),
    )
    _, listings = split_listings(data, ck.category, splits=("test",))
    with FeatureFile.open(fpath, meta) as ff:
        reason = stale_reason(ff, root, listings)
    return f"the cached features in {fpath} cannot be used: {reason}" if reason else ""


def _protocol(ck, sel: dict, eval_cfg) -> dict[str, Any]:
    """How the numbers were made: epoch and selection, maps, reducer, resolution, seed, backbone, version."""
    from edcli.version import __version__

    ident = ck.identity
    return {
        "selection_how": sel.get("how", "last epoch"),
        "pixel_map": eval_cfg.pixel_map + (" (unsmoothed, as the reference)" if eval_cfg.pixel_map == "raw" else ""),
        "reducer": eval_cfg.reducer,
        "score": eval_cfg.score + (" (the paper's)" if eval_cfg.score == "ed" else ""),
        "weight_average": sel.get("average", "none"),
        "smoothing_sigma": eval_cfg.sigma,
        "resolution": f"{ident.image_size}x{ident.image_size}",
        "seed": ck.config.get("train", {}).get("seed"),
        "backbone": ident.backbone,
        # how the weights were trained (checkpoints from before these options: per-level, constant)
        "optimizer": ck.config.get("train", {}).get("optimizer", "per-level"),
        "lr_schedule": ck.config.get("train", {}).get("lr_schedule", "constant"),
        "d_model": "/".join(str(d) for d in ck.config.get("model", {}).get("d_model") or ()) or "C/2 rule",
        "weights_sha256": ident.weights_sha256,
        "random_init": ident.random_init,
        "edcli_version": __version__,
        "aupro_fpr_limit": 0.3,
        "averaging": "macro (per category, then mean)",
    }
