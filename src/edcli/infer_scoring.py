"""One batch of `ed infer`: a FileDataset batch -> rows (with the per-image model time) and, as asked, the heat-map
panels, masks and raw maps of its images. Shared by the DataLoader loop (commands/infer.py) and Ray's per-worker
scorer (ray_infer.py), so both write the same rows and files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

HEATMAP_CHOICES = ("auto", "all", "anomalous", "none")
# --save-heatmaps auto: a panel for every image up to this many inputs, then for the anomalous ones only. A panel
# and its mask cost about 40 ms a 64 px image on one core (7 against 18.6 images/s in the issue): a thousand of them
# add under a minute and are still looked through by a person; beyond that one looks at the flagged images.
AUTO_ALL_UP_TO = 1000


def heatmap_choice(value: bool | str, n: int) -> str:
    """The heat maps of a run of n images: True/False (the Python API's old flag) are all/none; auto by size."""
    from edcli.errors import ConfigError

    if value is True or value is False:
        return "all" if value else "none"
    if value not in HEATMAP_CHOICES:
        raise ConfigError(f"--save-heatmaps {value}: choose one of {', '.join(HEATMAP_CHOICES)}")
    if value == "auto":
        return "all" if n <= AUTO_ALL_UP_TO else "anomalous"
    return value


class BatchScorer:
    """The Detector and the output settings of a run: `rows(batch, indices, paths)` scores one batch."""

    def __init__(self, det, outdir: str | Path, heatmaps: str, raw_maps: bool):
        self.det, self.outdir, self.heatmaps, self.raw_maps = det, Path(outdir), heatmaps, raw_maps
        # colours fixed by the model's calibration (twice its threshold), not by a --threshold override
        thr = det.threshold
        calibrated = float((det.meta.get("calibration") or {}).get("threshold", thr))
        self.color_max = 2.0 * calibrated if calibrated > 0 else None

    def _row(self, path: str, pred=None, seconds: float | None = None, error: str = "") -> dict[str, Any]:
        """One output row: a scored image (its prediction and scoring time) or a failed one (its error)."""
        det = self.det
        return {
            "path": path,
            "score": pred.score if pred else None,
            "normalized_score": pred.normalized_score if pred else None,
            "label": pred.label if pred else None,
            "threshold": det.threshold,
            "threshold_origin": det.threshold_origin,
            "error": error,
            "heatmap": None,
            "seconds": seconds,
        }

    def rows(self, batch: dict, indices: list[int], paths: list[str]) -> list[tuple[int, dict[str, Any]]]:
        """(input index, row) for each item of a collated FileDataset batch, in the batch's order; indices and
        paths: the input index and path of each item."""
        import torch

        from edcli.report import save_infer_maps

        det = self.det
        errors = list(batch["error"])
        good = [b for b, e in enumerate(errors) if not e]
        preds, each = [], None
        if good:
            t0 = time.perf_counter()
            preds = det.predictions(
                *det.score(batch["image"][torch.tensor(good)]),
                [(int(batch["orig_h"][b]), int(batch["orig_w"][b])) for b in good],
                [paths[b] for b in good],
            )
            each = (time.perf_counter() - t0) / len(good)
        pred_of = dict(zip(good, preds))
        out = []
        for b, err in enumerate(errors):
            i, path = indices[b], paths[b]
            if err:
                out.append((i, self._row(path, error=err)))
                continue
            p = pred_of[b]
            row = self._row(path, p, each)
            if self.heatmaps == "all" or (self.heatmaps == "anomalous" and p.label == "anomalous"):
                panel = save_infer_maps(
                    self.outdir,
                    path,
                    batch["original"][b],
                    i,
                    p.raw_map,
                    p.smoothed_map,
                    det.threshold,
                    det.resize_mode,
                    *p.size,
                    score=p.score,
                    normalized=p.normalized_score,
                    label=p.label,
                    color_max=self.color_max,
                    raw=self.raw_maps,
                )
                row["heatmap"] = str(panel)
            elif self.raw_maps:
                from edcli.report import save_npy

                save_npy(self.outdir / "maps" / f"{i:06d}_{Path(path).stem}.npy", p.raw_map)
            out.append((i, row))
        return out
