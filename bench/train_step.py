"""Seconds per training image and peak memory of one ED level's training step: edcli vs the naive oracle.

    python bench/train_step.py [--levels 0 1] [--reps 3] [--batch 1] [--device cpu|cuda] [--precision fp32|bf16]

Faithful wide_resnet50_2 / 256 px shapes with random features and reference (timing does not depend on them):
level 0: C=512 on a 32x32 grid, d_model 256; level 1: C=1024 on 16x16, d_model 512; 8 heads, 3 layers.
A step is: zero_grad, forward, loss, backward, Adam step. edcli: one backward of ed_objective(...).total;
oracle (tests/oracle.py): loss1.backward(retain_graph=True); loss2.backward(). One warm-up step, then the
median of --reps timed steps, divided by the batch size.

Memory: every (implementation, level) runs in a fresh subprocess. On CPU the peak is the growth of the process's
maximum resident set size (resource.getrusage ru_maxrss) from just before the first step to the end, i.e. what the
training steps add on top of the model, optimizer and inputs. On CUDA it is torch.cuda.max_memory_allocated()
minus the memory allocated before the first step.
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {0: (512, (32, 32)), 1: (1024, (16, 16))}  # timm wide_resnet50_2 levels 2 and 3 at 256 px


def _child(args) -> dict:
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from edcli.config import d_model_for
    from edcli.loss import ed_objective
    from edcli.model import LevelModel
    from oracle import oracle_from_level, oracle_losses

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    C, grid = SHAPES[args.level]
    L = grid[0] * grid[1]
    model = LevelModel(C, grid, torch.randn(C, L), d_model_for(C))
    if args.child == "oracle":
        model = oracle_from_level(model)
    model = model.to(dev)
    x = torch.randn(args.batch, L, C, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def step():
        opt.zero_grad(set_to_none=True)
        if args.child == "edcli":
            with amp:
                out = model(x)
                terms = ed_objective(out, x, model.dx, model.dy)
            terms.total.backward()
        else:
            with amp:
                loss1, loss2, _ = oracle_losses(model, x)
            loss1.backward(retain_graph=True)
            loss2.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    step()
    sync()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {"s_per_img": statistics.median(times) / args.batch, "step_times_s": [round(t, 4) for t in times],
            "peak_mem_mib": round(peak, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[0, 1], choices=sorted(SHAPES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--child", choices=["edcli", "oracle"], help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    if args.precision == "bf16" and not args.device.startswith("cuda"):
        ap.error("--precision bf16 is for --device cuda")
    if args.child:
        print(json.dumps(_child(args)))
        return

    import torch

    result = {"device": args.device, "precision": args.precision, "batch": args.batch, "reps": args.reps,
              "threads": args.threads, "torch": torch.__version__,
              "memory": "CPU: ru_maxrss growth over the steps in a fresh process; CUDA: max_memory_allocated growth",
              "levels": {}}
    for level in args.levels:
        row = {"C": SHAPES[level][0], "grid": list(SHAPES[level][1])}
        for impl in ("edcli", "oracle"):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--level", str(level),
                   "--reps", str(args.reps), "--batch", str(args.batch), "--device", args.device,
                   "--precision", args.precision, "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                sys.exit(f"{impl} level {level} failed:\n{proc.stderr}")
            row[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
        row["speedup"] = round(row["oracle"]["s_per_img"] / row["edcli"]["s_per_img"], 2)
        result["levels"][str(level)] = row
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
