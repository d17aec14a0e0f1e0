"""`ed features` speed and store size: seconds per image and bytes per image for each backbone at one size.

    python bench/features.py [--backbones tf_efficientnet_lite0 wide_resnet50_2] [--size 256] [--images 24]

Writes a demo category (brick) of --images train images at --size, runs `run_features` (decode, resize, backbone,
pooling, HDF5 write) once per backbone into a fresh store, and prints JSON: seconds per image (train + test
images), file bytes per image. wide_resnet50_2 uses --random-init (timing only: no hub here).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["tf_efficientnet_lite0", "wide_resnet50_2"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from edcli.commands.features import run as run_features
    from edcli.config import BackboneConfig, DataConfig
    from edcli.data.synth import SynthSpec, make_dataset

    tmp = Path(tempfile.mkdtemp(prefix="ed-bench-features-"))
    make_dataset(
        tmp / "data", ("brick",), SynthSpec(n_train=args.images, n_test_good=4, n_per_defect=1, size=args.size)
    )
    data = DataConfig(dataset="mvtec", data_path=str(tmp / "data"), image_size=args.size)
    res = {"size": args.size, "load_avg_start": os.getloadavg()[0]}
    for name in args.backbones:
        bb = BackboneConfig(name=name, random_init=name != "tf_efficientnet_lite0")
        start = time.perf_counter()
        rows = run_features(
            data=data, bb_cfg=bb, store=str(tmp / f"store-{name}"), device="cpu", batch_size=args.batch_size
        )
        total = time.perf_counter() - start  # includes building the backbone once
        n = rows[0]["train"] + rows[0]["test"]
        res[name] = {
            "images": n,
            "seconds_per_image": round(rows[0]["seconds"] / n, 4),
            "seconds_per_image_incl_backbone_build": round(total / n, 4),
            "bytes_per_image": int(rows[0]["bytes"] / n),
            "random_init": bb.random_init,
            "shapes": rows[0]["shapes"],
        }
    res["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
