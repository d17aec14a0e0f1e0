"""`ed infer` at scale: images/s at 256 px, batch 32, 1 vs 2 processes (--shard), heat maps none/anomalous/all,
against a PatchCore-style nearest-neighbour peer on the same backbone and images; peak RSS against the number of
images.

    python bench/infer_scale.py [--n 64] [--rss-counts 1000 10000] [--work /tmp/ed-infer-scale] [--epochs 1]
        [--d-model 64,64] [--rss-size 64] [--peer-banks 0 24576]

Setup (cached in --work): a made-up 256 px dataset (edcli.data.synth), its features, and a model trained for
--epochs with the reference's widths or --d-model's (speed does not depend on how well it is trained). The peak
RSS runs can use a model trained at --rss-size instead (what they measure, rows kept or streamed, does not depend
on the image size; 10,000 images at 256 px take hours on one core). Every `ed infer` run is a
fresh `python -m edcli infer ... --device cpu --num-workers 0` with OMP_NUM_THREADS=1 per process, so one process
uses one core and two processes (--shard 0/2 and 1/2, started together) two; images/s is counted from the scoring
loop (infer.json's seconds: model loading excluded), for two processes as all images over the slower part.
The inputs are hard links of --distinct PNG crops (1.5x the input size, so decoding and resizing count), as many
names as needed: 10,000 inputs cost no disk.
Peer: PatchCore's scoring (Roth et al. 2022) on the same backbone levels: a memory bank of train patch features
(each level 3x3-averaged, the coarse one upsampled to the fine grid, concatenated), an image's score = the largest
over its patches of the distance to the nearest bank feature (one matrix product per image, then min). Two bank
sizes by default: every patch of the 8 train images (8,192), and the 24,576 patches of PatchCore's default 10%
coreset of MVTec AD's median category (240 train images), the train patches repeated to that size (only the size
sets the speed). Run in this process with one thread, on the same images, decode included.
Peak RSS: the maximum resident set of one `ed infer` process (heat maps none) at each --rss-counts.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SIZE = 256


def setup(work: Path, epochs: int, size: int = 256, d_model: tuple[int, ...] = ()) -> Path:
    """A checkpoint at `size` px with the reference's widths (or d_model), trained on a made-up dataset (cached)."""
    tag = f"{size}-{'x'.join(map(str, d_model)) or 'reference'}"
    ck = work / f"run-{tag}" / "checkpoints" / "brick.pt"
    if ck.exists():
        return ck
    from edcli.commands.features import run as run_features
    from edcli.commands.train import run as run_train
    from edcli.config import BackboneConfig, DataConfig, ModelConfig, TrainConfig
    from edcli.data.synth import SynthSpec, make_dataset

    if not (work / "data").exists():
        spec = SynthSpec(n_train=8, n_test_good=4, n_per_defect=2, size=SIZE, seed=1)
        make_dataset(work / "data", ("brick",), spec)
    data = DataConfig(dataset="mvtec", data_path=str(work / "data"), categories=("brick",), image_size=size)
    bb = BackboneConfig(name="tf_efficientnet_lite0")
    run_features(data=data, bb_cfg=bb, store=str(work / "store"), device="cpu", batch_size=8)
    train = TrainConfig(epochs=epochs, batch_size=4, device="cpu", seed=7)
    run_train(data=data, bb_cfg=bb, model_cfg=ModelConfig(d_model=d_model), train_cfg=train,
              store=str(work / "store"), out=str(ck.parent.parent))  # fmt: skip
    return ck


def distinct_images(folder: Path, k: int) -> list[Path]:
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    photo = np.repeat(data.brick()[..., None], 3, axis=2)
    rng, side, out = np.random.default_rng(0), int(SIZE * 1.5), []
    for i in range(k):
        y, x = rng.integers(0, photo.shape[0] - side, size=2)
        p = folder / f"d{i:03d}.png"
        if not p.exists():
            Image.fromarray(photo[y : y + side, x : x + side]).save(p)
        out.append(p)
    return out


def inputs(work: Path, n: int, distinct: list[Path]) -> Path:
    """A folder of n image names (hard links of the distinct crops)."""
    folder = work / f"inputs-{n}"
    if folder.exists() and len(os.listdir(folder)) == n:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(n):
        os.link(distinct[i % len(distinct)], folder / f"{i:06d}.png")
    return folder


def ed_infer(ck: Path, folder: Path, out: Path, *more: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE")
    cmd = [sys.executable, "-m", "edcli", "infer", str(ck), str(folder), "--out", str(out), "--batch-size", "32",
           "--device", "cpu", "--num-workers", "0", "--quiet", "--overwrite", "--csv", *more]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        err = p.communicate()[1]
        if p.returncode not in (0, 3):
            raise SystemExit(f"ed infer failed ({p.returncode}): {err.decode()[-2000:]}")


def throughput(ck: Path, folder: Path, work: Path, n: int, heatmaps: str, procs: int) -> dict:
    out = work / f"out-{heatmaps}-{procs}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    ps = [ed_infer(ck, folder, out, "--save-heatmaps", heatmaps, *(["--shard", f"{k}/{procs}"] if procs > 1 else []))
          for k in range(procs)]  # fmt: skip
    _wait(ps)
    wall = time.perf_counter() - t0
    info = json.loads((out / "infer.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n, (len(rows), n)
    loop = float(info["seconds"])  # the slower part's scoring loop (merged: the max over the parts)
    panels = len(list((out / "heatmaps").glob("*.png"))) if (out / "heatmaps").exists() else 0
    return {"heatmaps": heatmaps, "processes": procs, "images_per_s": round(n / loop, 2), "loop_s": round(loop, 2),
            "wall_s": round(wall, 2), "panels": panels}  # fmt: skip


# PatchCore's default coreset keeps 10% of the train patches (anomalib: coreset_sampling_ratio 0.1); MVTec AD's
# median category has 240 train images (zipper; 60-391), so its bank holds 0.1 * 240 * 1024 = 24,576 patches at 256 px
MVTEC_CORESET_BANK = 24576


def peer(ck: Path, folder: Path, train: list[str], n: int, banks: list[int]) -> list[dict]:
    """PatchCore-style nearest-neighbour scoring on edcli's backbone: images/s at batch 32, one thread, for each
    bank size in `banks` (0: every patch of `train`). Patch features as PatchCore's: each level 3x3-averaged, the
    coarse one upsampled to the fine grid, concatenated. A larger bank is the train bank repeated to that size: the
    scoring time depends only on the bank's size, and a coreset that large would take hours to select here."""
    import torch
    import torch.nn.functional as F

    from edcli.backbone import build_backbone
    from edcli.checkpoint import load_checkpoint
    from edcli.config import BackboneConfig
    from edcli.data.images import FileDataset, collate_files

    torch.set_num_threads(1)
    ident = load_checkpoint(ck).backbone
    extractor, _ = build_backbone(BackboneConfig(name=ident["backbone"], levels=tuple(ident["levels"])))
    extractor.eval()

    def patches(images: torch.Tensor) -> torch.Tensor:  # (B, HW, C): both levels on the fine grid
        feats = [F.avg_pool2d(f, 3, 1, 1) for f in extractor(images)]
        h, w = feats[0].shape[-2:]
        cat = torch.cat([feats[0]] + [F.interpolate(f, size=(h, w), mode="bilinear") for f in feats[1:]], 1)
        return cat.flatten(2).transpose(1, 2)

    def nearest(x: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor) -> torch.Tensor:
        # per image, ‖x‖² − 2 x·b + ‖b‖² as one matrix product: faster here than torch.cdist (measured 15%)
        return (torch.addmm(bank_sq, x, bank.t(), alpha=-2).min(1).values + (x * x).sum(1)).clamp_min(0).sqrt()

    out = []
    with torch.inference_mode():
        full = patches(torch.stack([FileDataset(train, SIZE, "squash")[i]["image"] for i in range(len(train))]))
        full = full.reshape(-1, full.shape[-1])
        ds = FileDataset(sorted(str(p) for p in folder.iterdir())[:n], SIZE, "squash")
        for size in banks:
            bank = full if not size else full.repeat(-(-size // len(full)), 1)[:size].contiguous()
            bank_sq = (bank * bank).sum(1)
            loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=0, collate_fn=collate_files)
            t0, scores = time.perf_counter(), []
            for batch in loader:
                scores += [float(nearest(x, bank, bank_sq).max()) for x in patches(batch["image"])]
            seconds = time.perf_counter() - t0
            out.append({"images_per_s": round(n / seconds, 2), "bank": list(bank.shape), "images": len(scores),
                        "bank_from": "train patches" if not size else "train patches repeated"})  # fmt: skip
            print(json.dumps({"peer": out[-1]}), file=sys.stderr)
    return out


def peak_rss(ck: Path, folder: Path, work: Path) -> int:
    """The peak resident set (MiB) of one `ed infer` process on `folder` (heat maps none)."""
    out = work / "out-rss"
    shutil.rmtree(out, ignore_errors=True)
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r not in (0, 3))"
    )
    cmd = [sys.executable, "-m", "edcli", "infer", str(ck), str(folder), "--out", str(out), "--batch-size", "32",
           "--device", "cpu", "--num-workers", "0", "--quiet", "--csv", "--save-heatmaps", "none"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", probe, *cmd], env=env, capture_output=True, text=True, check=True)
    return int(res.stdout.strip().splitlines()[-1]) // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="images for the throughput runs")
    ap.add_argument("--rss-counts", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--distinct", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--heatmaps", nargs="*", default=["none", "anomalous", "all"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/ed-infer-scale"))
    ap.add_argument("--d-model", default="", help="widths per level, e.g. 64,64 (default: the reference's)")
    ap.add_argument("--peer-banks", type=int, nargs="*", default=[0, MVTEC_CORESET_BANK],
                    help="the peer's bank sizes (0: every patch of the train images)")  # fmt: skip
    ap.add_argument("--rss-size", type=int, default=SIZE, help="image size of the model the peak RSS runs use")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    d_model = tuple(int(t) for t in args.d_model.split(",") if t)
    ck = setup(args.work, args.epochs, SIZE, d_model)
    distinct = distinct_images(args.work / "distinct", args.distinct)
    folder = inputs(args.work, args.n, distinct)
    res: dict = {"size": SIZE, "d_model": list(d_model) or "reference", "batch": 32, "n": args.n,
                 "cpus": os.cpu_count(), "runs": []}  # fmt: skip
    for hm in args.heatmaps:
        for procs in (1, 2) if hm == "none" else (1,):
            res["runs"].append(throughput(ck, folder, args.work, args.n, hm, procs))
            print(json.dumps(res["runs"][-1]), file=sys.stderr)
    one = next(r for r in res["runs"] if r["heatmaps"] == "none" and r["processes"] == 1)
    two = next((r for r in res["runs"] if r["heatmaps"] == "none" and r["processes"] == 2), None)
    if two:
        res["speedup_2_processes"] = round(two["images_per_s"] / one["images_per_s"], 2)
    train = sorted(str(p) for p in (args.work / "data" / "brick" / "train" / "good").glob("*.png"))
    res["peer_patchcore"] = peer(ck, folder, train, args.n, args.peer_banks)
    res["ed_over_peer"] = {str(p["bank"][0]): round(one["images_per_s"] / p["images_per_s"], 2)
                           for p in res["peer_patchcore"]}  # fmt: skip
    res["peak_rss_mib"], res["rss_size"] = {}, args.rss_size
    rss_ck = ck if args.rss_size == SIZE else setup(args.work, args.epochs, args.rss_size, d_model)
    for count in args.rss_counts:
        res["peak_rss_mib"][count] = peak_rss(rss_ck, inputs(args.work, count, distinct), args.work)
        print(f"rss {count}: {res['peak_rss_mib'][count]} MiB", file=sys.stderr)
    res["loadavg"] = os.getloadavg()
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
