"""`ed infer`: score any images with a checkpoint or an exported ONNX model; predictions, heat maps, masks, raw maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edcli.files import require_folder
from edcli.track import NullTracker


def _counted(track, loader, n: int):
    """The loader's batches under a bar that counts images (a batch holds up to --batch-size of them)."""
    with track.task("infer", total=n, unit="images") as bar:
        for batch in loader:
            yield batch
            bar.advance(len(batch["error"]))


def run(
    *,
    checkpoint: str,
    inputs: list[str],
    out: str,
    batch_size: int = 8,
    device: str = "auto",
    precision: str = "fp32",
    recursive: bool = False,
    save_heatmaps: bool = True,
    threshold: float | None = None,
    num_workers: int = 2,
    stdin=None,
    track=None,
) -> dict[str, Any]:
    """`ed infer`: score files, folders and globs with a checkpoint (`.pt`, PyTorch) or an exported `.onnx` model
    (ONNX Runtime), through edcli.detector; bad files become rows with their error."""
    import torch

    from edcli.config import check_count, check_real
    from edcli.data.images import FileDataset, collate_files, expand_inputs
    from edcli.detector import Detector, is_onnx
    from edcli.distributed import shard
    from edcli.engine import data_loader, init_distributed, rank_device
    from edcli.report import save_infer_maps, write_predictions

    track = track or NullTracker()
    require_folder(out, "--out")
    check_count("--batch-size", batch_size)
    check_count("--num-workers", num_workers, 0)
    if threshold is not None:
        check_real("--threshold", threshold)
    dist = init_distributed(device)
    dev = rank_device(device, dist)
    if is_onnx(checkpoint):  # ONNX Runtime picks its provider from the name; under torchrun each rank its own GPU
        dev = str(dev) if dist.enabled else device
    det = Detector.load(checkpoint, dev, precision, threshold)
    paths = expand_inputs(list(inputs), recursive=recursive, stdin=stdin)
    if det.warning and threshold is None:
        track.warn(det.warning)
    thr, origin, S = det.threshold, det.threshold_origin, det.image_size
    # colours fixed by the model's calibration (twice its threshold), not by a --threshold override
    calibrated = float((det.meta.get("calibration") or {}).get("threshold", thr))
    color_max = 2.0 * calibrated if calibrated > 0 else None
    mine = shard(list(range(len(paths))), dist)
    # the panels draw the image the loader decoded: each file is decoded once
    dataset = FileDataset([paths[i] for i in mine], S, det.resize_mode, keep_original=save_heatmaps)
    loader = data_loader(dataset, batch_size, num_workers, collate_fn=collate_files)
    outdir = Path(out)
    rows: list[dict[str, Any]] = []
    for batch in _counted(track, loader, len(mine)):
        errors = list(batch["error"])
        good = [b for b, e in enumerate(errors) if not e]
        preds = []
        if good:
            preds = det.predictions(
                *det.score(batch["image"][torch.tensor(good)]),
                [(int(batch["orig_h"][b]), int(batch["orig_w"][b])) for b in good],
                [paths[mine[int(batch["index"][b])]] for b in good],
            )
        pred_of = dict(zip(good, preds))
        for b, err in enumerate(errors):
            i = mine[int(batch["index"][b])]
            if err:
                rows.append(
                    {
                        "index": i,
                        "path": paths[i],
                        "score": None,
                        "normalized_score": None,
                        "label": None,
                        "threshold": thr,
                        "threshold_origin": origin,
                        "error": err,
                    }
                )
                continue
            p = pred_of[b]
            rows.append(
                {
                    "index": i,
                    "path": paths[i],
                    "score": p.score,
                    "normalized_score": p.normalized_score,
                    "label": p.label,
                    "threshold": thr,
                    "threshold_origin": origin,
                    "error": "",
                }
            )
            if save_heatmaps:
                panel = save_infer_maps(
                    outdir,
                    paths[i],
                    batch["original"][b],
                    i,
                    p.raw_map,
                    p.smoothed_map,
                    thr,
                    det.resize_mode,
                    *p.size,
                    score=p.score,
                    normalized=p.normalized_score,
                    label=p.label,
                    color_max=color_max,
                )
                rows[-1]["heatmap"] = str(panel)
    if dist.enabled:
        from edcli.distributed import gather_rows

        rows = gather_rows(rows, dist, key="index")
        if not dist.is_main:
            return {"rows": rows, "csv": None, "jsonl": None, "heatmaps": None, "threshold_origin": origin}
    rows.sort(key=lambda r: r["index"])
    cpath, jpath = write_predictions(outdir, rows)
    return {
        "rows": rows,
        "csv": str(cpath),
        "jsonl": str(jpath),
        "threshold_origin": origin,
        "heatmaps": str(outdir / "heatmaps") if save_heatmaps else None,
    }
