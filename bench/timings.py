"""Times the tests used to assert and no longer do (a shared CPU under load made those bounds flaky).

    python bench/timings.py [--reps 3]

- `ed --help` start-up (a subprocess; target < 1 s so TAB completion stays instant), best of --reps;
- AUPRO@0.3 on 100 maps of 256x256 with blob-shaped regions (target < 5 s), median of --reps;
- the offline refusal of a hub backbone (`build_backbone(wide_resnet50_2)` with HF_HUB_OFFLINE=1; a hub lookup
  would hang about a minute), median of --reps.
Prints one JSON object with the CPU model it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _blob_masks(rng, n: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), bool)
    for i in range(int(n * 0.8)):  # the last 20 % stay normal
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            ry, rx = rng.integers(3, 30, 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    from edcli.backbone import build_backbone
    from edcli.config import BackboneConfig
    from edcli.errors import WeightsError
    from edcli.metrics import aupro

    help_s = [
        _timed(lambda: subprocess.run([sys.executable, "-m", "edcli", "--help"], capture_output=True, check=True))
        for _ in range(args.reps)
    ]
    rng = np.random.default_rng(0)
    masks = _blob_masks(rng, 100, 256)
    maps = (rng.random(masks.shape, dtype=np.float32) + 0.3 * masks).astype(np.float32)
    aupro_s = [_timed(lambda: aupro(masks, maps)) for _ in range(args.reps)]

    def refuse():
        try:
            build_backbone(BackboneConfig(name="wide_resnet50_2"))
        except WeightsError:
            return
        raise SystemExit("build_backbone(wide_resnet50_2) offline did not refuse")

    refuse_s = [_timed(refuse) for _ in range(args.reps)]
    print(
        json.dumps(
            {
                "cpu": _cpu(),
                "reps": args.reps,
                "help_s_best": round(min(help_s), 3),
                "help_target_s": 1.0,
                "aupro_100x256_s_median": round(statistics.median(aupro_s), 3),
                "aupro_target_s": 5.0,
                "offline_refusal_ms_median": round(1000 * statistics.median(refuse_s), 2),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
