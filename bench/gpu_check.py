"""One prepared check of edcli on one GPU, in at most ~6 minutes: one JSON (OUT/gpu_check.json) and a few logs.

    python bench/gpu_check.py OUT [--dry-run] [--device cuda] [--budget 350]

Sections, in this order, each within its own time budget (the whole within --budget seconds; the JSON is rewritten
after every section, so a run cut short still leaves what it measured):
  env         torch, CUDA, the GPU's name, nvidia-smi -L, onnxruntime's providers
  gpu_tests   the GPU-marked tests (ED_TEST_DEVICE=cuda pytest -m gpu tests)
  train_step  one ED level's training step (zero_grad, forward, loss, backward, `ed train`'s Adam step) at the
              reference shapes (wide_resnet50_2 at 256 px: level 0 C=512 on 32x32, d 256; level 1 C=1024 on 16x16,
              d 512; 8 heads, 3 layers): edcli as shipped, edcli's other attention path (fused or maps, whichever is
              not the default at that size) and the naive oracle of tests/oracle.py; fp32 (IEEE), tf32, bf16
              autocast; batch 1 and 8; ms per image (median of the steps after 2 warm-ups) and peak memory (MiB
              the steps add, torch.cuda.max_memory_allocated)
  infer       end to end from PNG files (decode + resize in DataLoader workers, pinned memory, lite0 backbone, both
              level models, scoring, smoothing, image score): ms per image at batch 1, images/s at batch 32, in
              tf32 / fp32 / bf16, and each one's largest relative score difference to the CPU's fp32 scores;
              ONNX Runtime only where its CUDA provider exists
  epoch       `ed train`'s epoch loop (edcli.training.loop.train_epoch, batch 1, tf32) over one category of 240
              images' cached features (random values of the reference shapes) for as many epochs as 90 s allow:
              s/epoch, and the GPU busy % sampled by nvidia-smi in the background; then the trained model's scores
              in bf16 against fp32
  demo        the wall time of `ed demo --device cuda`
  graphs      CUDA graphs: the whole training step (fused Adam, capturable) captured and replayed, per level, b1
  compile     torch.compile of the training step, level 1, b1, tf32: compile seconds and ms per step (a subprocess)

--dry-run: the same on the CPU at toy sizes (under ~2 minutes), to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "bench")]

FULL = {
    "levels": {0: (512, (32, 32)), 1: (1024, (16, 16))},
    "batches": (1, 8),
    "reps": 10,
    "infer_size": 256,
    "infer_b1": 64,
    "infer_b32": 256,
    "epoch_images": 240,
    "epoch_seconds": 90.0,
    "budgets": {"gpu_tests": 45, "train_step": 75, "infer": 50, "epoch": 105, "demo": 90, "graphs": 20, "compile": 60},
    "tests": ["tests"],
    "d_model": (),  # the reference widths, 256 / 512
    "compile_backend": "inductor",
}
DRY = {
    "levels": {0: (64, (8, 8)), 1: (128, (4, 4))},
    "batches": (1, 2),
    "reps": 1,
    "infer_size": 64,
    "infer_b1": 4,
    "infer_b32": 8,
    "epoch_images": 4,
    "epoch_seconds": 2.0,
    "budgets": {"gpu_tests": 25, "train_step": 15, "infer": 20, "epoch": 12, "demo": 45, "graphs": 10, "compile": 20},
    "tests": ["tests/test_dispatch.py"],
    "d_model": (32, 64),  # its GPU test is skipped on the CPU: the harness is what is checked
    "compile_backend": "aot_eager",  # inductor's C++ build would not fit the dry run's time
}
PRECISIONS = ("fp32", "tf32", "bf16")


class Check:
    def __init__(self, out: Path, args):
        self.out, self.args = out, args
        self.cfg = DRY if args.dry_run else FULL
        self.start = time.monotonic()
        self.result: dict = {"dry_run": args.dry_run, "device": args.device, "budget_s": args.budget, "sections": {}}

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def save(self) -> None:
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.result, indent=2, default=str))
        tmp.replace(self.out / "gpu_check.json")

    def section(self, name: str, fn) -> None:
        budget = min(self.cfg["budgets"].get(name, self.left()), self.left())
        t0 = time.monotonic()
        print(f"== {name} (budget {budget:.0f} s, {self.left():.0f} s left)", file=sys.stderr, flush=True)
        if budget < 5:
            self.result["sections"][name] = {"skipped": "no time left in the budget"}
        else:
            try:
                self.result["sections"][name] = fn(t0 + budget)
            except Exception as exc:  # one failing section must not cost the others their numbers
                self.result["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        self.result["sections"][name]["seconds"] = round(time.monotonic() - t0, 1)
        self.save()


def _precision(torch, prec: str) -> bool:
    """fp32: IEEE products; tf32: TF32 products (CUDA's flag; the CPU stays IEEE); bf16: autocast, the fp32
    remainder IEEE. Returns whether to autocast."""
    from edcli.engine import cuda_tf32

    cuda_tf32(prec == "tf32")
    return prec == "bf16"


def _sync(torch, dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def env_section(check: Check, deadline: float) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["capability"] = list(torch.cuda.get_device_capability(0))
        info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    if shutil.which("nvidia-smi"):
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip()
    try:
        import onnxruntime

        info["onnxruntime"] = {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}
    except ImportError:
        info["onnxruntime"] = None
    return info


def tests_section(check: Check, deadline: float) -> dict:
    env = dict(os.environ, ED_TEST_DEVICE=check.args.device, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *check.cfg["tests"]]
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1, deadline - time.monotonic())
        )
    except subprocess.TimeoutExpired:
        return {"timed_out": True}
    (check.out / "gpu_tests.log").write_text(proc.stdout + proc.stderr)
    return {"rc": proc.returncode, "summary": (proc.stdout.strip().splitlines() or [""])[-1]}


def _level_step(torch, dev, level: int, batch: int, impl: str, bf16: bool, shapes: dict):
    """A training-step closure of one level at the given shapes; impl: edcli, edcli_other or oracle."""
    from oracle import oracle_from_level, oracle_losses

    import edcli.method.model as model_mod
    from edcli.config import d_model_for
    from edcli.method.loss import ed_objective
    from edcli.training.loop import make_optimizers

    torch.manual_seed(0)
    C, grid = shapes[level]
    L = grid[0] * grid[1]
    base = LevelModelFor(torch, C, grid, d_model_for(C))
    x = torch.randn(batch, L, C, device=dev)
    fused_default = L * L >= model_mod.FUSED_MIN_ELEMENTS
    if impl == "oracle":
        model = oracle_from_level(base).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    else:
        model = base.to(dev)
        (opt,) = make_optimizers([model], "reference", 1e-4)
    # the other path: maps where the default is fused, fused (FUSED_MIN_ELEMENTS forced to 0) where it is maps
    branches = "all" if impl == "edcli_other" and fused_default else "train"
    force_fused = impl == "edcli_other" and not fused_default

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            if impl == "oracle":
                loss1, loss2, _ = oracle_losses(model, x)
            else:
                saved = model_mod.FUSED_MIN_ELEMENTS
                model_mod.FUSED_MIN_ELEMENTS = 0 if force_fused else saved
                try:
                    out = model(x, branches=branches)
                finally:
                    model_mod.FUSED_MIN_ELEMENTS = saved
                total = ed_objective(out, x, model.dx, model.dy).total
        if impl == "oracle":
            loss1.backward(retain_graph=True)
            loss2.backward()
        else:
            total.backward()
        opt.step()

    path = "oracle" if impl == "oracle" else ("fused" if (fused_default != (impl == "edcli_other")) else "maps")
    return step, path


def LevelModelFor(torch, C, grid, d):  # noqa: N802 (a constructor)
    from edcli.method.model import LevelModel

    return LevelModel(C, grid, torch.randn(C, grid[0] * grid[1]), d)


def train_step_section(check: Check, deadline: float) -> dict:
    import torch

    dev = torch.device(check.args.device)
    cfg = check.cfg
    rows, skipped = [], 0
    # b1 and the fp32/tf32 rows first: what the acceptance asks for, in case the budget runs out
    order = [(b, p, lv) for b in cfg["batches"] for p in PRECISIONS for lv in cfg["levels"]]
    order.sort(key=lambda t: (t[0] != 1, t[1] == "bf16"))
    for batch, prec, level in order:
        for impl in ("edcli", "oracle", "edcli_other"):
            if time.monotonic() > deadline:
                skipped += 1
                continue
            if prec == "bf16" and dev.type == "cpu":
                from edcli.engine import cpu_has_bf16

                if not cpu_has_bf16():
                    continue
            bf16 = _precision(torch, prec)
            step, path = _level_step(torch, dev, level, batch, impl, bf16, cfg["levels"])
            for _ in range(2):
                step()
            _sync(torch, dev)
            if dev.type == "cuda":
                base = torch.cuda.memory_allocated(dev)
                torch.cuda.reset_peak_memory_stats(dev)
            times = []
            for _ in range(cfg["reps"]):
                t0 = time.perf_counter()
                step()
                _sync(torch, dev)
                times.append(time.perf_counter() - t0)
            peak = round((torch.cuda.max_memory_allocated(dev) - base) / 2**20, 1) if dev.type == "cuda" else None
            rows.append(
                {
                    "level": level,
                    "batch": batch,
                    "precision": prec,
                    "impl": impl,
                    "path": path,
                    "ms_per_image": round(statistics.median(times) / batch * 1000, 3),
                    "peak_mib": peak,
                }
            )
            del step
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    _precision(torch, "fp32")
    speedups = {}
    for r in rows:
        if r["impl"] == "edcli":
            o = [
                x for x in rows if x["impl"] == "oracle" and all(x[k] == r[k] for k in ("level", "batch", "precision"))
            ]
            if o:
                speedups[f"level{r['level']} b{r['batch']} {r['precision']}"] = round(
                    o[0]["ms_per_image"] / r["ms_per_image"], 2
                )
    return {"rows": rows, "speedup_vs_oracle": speedups, "skipped_for_time": skipped}


def infer_section(check: Check, deadline: float) -> dict:
    import numpy as np
    import torch

    from edcli.backbone import build_backbone
    from edcli.config import BackboneConfig, ModelConfig
    from edcli.data.images import FileDataset
    from edcli.engine import data_loader, loader_workers
    from edcli.method.model import build_ed_model
    from edcli.method.scorer import MapScorer
    from edcli.scorer import Scorer
    from infer import _images

    cfg, dev = check.cfg, torch.device(check.args.device)
    size = cfg["infer_size"]
    extractor, _ = build_backbone(BackboneConfig(name="tf_efficientnet_lite0"))
    grids = extractor.grids(size)
    torch.manual_seed(0)
    refs = [torch.randn(c, h * w) for c, (h, w) in zip(extractor.channels, grids)]
    model = build_ed_model(extractor.channels, grids, refs, ModelConfig(d_model=cfg["d_model"])).eval()
    tmp = Path(tempfile.mkdtemp(prefix="ed-gpu-check-"))
    paths = _images(tmp, max(cfg["infer_b1"], cfg["infer_b32"]), size)
    cpu_scorer = Scorer(MapScorer(model.levels, size, 4.0, "max"), torch.device("cpu"), "fp32", extractor=extractor)
    n_cmp = min(8, len(paths))
    ds = FileDataset(paths[:n_cmp], size, "squash")
    ref_scores = cpu_scorer.images(torch.stack([ds[i]["image"] for i in range(n_cmp)])).scores
    extractor, model = extractor.to(dev), model.to(dev)
    scorer = Scorer(MapScorer(model.levels, size, 4.0, "max"), dev, "fp32", extractor=extractor)
    out = {"size": size, "loader_workers": loader_workers(dev), "pinned": dev.type == "cuda", "precisions": {}}

    def run(batch: int, n: int, prec: str) -> tuple[float, float, np.ndarray]:
        """(seconds from the first batch in hand to the last score, seconds to the first batch, scores)."""
        scorer.precision = "bf16" if prec == "bf16" else "fp32"
        loader = data_loader(FileDataset(paths[:n], size, "squash"), batch, None, device=dev)
        t0 = time.perf_counter()
        it = iter(loader)
        first = next(it)
        t1 = time.perf_counter()
        scores = [scorer.images(first["image"]).scores]
        scores += [scorer.images(b["image"]).scores for b in it]
        _sync(torch, dev)
        return time.perf_counter() - t1, t1 - t0, np.concatenate(scores)

    for prec in ("tf32", "fp32", "bf16"):
        if time.monotonic() > deadline or (prec == "bf16" and dev.type == "cpu"):
            continue
        _precision(torch, prec)
        run(1, 2, prec)  # warm-up
        b1, start1, s = run(1, cfg["infer_b1"], prec)
        b32, start32, _ = run(32, cfg["infer_b32"], prec)
        k = min(len(s), n_cmp)
        # the first batch is not in the steady time: divide by the images after it
        out["precisions"][prec] = {
            "ms_per_image_batch1": round(b1 / max(1, cfg["infer_b1"] - 1) * 1000, 2),
            "images_per_s_batch32": round((cfg["infer_b32"] - 32) / b32, 1) if cfg["infer_b32"] > 32 else None,
            "images_per_s_batch32_with_first": round(cfg["infer_b32"] / (b32 + start32), 1),
            "loader_start_s": round(start1, 3),
            "max_rel_score_diff_vs_cpu_fp32": float(f"{np.abs(s[:k] / ref_scores[:k] - 1).max():.2e}"),
        }
    _precision(torch, "fp32")
    out["onnxruntime"] = _ort(check, dev, extractor, model, size, paths, deadline)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _ort(check, dev, extractor, model, size, paths, deadline):
    from infer import _ort_skip_reason

    skip = _ort_skip_reason(check.args.device)
    if skip is not None or dev.type == "cpu":
        return f"skipped: {skip or 'measured by bench/infer.py on the CPU'}"
    import torch

    from edcli.data.images import FileDataset
    from edcli.method.scorer import ImageScorer, MapScorer
    from edcli.onnxio import OnnxScorer, export_graph

    onnx_path = Path(tempfile.mkdtemp(prefix="ed-gpu-check-onnx-")) / "model.onnx"
    export_graph(
        ImageScorer(extractor.cpu(), MapScorer(model.cpu().levels, size, 4.0, "max", portable=True)),
        onnx_path,
        size,
        {"format": "edcli-onnx", "image_size": size, "resize_mode": "squash"},
    )
    extractor.to(dev), model.to(dev)
    ort = OnnxScorer(onnx_path, check.args.device, torch.get_num_threads())
    res = {}
    for batch, n in ((1, 16), (32, 64)):
        loader = torch.utils.data.DataLoader(FileDataset(paths[:n], size, "squash"), batch_size=batch)
        batches = [b["image"].numpy() for b in loader]
        ort.images(batches[0])
        t0 = time.perf_counter()
        for b in batches:
            ort.images(b)
        res[f"batch{batch}_ms_per_image"] = round((time.perf_counter() - t0) / n * 1000, 2)
    return res


class _GpuBusy:
    """nvidia-smi's utilization.gpu sampled every 100 ms in the background; mean % (None without nvidia-smi)."""

    def __init__(self, log: Path):
        self.log, self.proc = log, None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
            self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    def mean(self) -> float | None:
        vals = [float(v) for v in self.log.read_text().split() if v.replace(".", "").isdigit()] if self.proc else []
        return round(statistics.mean(vals), 1) if vals else None


def epoch_section(check: Check, deadline: float) -> dict:
    import numpy as np
    import torch

    from edcli.config import ModelConfig
    from edcli.method.model import build_ed_model
    from edcli.scorer import Scorer
    from edcli.training.loop import make_optimizers, train_epoch

    cfg, dev = check.cfg, torch.device(check.args.device)
    _precision(torch, "tf32")
    torch.manual_seed(0)
    shapes = list(cfg["levels"].values())
    n = cfg["epoch_images"]
    chans, grids = [c for c, _ in shapes], [g for _, g in shapes]
    refs = [torch.randn(c, g[0] * g[1]) for c, g in shapes]
    model = build_ed_model(chans, grids, refs, ModelConfig(d_model=cfg["d_model"])).to(dev)
    # as `ed train` holds them: per level (N, L, C) float16 on the host
    feats = [torch.randn(n, g[0] * g[1], c).half() for c, g in shapes]
    levels = list(model.levels)
    opts = make_optimizers(levels, "reference", 1e-4)
    epochs = []
    start = time.monotonic()
    with _GpuBusy(check.out / "gpu_busy.log") as busy:
        # epochs until epoch_seconds are spent (the last one may end after), keeping 10 s for the scores
        while time.monotonic() - start < cfg["epoch_seconds"] and time.monotonic() < deadline - 10:
            t0 = time.perf_counter()
            train_epoch(levels, opts, feats, 1, torch.Generator().manual_seed(len(epochs)), dev, "fp32", 0.5, 0.5)
            _sync(torch, dev)
            epochs.append(round(time.perf_counter() - t0, 3))
    out = {
        "images": n,
        "shapes": [[c, list(g)] for c, g in shapes],
        "batch": 1,
        "precision": "tf32",
        "epoch_s": epochs,
        "median_s_per_epoch": statistics.median(epochs[1:] or epochs) if epochs else None,
        "gpu_busy_pct": busy.mean(),
    }
    # the trained model's scores in bf16 against fp32 (the same 32 items of the cached features)
    model.eval()
    test = [f[:32].float().transpose(1, 2).reshape(-1, c, *g).numpy() for f, (c, g) in zip(feats, shapes)]
    got = {}
    for prec in ("fp32", "bf16") if dev.type == "cuda" else ("fp32",):
        _precision(torch, "fp32")
        got[prec] = Scorer.for_model(model, 256, 4.0, "max", dev, prec).features(test).scores
    if "bf16" in got:
        out["bf16_vs_fp32_max_rel_score_diff"] = float(f"{np.abs(got['bf16'] / got['fp32'] - 1).max():.2e}")
    _precision(torch, "fp32")
    return out


def demo_section(check: Check, deadline: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="ed-gpu-demo-"))
    cmd = [sys.executable, "-m", "edcli", "demo", "--device", check.args.device, "--out", str(folder), "-q"]
    if check.args.dry_run:
        cmd.append("--quick")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"), NO_COLOR="1")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        shutil.rmtree(folder, ignore_errors=True)
        return {"timed_out_after_s": round(time.perf_counter() - t0, 1), "command": " ".join(cmd[1:])}
    (check.out / "demo.log").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    shutil.rmtree(folder, ignore_errors=True)
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1), "quick": check.args.dry_run}


def graphs_section(check: Check, deadline: float) -> dict:
    """The whole training step (forward, loss, backward, fused capturable Adam) as one CUDA graph, replayed."""
    import torch

    dev = torch.device(check.args.device)
    if dev.type != "cuda":
        return {"skipped": "CUDA graphs need a CUDA device"}
    import edcli.method.loss as loss_mod
    import edcli.method.model as model_mod
    from edcli.config import d_model_for
    from edcli.method.loss import ed_objective

    # grid_axes checks its matrices on the host (int(), torch.equal): a sync, which a capture forbids. Its result
    # is a constant of the level, so the capture uses it computed once (edcli itself still computes it each step).
    real, memo = loss_mod.grid_axes, {}

    def cached_axes(dx, dy):
        key = (dx.data_ptr(), dy.data_ptr())
        if key not in memo:
            memo[key] = real(dx, dy)
        return memo[key]

    _precision(torch, "tf32")
    out = {"note": "grid_axes memoised for the capture (it syncs with the host)"}
    for level, (C, grid) in check.cfg["levels"].items():
        if time.monotonic() > deadline:
            break
        torch.manual_seed(0)
        model = LevelModelFor(torch, C, grid, d_model_for(C)).to(dev)
        x = torch.randn(1, grid[0] * grid[1], C, device=dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True, capturable=True)

        def step(model=model, x=x, opt=opt):
            total = ed_objective(model(x, branches="train"), x, model.dx, model.dy).total
            total.backward()
            opt.step()

        try:
            loss_mod.grid_axes = model_mod.grid_axes = cached_axes
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    opt.zero_grad(set_to_none=True)
                    step()
            torch.cuda.current_stream().wait_stream(side)
            t0 = time.perf_counter()
            graph = torch.cuda.CUDAGraph()
            opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                step()
            _sync(torch, dev)
            capture_s = time.perf_counter() - t0
            times = []
            for _ in range(check.cfg["reps"] * 2):
                t0 = time.perf_counter()
                graph.replay()
                _sync(torch, dev)
                times.append(time.perf_counter() - t0)
            out[f"level{level}"] = {
                "capture_s": round(capture_s, 2),
                "ms_per_step": round(statistics.median(times) * 1000, 3),
            }
        except Exception as exc:
            out[f"level{level}"] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        finally:
            loss_mod.grid_axes = model_mod.grid_axes = real
    _precision(torch, "fp32")
    return out


_COMPILE_CHILD = """
import json, statistics, sys, time
import torch
sys.path[:0] = [{src!r}]
from edcli.config import d_model_for
from edcli.method.loss import ed_objective
from edcli.method.model import LevelModel
from edcli.training.loop import make_optimizers
dev = torch.device({device!r})
from edcli.engine import cuda_tf32
cuda_tf32(True)
C, grid = {shape!r}
L = grid[0] * grid[1]
torch.manual_seed(0)
model = LevelModel(C, grid, torch.randn(C, L), d_model_for(C)).to(dev)
x = torch.randn(1, L, C, device=dev)
(opt,) = make_optimizers([model], "reference", 1e-4)
def fwd_bwd(x):
    total = ed_objective(model(x, branches="train"), x, model.dx, model.dy).total
    total.backward()
    return total
compiled = torch.compile(fwd_bwd, backend={backend!r})
def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()
t0 = time.perf_counter(); opt.zero_grad(); compiled(x); opt.step(); sync(); first = time.perf_counter() - t0
times = []
for _ in range({reps}):
    t0 = time.perf_counter(); opt.zero_grad(); compiled(x); opt.step(); sync(); times.append(time.perf_counter() - t0)
print(json.dumps({{"backend": {backend!r}, "compile_s": round(first, 1),
                  "ms_per_step": round(statistics.median(times) * 1000, 3)}}))
"""


def compile_section(check: Check, deadline: float) -> dict:
    level = 1
    code = _COMPILE_CHILD.format(
        src=str(ROOT / "src"),
        device=check.args.device,
        shape=check.cfg["levels"][level],
        reps=check.cfg["reps"] * 2,
        backend=check.cfg["compile_backend"],
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=max(1, deadline - time.monotonic())
        )
    except subprocess.TimeoutExpired:
        return {"level": level, "timed_out": "compilation did not finish within the budget"}
    if proc.returncode != 0:
        return {"level": level, "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
    return {"level": level, "batch": 1, "precision": "tf32", **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="folder for gpu_check.json and the logs")
    ap.add_argument("--dry-run", action="store_true", help="on the CPU at toy sizes (checks this script)")
    ap.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections (default 345; dry 120)")
    args = ap.parse_args()
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    args.budget = args.budget or (120.0 if args.dry_run else 345.0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, args)
    import torch

    if args.dry_run:  # one thread: on a shared CPU more spin against the other processes (see gpu_check.sh)
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        sys.exit("no CUDA device here: use --dry-run on the CPU")
    for name, fn in (
        ("env", env_section),
        ("gpu_tests", tests_section),
        ("train_step", train_step_section),
        ("infer", infer_section),
        ("epoch", epoch_section),
        ("demo", demo_section),
        ("graphs", graphs_section),
        ("compile", compile_section),
    ):
        check.section(name, lambda deadline, fn=fn: fn(check, deadline))
    check.result["total_s"] = round(time.monotonic() - check.start, 1)
    check.save()
    print(json.dumps(check.result["sections"].get("train_step", {}).get("speedup_vs_oracle", {})))
    print(f"wrote {out / 'gpu_check.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
