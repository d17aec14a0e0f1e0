"""`ed eval`: score the labelled test split of each checkpoint's category; metrics per category and their mean."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from edcli.errors import ConfigError, DataError
from edcli.track import NullTracker


def run(run_dir: Optional[str], checkpoint: Optional[str], eval_cfg, data_path: Optional[str] = None,
        dataset: Optional[str] = None, categories: tuple[str, ...] = (), store: Optional[str] = None,
        save_maps: bool = False, num_workers: int = 0, track=None) -> dict[str, Any]:
    """Metrics of every checkpoint of a run (or of one checkpoint); writes RUN/metrics.json and metrics.csv."""
    from edcli.checkpoint import build_model, find_checkpoints, load_checkpoint
    from edcli.engine import check_precision, resolve_device
    from edcli.evaluate import category_metrics, masks_if_known, read_from, score_cached
    from edcli.features import context_for_checkpoint, ensure_features
    from edcli.method.scoring import parse_reducer
    from edcli.metrics import macro_mean
    from edcli.report import save_eval_maps, write_metrics
    from edcli.store import FeatureFile, features_path

    track = track or NullTracker()
    parse_reducer(eval_cfg.reducer)
    if eval_cfg.pixel_map not in ("raw", "smoothed"):
        raise ConfigError(f"--pixel-map {eval_cfg.pixel_map!r}: use raw or smoothed")
    device = resolve_device(eval_cfg.device)
    check_precision(eval_cfg.precision, device)
    paths = find_checkpoints(run_dir, checkpoint, categories)
    out_dir = Path(run_dir) if run_dir else Path(checkpoint).resolve().parent.parent
    cache: dict = {}
    rows, protocol = [], None
    tmp_store = None
    try:
        for cpath in paths:
            ck = load_checkpoint(cpath)
            model = build_model(ck).to(device)
            meta = dict(ck.backbone)
            st = store or ck.config.get("store")
            fpath = features_path(st, dataset or ck.dataset, ck.category, meta) if st else None
            if fpath is None or not fpath.exists():
                ctx = context_for_checkpoint(ck, data_path, device, cache, dataset)
                if st is None:
                    tmp_store = tmp_store or tempfile.mkdtemp(prefix="ed-eval-store-")
                    st = tmp_store
                track.log(f"{ck.category}: no cached test features match the checkpoint; running the backbone")
                fpath = ensure_features(ctx, st, ck.category, eval_cfg.batch_size, num_workers, track)
            with FeatureFile.open(fpath, meta) as ff:
                if ff.n_test == 0:
                    raise DataError(f"{ck.category}: the test split is empty; nothing to evaluate")
                split = score_cached(model, read_from(ff, "test"), ff.n_test, int(meta["image_size"]), device,
                                     eval_cfg.precision, eval_cfg, batch_size=eval_cfg.batch_size)
                masks = masks_if_known(ff)
                m = category_metrics(ff.test_labels, split, masks, eval_cfg)
                if save_maps:
                    save_eval_maps(out_dir / "maps" / ck.category, ff, split, ck, masks)
            sel = ck.selection or {}
            rows.append({"category": ck.category, **m, "test_images": int(ff.n_test),
                         "seconds": round(split.seconds, 3), "seconds_per_image": split.seconds / max(1, ff.n_test),
                         "epoch": sel.get("epoch", ck.epochs_done), "selection": sel.get("select", "last"),
                         "test_selected": bool(sel.get("test_selected", False))})
            protocol = protocol or _protocol(ck, meta, sel, eval_cfg)
    finally:
        if tmp_store:
            shutil.rmtree(tmp_store, ignore_errors=True)
    mean = {"category": "mean", **macro_mean(rows), "test_images": int(sum(r["test_images"] for r in rows)),
            "seconds": round(sum(r["seconds"] for r in rows), 3)}
    test_selected = any(r["test_selected"] for r in rows)
    mean["test_selected"] = test_selected
    protocol["test_selected"] = test_selected
    if test_selected:
        protocol["warning"] = "test-selected: some epochs were chosen by their test metrics; not an honest estimate"
    jpath, cpath = write_metrics(out_dir, rows, mean, protocol)
    return {"rows": rows, "mean": mean, "protocol": protocol, "metrics_json": str(jpath), "metrics_csv": str(cpath),
            "maps": str(out_dir / "maps") if save_maps else None}


def _protocol(ck, meta: dict, sel: dict, eval_cfg) -> dict[str, Any]:
    """How the numbers were made: epoch and selection, maps, reducer, resolution, seed, backbone, version."""
    from edcli.version import __version__

    return {
        "selection_how": sel.get("how", "last epoch"),
        "pixel_map": eval_cfg.pixel_map + (" (unsmoothed, as the reference)" if eval_cfg.pixel_map == "raw" else ""),
        "reducer": eval_cfg.reducer, "smoothing_sigma": eval_cfg.sigma,
        "resolution": f"{meta['image_size']}x{meta['image_size']}",
        "seed": ck.config.get("train", {}).get("seed"), "backbone": meta["backbone"],
        # how the weights were trained (checkpoints from before these options: per-level, constant)
        "optimizer": ck.config.get("train", {}).get("optimizer", "per-level"),
        "lr_schedule": ck.config.get("train", {}).get("lr_schedule", "constant"),
        "d_model": "/".join(str(d) for d in ck.config.get("model", {}).get("d_model") or ()) or "C/2 rule",
        "weights_sha256": meta["weights_sha256"], "random_init": bool(meta.get("random_init", False)),
        "edcli_version": __version__, "aupro_fpr_limit": 0.3, "averaging": "macro (per category, then mean)",
    }
