"""Seconds per training image and peak memory of one ED level's training step: edcli vs the naive oracle.

    python bench/train_step.py [--levels 0 1] [--reps 3] [--batch 1] [--device cpu|cuda] [--precision fp32|bf16]
                               [--no-oracle] [--baseline OTHER_CHECKOUT/src --rounds 3]

Faithful wide_resnet50_2 / 256 px shapes with random features and reference (timing does not depend on them):
level 0: C=512 on a 32x32 grid, d_model 256; level 1: C=1024 on 16x16, d_model 512; 8 heads, 3 layers.
A step is: zero_grad, forward, loss, backward, Adam step. edcli: `ed train`'s default step (its Adam; one level
here, where `ed train` steps both levels' parameters at each level's step), the fused path
(branches="train": attention and loss terms chunk by chunk, no (L, L) map kept) and one backward of
ed_objective(...).total; oracle (tests/oracle.py, same weights): loss1.backward(retain_graph=True); loss2.backward().
--precision bf16 autocasts the matrix products (CUDA, or a CPU with AVX512-BF16/AMX); sigma, targets and KL in fp32.
--baseline SRC also times the edcli of another checkout (its `src` folder; e.g. a `git worktree` of main) with
its own default training forward: --rounds times, a process of this checkout then one of SRC, each the median of
--reps steps; reported: the median over rounds and the ratio baseline / this (a speed-up when > 1).

Time: one process per level holds both implementations; after one warm-up step each, their steps alternate
--reps times (so both see the same load on a shared machine); reported: the median step / batch size.
Memory: a fresh process per (implementation, level) runs two steps. On CPU the peak is the growth of the
process's maximum resident set size (resource.getrusage ru_maxrss) over the steps, i.e. what training adds on top
of the model, optimizer and inputs; on CUDA it is torch.cuda.max_memory_allocated() minus what was allocated
before the first step.
On a busy shared CPU, OMP_WAIT_POLICY=PASSIVE keeps idle OpenMP threads from spinning against each other; the
JSON records it (and MALLOC_MMAP_THRESHOLD_, which removes the page-fault cost of fresh large buffers).
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


def _setup(args, impls):
    import torch

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from oracle import oracle_from_level, oracle_losses

    from edcli.config import d_model_for
    from edcli.method import model as model_mod
    from edcli.method.loss import ed_objective
    from edcli.method.model import LevelModel

    fused = "train" in getattr(model_mod, "BRANCH_MODES", ())  # a checkout from before the fused step lacks it

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    C, grid = SHAPES[args.level]
    L = grid[0] * grid[1]
    level = LevelModel(C, grid, torch.randn(C, L), d_model_for(C))
    x = torch.randn(args.batch, L, C, device=dev)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    steps = {}
    for impl in impls:
        model = (level if impl == "edcli" else oracle_from_level(level)).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        if impl == "edcli" and fused:  # `ed train`'s optimizer (--optimizer reference: torch's fused Adam)
            from edcli.training import make_optimizers  # (engine's, imported there, in an older --baseline)

            (opt,) = make_optimizers([model], "reference", 1e-4)

        def step(model=model, opt=opt, impl=impl):
            opt.zero_grad(set_to_none=True)
            if impl == "edcli":
                with amp:
                    out = model(x, branches="train") if fused else model(x)
                    terms = ed_objective(out, x, model.dx, model.dy)
                terms.total.backward()
            else:
                with amp:
                    loss1, loss2, _ = oracle_losses(model, x)
                loss1.backward(retain_graph=True)
                loss2.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        steps[impl] = step
    return torch, dev, steps


def _time_child(args) -> dict:
    """Both implementations in one process, their steps interleaved, so both see the same machine load."""
    _, _, steps = _setup(args, ("edcli",) if args.child == "time-edcli" else ("edcli", "oracle"))
    times = {impl: [] for impl in steps}
    for step in steps.values():
        step()  # warm-up (and Adam's state)
    for _ in range(args.reps):
        for impl, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[impl].append(time.perf_counter() - t0)
    return {
        impl: {"s_per_img": statistics.median(ts) / args.batch, "step_times_s": [round(t, 4) for t in ts]}
        for impl, ts in times.items()
    }


def _mem_child(args) -> dict:
    """Peak memory that two training steps add, in a fresh process holding one implementation."""
    torch, dev, steps = _setup(args, (args.child,))
    step = steps[args.child]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    step()
    step()
    if dev.type == "cuda":
        return {"peak_mem_mib": round((torch.cuda.max_memory_allocated(dev) - base) / 2**20, 1)}
    return {"peak_mem_mib": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024, 1)}


def _run_child(args, child: str, level: int, src: str = os.path.join(ROOT, "src")) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        child,
        "--level",
        str(level),
        "--reps",
        str(args.reps),
        "--batch",
        str(args.batch),
        "--device",
        args.device,
        "--precision",
        args.precision,
        "--threads",
        str(args.threads),
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        sys.exit(f"{child} level {level} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[0, 1], choices=sorted(SHAPES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    ap.add_argument("--no-oracle", action="store_true", help="time edcli alone (the oracle's step is slow)")
    ap.add_argument("--baseline", help="the src folder of another checkout to time side by side")
    ap.add_argument("--rounds", type=int, default=3, help="alternations with --baseline")
    ap.add_argument("--child", choices=["time", "time-edcli", "edcli", "oracle"], help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    if args.child:
        print(json.dumps(_time_child(args) if args.child.startswith("time") else _mem_child(args)))
        return

    import torch

    result = {
        "device": args.device,
        "precision": args.precision,
        "batch": args.batch,
        "reps": args.reps,
        "threads": args.threads,
        "torch": torch.__version__,
        "timing": "median of --reps steps after one warm-up; edcli and oracle steps interleaved in one process",
        "memory": "growth of ru_maxrss (CPU) or max_memory_allocated (CUDA) over two steps, "
        "in a fresh process per implementation",
        # settings that change CPU timings a lot on a shared machine (spin-waiting threads, page faults)
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_")},
        "levels": {},
    }
    impls = ("edcli",) if args.no_oracle else ("edcli", "oracle")
    for level in args.levels:
        times = _run_child(args, "time-edcli" if args.no_oracle else "time", level)
        row = {"C": SHAPES[level][0], "grid": list(SHAPES[level][1])}
        for impl in impls:
            row[impl] = {**times[impl], **_run_child(args, impl, level)}
        if not args.no_oracle:
            row["speedup"] = round(row["oracle"]["s_per_img"] / row["edcli"]["s_per_img"], 2)
        if args.baseline:
            this, base = [], []
            for _ in range(args.rounds):
                this.append(_run_child(args, "time-edcli", level)["edcli"]["s_per_img"])
                base.append(_run_child(args, "time-edcli", level, args.baseline)["edcli"]["s_per_img"])
            this_m, base_m = statistics.median(this), statistics.median(base)
            row["baseline"] = {
                "src": args.baseline,
                "s_per_img": base_m,
                "rounds": [round(t, 4) for t in base],
                "peak_mem_mib": _run_child(args, "edcli", level, args.baseline)["peak_mem_mib"],
            }
            row["this"] = {"s_per_img": this_m, "rounds": [round(t, 4) for t in this]}
            row["speedup_vs_baseline"] = round(base_m / this_m, 2)
        result["levels"][str(level)] = row
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
