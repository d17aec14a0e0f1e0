"""`ed infer`: score any images with a checkpoint; predictions, heat maps, masks and raw maps."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from edcli.errors import ConfigError
from edcli.track import NullTracker


def _counted(track, loader, n: int):
    """The loader's batches under a bar that counts images (a batch holds up to --batch-size of them)."""
    with track.task("infer", total=n, unit="images") as bar:
        for batch in loader:
            yield batch
            bar.advance(len(batch["error"]))


def run(checkpoint: str, inputs: list[str], out: str, batch_size: int = 8, device: str = "auto",
              precision: str = "fp32", recursive: bool = False, save_heatmaps: bool = True,
              threshold: Optional[float] = None, num_workers: int = 2, stdin=None, track=None) -> dict[str, Any]:
    """`ed infer`: score files, folders and globs with a checkpoint; bad files become rows with their error."""
    import numpy as np
    import torch

    from edcli.checkpoint import build_model, load_checkpoint
    from edcli.config import check_count, check_real
    from edcli.data.images import FileDataset, expand_inputs
    from edcli.distributed import gather_rows, shard
    from edcli.engine import (
        check_precision,
        data_loader,
        init_distributed,
        predict_maps,
        rank_device,
    )
    from edcli.features import context_for_checkpoint
    from edcli.method.scoring import normalize, score_maps
    from edcli.report import save_infer_maps, write_predictions

    track = track or NullTracker()
    check_count("--batch-size", batch_size)
    check_count("--num-workers", num_workers, 0)
    if threshold is not None:
        check_real("--threshold", threshold)
    dist = init_distributed(device)
    dev = rank_device(device, dist)
    check_precision(precision, dev)
    ck = load_checkpoint(checkpoint)
    paths = expand_inputs(list(inputs), recursive=recursive, stdin=stdin)
    calib = ck.calibration or {}
    if threshold is not None:
        thr, origin = float(threshold), f"--threshold {threshold:g} (given by the user)"
    elif "threshold" in calib:
        thr, origin = float(calib["threshold"]), calib.get("origin", "calibration")
        if calib.get("warning"):
            track.warn(calib["warning"])
    else:
        raise ConfigError(f"{checkpoint} holds no calibrated threshold; pass --threshold VALUE")
    scale = float(calib.get("scale", 1.0))
    # colours fixed by the model's calibration (twice its threshold), not by a --threshold override
    color_max = 2.0 * float(calib.get("threshold", thr)) if float(calib.get("threshold", thr)) > 0 else None
    reducer, sigma = calib.get("reducer", "max"), float(calib.get("sigma", 4.0))
    model = build_model(ck).to(dev)
    ctx = context_for_checkpoint(ck, None, dev, {})
    S = int(ck.backbone["image_size"])
    mine = shard(list(range(len(paths))), dist)
    dataset = FileDataset([paths[i] for i in mine], S, ck.backbone["resize_mode"])
    loader = data_loader(dataset, batch_size, num_workers)
    outdir = Path(out)
    rows: list[dict[str, Any]] = []
    for batch in _counted(track, loader, len(mine)):
        errors = list(batch["error"])
        ok = torch.tensor([not e for e in errors], dtype=torch.bool)
        raw = np.full(len(errors), np.nan)
        maps = np.zeros((0, S, S), np.float32)
        if ok.any():
            with torch.inference_mode():
                feats = ctx.extractor(batch["image"][ok].to(dev))
                # quantised to float16 as in the feature store, so infer and eval see identical inputs
                feats = [f.half().float() for f in feats]
                maps = predict_maps(model, feats, S, dev, precision).numpy()
            smoothed, raw[ok.numpy()] = score_maps(maps, sigma, reducer)
        j = 0
        for b, err in enumerate(errors):
            i = mine[int(batch["index"][b])]
            if err:
                rows.append({"index": i, "path": paths[i], "score": None, "normalized_score": None, "label": None,
                             "threshold": thr, "threshold_origin": origin, "error": err})
                continue
            score = float(raw[b])
            label = "anomalous" if score > thr else "normal"
            norm = float(normalize(score, thr, scale))
            rows.append({"index": i, "path": paths[i], "score": score, "normalized_score": norm,
                         "label": label, "threshold": thr, "threshold_origin": origin, "error": ""})
            if save_heatmaps:
                panel = save_infer_maps(outdir, paths[i], i, maps[j], smoothed[j], thr, ck.backbone["resize_mode"],
                                        int(batch["orig_h"][b]), int(batch["orig_w"][b]), score=score,
                                        normalized=norm, label=label, color_max=color_max)
                rows[-1]["heatmap"] = str(panel)
            j += 1
    if dist.enabled:
        rows = gather_rows(rows, dist, key="index")
        if not dist.is_main:
            return {"rows": rows, "csv": None, "jsonl": None, "heatmaps": None, "threshold_origin": origin}
    rows.sort(key=lambda r: r["index"])
    cpath, jpath = write_predictions(outdir, rows)
    return {"rows": rows, "csv": str(cpath), "jsonl": str(jpath), "threshold_origin": origin,
            "heatmaps": str(outdir / "heatmaps") if save_heatmaps else None}
