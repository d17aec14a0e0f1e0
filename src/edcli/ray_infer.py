"""`ed infer --engine ray`: the scoring of `ed infer` in a Ray Data pipeline (the only module that imports ray).

The image list is read by Ray (`ray.data.from_items`), scored by `map_batches` with a stateful scorer class per
worker (the Detector is loaded once per actor, on a GPU where the actor has one), and the rows come back in input
order (`preserve_order`) to the driver, which streams them to the same predictions.jsonl/.csv as a plain run.
Heat maps are written by the workers themselves, so --out must be a folder every node sees (a shared filesystem),
as must the checkpoint and the images. `ray.init()` joins the cluster named by RAY_ADDRESS, else starts a local one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

from edcli.errors import DependencyError


class _Scorer:
    """One Ray actor: the Detector and the output settings, loaded once; a batch of {index, path} -> rows."""

    def __init__(self, checkpoint, outdir, heatmaps, raw_maps, device, precision, threshold, max_pixels, threads):
        import torch

        from edcli.detector import Detector
        from edcli.infer_scoring import BatchScorer

        if threads:
            torch.set_num_threads(threads)
        det = Detector.load(checkpoint, device, precision, threshold)
        self.scorer, self.max_pixels = BatchScorer(det, outdir, heatmaps, raw_maps), max_pixels

    def __call__(self, batch: dict) -> dict:
        from edcli.data.images import FileDataset, collate_files

        det = self.scorer.det
        paths = [str(p) for p in batch["path"]]  # as given: the rows name them so
        indices = [int(i) for i in batch["index"]]
        opened = [str(p) for p in batch["file"]]  # absolute: an actor's working folder is its own
        data = FileDataset(opened, det.image_size, det.resize_mode, self.scorer.heatmaps != "none", self.max_pixels)
        rows = self.scorer.rows(collate_files([data[k] for k in range(len(paths))]), indices, paths)
        return {"index": [i for i, _ in rows], "row": [json.dumps(r) for _, r in rows]}


def ray_batches(
    checkpoint: str,
    items: list[tuple[int, str]],
    scorer,
    batch_size: int,
    max_pixels: int,
    device: str,
    precision: str,
    threshold: float | None,
    workers: int = 2,
) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    """(input index, row) lists in input order for `items` ((index, path)), scored by `workers` Ray actors."""
    try:
        import ray
    except ImportError:
        raise DependencyError("--engine ray needs Ray: pip install 'edcli[ray]'") from None
    if not items:
        return
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # rows in input order
    gpus = device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    ds = ray.data.from_items([{"index": i, "path": p, "file": os.path.abspath(p)} for i, p in items])
    ds = ds.map_batches(
        _Scorer,
        fn_constructor_kwargs={
            "checkpoint": os.path.abspath(checkpoint),
            "outdir": os.path.abspath(str(scorer.outdir)),
            "heatmaps": scorer.heatmaps,
            "raw_maps": scorer.raw_maps,
            "device": "cuda" if gpus else "cpu",
            "precision": precision,
            "threshold": threshold,
            "max_pixels": max_pixels,
            "threads": 0 if gpus else 1,  # one CPU per actor: one intra-op thread, no oversubscription
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, workers)),
        num_gpus=1 if gpus else 0,
        num_cpus=1,
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield [(int(i), _clean(json.loads(r))) for i, r in zip(batch["index"], batch["row"])]


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a failed row's numbers came back as None already; keep floats as floats."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
