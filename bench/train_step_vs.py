"""Training-step time of this checkout against another edcli checkout, both in ONE process, steps interleaved.

    python bench/train_step_vs.py LEVEL REPS [BASE_SRC]     (BASE_SRC default /tmp/i13-base/src: a worktree of main)

Faithful wide_resnet50_2 / 256 px shapes (level 0: C=512, 32x32, d_model 256; level 1: C=1024, 16x16, d_model 512),
one thread. The other checkout's edcli is imported first, its modules are then put aside and this one's imported:
both sets of functions keep working side by side. Steps: the other's default (maps path, its Adam) in fp32; this
one's `ed train` step (fused path, --optimizer reference's fused Adam) in fp32 and in bf16 autocast. After one
warm-up each, the three alternate REPS times; per pair the ratio other / this is taken and its median reported,
robust to the load drift of a shared machine. Prints one JSON line.
"""

import importlib
import json
import os
import statistics
import sys
import time

import torch

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(src):
    for k in [k for k in sys.modules if k == "edcli" or k.startswith("edcli.")]:
        del sys.modules[k]
    sys.path.insert(0, src)
    mods = {n: importlib.import_module("edcli." + n) for n in ("method.model", "method.loss", "training")}
    sys.path.remove(src)
    return mods


lvl, reps = int(sys.argv[1]), int(sys.argv[2])
base_src = sys.argv[3] if len(sys.argv) > 3 else "/tmp/i13-base/src"
C, grid, d = [(512, (32, 32), 256), (1024, (16, 16), 512)][lvl]
L = grid[0] * grid[1]
base, new = load(base_src), load(os.path.join(ROOT, "src"))
torch.manual_seed(0)
ref, x = torch.randn(C, L), torch.randn(1, L, C)
steps = {}
for name, mods, prec in (("main fp32", base, "fp32"), ("this fp32", new, "fp32"), ("this bf16", new, "bf16")):
    torch.manual_seed(1)
    m = mods["method.model"].LevelModel(C, grid, ref, d)
    obj = mods["method.loss"].ed_objective
    if name.startswith("main"):
        opt = torch.optim.Adam(m.parameters(), 1e-4)
    else:
        opt = mods["training"].make_optimizers([m], "reference", 1e-4)[0]

    def step(m=m, obj=obj, opt=opt, prec=prec, fused=not name.startswith("main")):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
            out = m(x, branches="train") if fused else m(x)
            t = obj(out, x, m.dx, m.dy)
        t.total.backward()
        opt.step()

    step()
    steps[name] = (step, [])
for _ in range(reps):
    for _name, (f, ts) in steps.items():
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
b = steps["main fp32"][1]
out = {"level": lvl, "reps": reps}
for name, (_, ts) in steps.items():
    out[name] = {
        "median_s": round(statistics.median(ts), 3),
        "times": [round(t, 3) for t in ts],
        "speedup_vs_main_median_of_pairs": round(statistics.median(bb / t for bb, t in zip(b, ts)), 2),
    }
print(json.dumps(out))
