"""End-to-end inference speed: edcli's scoring path (PyTorch and ONNX Runtime) vs the naive oracle's, at 256 px.

    python bench/infer.py [--backbones tf_efficientnet_lite0 wide_resnet50_2] [--size 256] [--reps 3]
                          [--device cpu|cuda] [--precision fp32|bf16] [--threads 1 2] [--n32 32] [--no-oracle]

End to end = PNG decode + resize, backbone, both level models, scoring, sigma-4 smoothing, image score.
edcli: `ed infer`'s path (FileDataset, then edcli.scorer.Scorer.images: the extractor and
edcli.method.scorer.MapScorer, whose level models run with branches="score": only the inter branch's targets and
KL). onnxruntime: the same model exported as `ed export` does (edcli.method.scorer.ImageScorer over a portable
MapScorer, edcli.onnxio) and run by ONNX Runtime's CPU provider with as many intra-op threads (smoothing and
reducer inside the graph; its largest score difference to the torch path on the bench images is reported); with
--device cuda only where onnxruntime has its CUDA provider (otherwise skipped, and the JSON says why).
oracle (tests/oracle.py): every Gaussian target (with its 1/(2 pi sy sx) prefactor) and both branches' KL maps per
layer, as the reference's test pass computes them, at batch 1 as the reference, then the same smoothing
(edcli.method.scoring.GaussianSmooth) and reducer (reduce_maps).
The level models have the reference's widths (d_model 256 / 512 whatever the backbone)
and random weights (speed does not depend on them); wide_resnet50_2 is random-init (no hub here), lite0 uses its
packaged weights. Reports the median over --reps of: ms per image at batch 1 (mean over 4 images) and images
per second at batch 32 (the oracle over --n32-oracle images: it scores one image at a time anyway).
On a busy shared CPU run it with OMP_WAIT_POLICY=PASSIVE, as `ed` sets it (spinning OpenMP threads steal the cores
the work needs); the JSON records it. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _images(folder: Path, n: int, size: int) -> list[str]:
    """n PNG crops of scikit-image's brick photo, larger than the input size so that decoding and resizing count."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = np.repeat(data.brick()[..., None], 3, axis=2)
    rng = np.random.default_rng(0)
    side = int(size * 1.5)
    paths = []
    for i in range(n):
        y, x = rng.integers(0, photo.shape[0] - side, size=2)
        p = folder / f"{i:03d}.png"
        Image.fromarray(photo[y : y + side, x : x + side]).save(p)
        paths.append(str(p))
    return paths


def _oracle_maps(oracles, feats, size: int):
    """The reference's test pass: full targets and KL maps of both branches, score = rec x inter."""
    import torch
    import torch.nn.functional as F
    from oracle import kl, oracle_level_forward

    maps = []
    for oracle, feat in zip(oracles, feats):
        B, C, H, W = feat.shape
        x = feat.flatten(2).transpose(1, 2)
        out = oracle_level_forward(oracle, x)
        rec = ((out.recon - x) ** 2).mean(-1) + 1 - F.cosine_similarity(out.recon, x, dim=-1)
        scores = []
        for P, T in ((out.P_inter, out.T_inter), (out.P_intra, out.T_intra)):
            d = sum(kl(p, t) + kl(t, p) for p, t in zip(P, T)) / len(P)
            s = torch.softmax(-d, dim=-1)
            scores.append(
                s.max(-1, keepdim=True).values - s
            )  # the intra one is computed and not used, as the reference
        maps.append(
            F.interpolate(
                (rec * scores[0]).reshape(B, 1, H, W), size=(size, size), mode="bilinear", align_corners=True
            )[:, 0]
        )
    return torch.stack(maps).mean(0)


def bench_backbone(name: str, args) -> dict:
    import numpy as np
    import torch
    from oracle import oracle_from_level

    from edcli.backbone import build_backbone
    from edcli.config import BackboneConfig, ModelConfig
    from edcli.data.images import FileDataset
    from edcli.engine import autocast, sync
    from edcli.method.model import build_ed_model
    from edcli.method.scorer import ImageScorer, MapScorer
    from edcli.method.scoring import GaussianSmooth, reduce_maps
    from edcli.onnxio import OnnxScorer, export_graph
    from edcli.scorer import Scorer

    dev = torch.device(args.device)
    extractor, _ = build_backbone(BackboneConfig(name=name, random_init=name != "tf_efficientnet_lite0"))
    extractor = extractor.to(dev)
    grids = extractor.grids(args.size)
    torch.manual_seed(0)
    model = (
        build_ed_model(
            extractor.channels,
            grids,
            [torch.randn(c, h * w) for c, (h, w) in zip(extractor.channels, grids)],
            ModelConfig(),
        )
        .to(dev)
        .eval()
    )
    oracles = [oracle_from_level(level).eval() for level in model.levels]
    tmp = Path(tempfile.mkdtemp(prefix="ed-bench-"))
    paths = _images(tmp, max(args.n32, 4), args.size)
    ort_skip = _ort_skip_reason(args.device)
    if ort_skip is None:
        onnx_path = tmp / "model.onnx"
        export_graph(
            ImageScorer(extractor.cpu(), MapScorer(model.cpu().levels, args.size, 4.0, "max", portable=True)),
            onnx_path,
            args.size,
            {"format": "edcli-onnx", "image_size": args.size, "resize_mode": "squash"},
        )
        extractor, model = extractor.to(dev), model.to(dev)
        onnx_scorer = OnnxScorer(onnx_path, args.device, torch.get_num_threads())
    torch_scorer = Scorer(MapScorer(model.levels, args.size, 4.0, "max"), dev, args.precision, extractor=extractor)
    smooth = GaussianSmooth(args.size, 4.0).to(dev)
    scores: dict[str, list] = {"edcli": [], "onnxruntime": []}

    def run(which: str, batch: int, n: int) -> float:
        ds = FileDataset(paths[:n], args.size, "squash")
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=0)
        sync(dev)
        start = time.perf_counter()
        for b in loader:
            if which == "onnxruntime":
                scores[which].append(onnx_scorer.images(b["image"].numpy())[2])
                continue
            if which == "edcli":
                scores[which].append(torch_scorer.images(b["image"]).scores)
                continue
            with torch.inference_mode():
                feats = [f.half().float() for f in extractor(b["image"].to(dev))]
                with autocast(dev, args.precision):
                    maps = torch.cat(
                        [
                            _oracle_maps(oracles, [f[i : i + 1] for f in feats], args.size)
                            for i in range(feats[0].shape[0])
                        ]
                    ).float()
                reduce_maps(smooth(maps), "max").cpu().numpy()
        sync(dev)
        return time.perf_counter() - start

    out = {"grids": grids, "channels": extractor.channels, "d_model": [lv.d_model for lv in model.levels]}
    paths_ = ("edcli",) + (("onnxruntime",) if ort_skip is None else ()) + (() if args.no_oracle else ("oracle",))
    b1: dict[str, list] = {w: [] for w in paths_}
    b32: dict[str, list] = {w: [] for w in paths_}
    for which in paths_:
        run(which, 1, 1)  # warm-up
    for _ in range(args.reps):  # the paths take turns within each repetition, so a change of load hits them alike
        for which in paths_:
            b1[which].append(run(which, 1, 4) / 4 * 1000)
            n32 = min(args.n32, args.n32_oracle) if which == "oracle" else args.n32  # the oracle is slow: fewer
            b32[which].append(n32 / run(which, 32, n32))
    for which in paths_:
        out[which] = {
            "ms_per_image_batch1": round(statistics.median(b1[which]), 1),
            "images_per_s_batch32": round(statistics.median(b32[which]), 2),
            "reps_ms_batch1": [round(v, 1) for v in b1[which]],
            "reps_images_per_s_batch32": [round(v, 2) for v in b32[which]],
        }
    if not args.no_oracle:
        out["speedup_batch1"] = round(out["oracle"]["ms_per_image_batch1"] / out["edcli"]["ms_per_image_batch1"], 2)
        out["speedup_batch32"] = round(out["edcli"]["images_per_s_batch32"] / out["oracle"]["images_per_s_batch32"], 2)
    if ort_skip is not None:
        out["onnxruntime"] = f"skipped: {ort_skip}"
        return out
    out["onnxruntime_over_torch_batch1"] = round(
        out["edcli"]["ms_per_image_batch1"] / out["onnxruntime"]["ms_per_image_batch1"], 2
    )
    out["onnxruntime_over_torch_batch32"] = round(
        out["onnxruntime"]["images_per_s_batch32"] / out["edcli"]["images_per_s_batch32"], 2
    )
    a, b = np.concatenate(scores["onnxruntime"]), np.concatenate(scores["edcli"])
    out["onnxruntime_score_max_rel_diff"] = float(f"{np.abs(a / b - 1).max():.2e}")
    return out


def _ort_skip_reason(device: str) -> str | None:
    """Why ONNX Runtime is not measured on `device`, or None: on a GPU only where its CUDA provider exists."""
    import onnxruntime

    if device.startswith("cuda") and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return f"onnxruntime {onnxruntime.__version__} has no CUDA provider here (install onnxruntime-gpu)"
    return None


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["tf_efficientnet_lite0", "wide_resnet50_2"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--threads", type=int, nargs="+", default=[2], help="intra-op threads; several: one run each")
    p.add_argument("--no-oracle", action="store_true", help="skip the (slow) naive oracle")
    p.add_argument("--n32", type=int, default=32, help="images in the batch-32 measurement")
    p.add_argument("--n32-oracle", type=int, default=8, help="images in the oracle's batch-32 measurement")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import onnxruntime

    res = {
        "device": args.device,
        "precision": args.precision,
        "size": args.size,
        "n32": args.n32,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_avg_start": os.getloadavg()[0],
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")},
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.backbones:
            res[f"{name}, {threads} thread(s)"] = bench_backbone(name, args)
    res["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
