"""Probes of bad input and faults, as a user meets them: each runs `python -m edcli ...` in a subprocess on a tiny
dataset in a temp folder and checks the exit code, that stderr has no Traceback, that no file that existed before
changed (unless the probe is meant to change it) and that no temp file is left. Prints a markdown table.

    python bench/probes.py            # about 3-6 minutes on 2 CPU cores
    python bench/probes.py --keep     # keep the temp folder to look at

Read-only folders are a read-only tmpfs when run as root (root ignores chmod), else chmod 0555; the full disk is a
1 MiB tmpfs (root only; skipped otherwise).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ENV = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="200")
BB = ("--backbone", "tf_efficientnet_lite0", "--image-size", "64")
SMALL = ("--layers", "1", "--heads", "4", "--epochs", "1", "--d-model", "auto")  # narrow: the run fits the 4 MiB tmpfs


@dataclass
class Probe:
    name: str
    args: list[str]
    expect: int
    may_change: tuple[str, ...] = ()  # path prefixes (relative to the work folder) the probe may write
    check: Callable[[Outcome], str] | None = None  # '' when fine, else what is wrong
    run: Callable[[Probe], Outcome] | None = None  # a custom runner (signals)
    skip: str = ""


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str
    notes: list[str] = field(default_factory=list)


def ed(args: list[str], timeout: float = 600, **kw) -> Outcome:
    p = subprocess.run(
        [sys.executable, "-m", "edcli", *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout, **kw
    )
    return Outcome(p.returncode, p.stdout, p.stderr)


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                pass
    return out


def temps(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name]


def message(o: Outcome) -> str:
    lines = [ln.strip() for ln in o.stderr.splitlines() if ln.strip() and not ln.startswith(("warning", " "))]
    errs = [ln for ln in o.stderr.split("error:")[1:]]
    if errs:
        return "error: " + " ".join(errs[-1].split())[:150]
    return (lines[-1] if lines else o.stdout.strip().splitlines()[-1] if o.stdout.strip() else "")[:150]


def mount_tmpfs(folder: Path, size: str = "1m", ro: bool = False) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    ok = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
        ).returncode
        == 0
    )
    return ok


def remount_ro(folder: Path) -> bool:
    return subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True).returncode == 0


def until(pred: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ed-probes-"))
    mounts: list[Path] = []
    try:
        rows = run_probes(work, mounts)
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("| # | command | expected | exit | message | damage | verdict |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        cmd = r["cmd"].replace("|", "\\|")
        msg = r["msg"].replace("|", "\\|")
        print(f"| {i} | `{cmd}` | {r['expect']} | {r['rc']} | {msg} | {r['damage']} | {r['verdict']} |")
    ran = [r for r in rows if r["verdict"] != "skipped"]
    bad = [r for r in ran if r["verdict"] != "ok"]
    print(
        f"\n{len(ran)} probes run ({len(rows) - len(ran)} skipped): {len(ran) - len(bad)} clean, {len(bad)} not clean"
        + (" (" + ", ".join(f"#{rows.index(r) + 1}" for r in bad) + ")" if bad else "")
    )
    if work.exists():
        print(f"work folder kept: {work}")
    sys.exit(1 if bad else 0)


def run_probes(w: Path, mounts: list[Path]) -> list[dict]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import numpy as np
    from PIL import Image

    from edcli.data.synth import SynthSpec, make_dataset

    root = os.geteuid() == 0
    data, other, store, run = w / "data", w / "other", w / "store", w / "run"
    make_dataset(data, ("brick",), SynthSpec(n_train=6, n_test_good=2, n_per_defect=1, size=64, seed=1))
    make_dataset(other, ("brick",), SynthSpec(n_train=3, n_test_good=3, n_per_defect=1, size=64, seed=2))
    D = ["--data-path", str(data), "--store", str(store)]
    base = ed(["train", *D, "--out", run, *BB, *SMALL])
    if base.rc != 0:
        raise SystemExit(f"the baseline training failed:\n{base.stderr}")
    ck = run / "checkpoints" / "brick.pt"
    img = sorted((data / "brick" / "test" / "good").glob("*.png"))[0]

    # broken copies of the dataset, each made once
    def broken(name: str, fn: Callable[[Path], None]) -> Path:
        root_ = w / name
        shutil.copytree(data, root_)
        fn(root_ / "brick")
        return root_

    rng = np.random.default_rng(0)
    corrupt = broken("corrupt", lambda c: (c / "train/good/001.png").write_bytes(rng.bytes(300)))
    trunc = broken(
        "trunc", lambda c: (c / "train/good/001.png").write_bytes((c / "train/good/001.png").read_bytes()[:200])
    )

    def resize_mask(c: Path) -> None:
        m = next((c / "ground_truth").rglob("*.png"))
        Image.open(m).resize((40, 30)).save(m)

    badmask = broken("badmask", resize_mask)
    nomask = broken("nomask", lambda c: next((c / "ground_truth").rglob("*.png")).unlink())
    grey = broken("grey", lambda c: [Image.open(p).convert("L").save(p) for p in (c / "train/good").glob("*.png")])
    added = broken("added", lambda c: None)
    cks = w / "cks"
    cks.mkdir()
    (cks / "garbage.pt").write_bytes(rng.bytes(5000))
    (cks / "trunc.pt").write_bytes(ck.read_bytes()[:3000])
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {w}/pwned",))

    buf = io.BytesIO()
    torch.save({"format": "edcli-checkpoint", "x": Evil()}, buf)
    (cks / "evil.pt").write_bytes(buf.getvalue())
    (cks / "empty.pt").write_bytes(b"")
    mixed = w / "mixed"
    mixed.mkdir()
    shutil.copy(img, mixed / "a.png")
    (mixed / "b.png").write_bytes(b"not an image")
    (mixed / "c.txt").write_text("x")
    badstore = w / "badstore"
    shutil.copytree(store, badstore)
    for p in (badstore / "features").rglob("*.h5"):
        p.write_bytes(rng.bytes(2000))

    # read-only and full file systems
    ro = w / "ro"
    if root and mount_tmpfs(ro, "4m"):
        mounts.append(ro)
        shutil.copytree(run, ro / "run")
        (ro / "out").mkdir()
        ro_ok = remount_ro(ro)
    else:
        ro.mkdir(exist_ok=True)
        shutil.copytree(run, ro / "run")
        (ro / "out").mkdir()
        for p in [ro / "out", ro / "run", ro / "run" / "checkpoints", ro]:
            p.chmod(0o555)
        ro_ok = not root
    full = w / "full"
    full_ok = root and mount_tmpfs(full, "1m")
    if full_ok:
        mounts.append(full)
        (full / "filler").write_bytes(b"\0" * 880_000)
    skip_ro = "" if ro_ok else "no read-only folder here"
    skip_full = "" if full_ok else "needs root to mount a small tmpfs"

    def has(text: str, where: str = "stderr") -> Callable[[Outcome], str]:
        return lambda o: "" if text in getattr(o, where) else f"{text!r} not in {where}"

    def nothing_pwned(o: Outcome) -> str:
        return "the pickled object ran!" if (w / "pwned").exists() else ""

    def scored(n: int, root_: Path) -> Callable[[Outcome], str]:
        import json

        def check(o: Outcome) -> str:
            try:
                r = json.loads(o.stdout)["rows"][0]
            except Exception as e:  # noqa: BLE001
                return f"no JSON: {e}"
            if r["test_images"] != n or r["data_path"] != str(root_.resolve()):
                return f"scored {r['test_images']} images of {r['data_path']}, expected {n} of {root_}"
            return ""

        return check

    n_other = sum(1 for _ in (other / "brick" / "test").rglob("*.png"))

    def add_image(p: Probe) -> Outcome:
        first = ed(p.args)  # the entry as the files are now
        shutil.copy(added / "brick/train/good/000.png", added / "brick/train/good/900.png")
        o = ed(p.args)
        o.notes.append(f"first run exit {first.rc}, then one image added")
        return o

    def kill_during(what: str, sig: int, glob: str, then: list[str] | None = None) -> Callable[[Probe], Outcome]:
        def go(p: Probe) -> Outcome:
            folder = w / f"kill-{what}-{sig}"
            proc = subprocess.Popen(
                [sys.executable, "-m", "edcli", *p.args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
            )
            hit = until(lambda: any(folder.rglob(glob)), 240)
            if hit:
                proc.send_signal(sig)
            out, err = proc.communicate(timeout=300)
            o = Outcome(proc.returncode, out, err, notes=[] if hit else ["finished before the signal"])
            if sig == signal.SIGKILL:
                o.rc = 137 if proc.returncode == -9 else proc.returncode
                left = temps(folder)
                if then:
                    again = ed(then)
                    o.notes.append(f"killed with {len(left)} temp file(s) left; rerun exit {again.rc}")
                    if again.rc != 0 or "Traceback" in again.stderr:
                        o.notes.append("rerun failed: " + message(again))
                    o.stderr += again.stderr
            return o

        return go

    def concurrent(p: Probe) -> Outcome:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "edcli", *p.args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
            )
            for _ in range(2)
        ]
        outs = [pr.communicate(timeout=300) for pr in procs]
        rc = max(pr.returncode for pr in procs)
        return Outcome(rc, outs[0][0], outs[0][1] + outs[1][1])

    def modes(o: Outcome) -> str:
        bad = [
            str(p.relative_to(w))
            for p in list(run.rglob("*")) + list(store.rglob("*"))
            if p.is_file() and (p.stat().st_mode & 0o777) != (0o666 & ~0o022)
        ]
        return f"modes not 0644: {bad[:3]}" if bad else ""

    kf, ks = w / "kill-features-9", w / "kill-train-9"
    T = ["train", *D, "--out"]
    probes = [
        # ------------------------------------------------------------------ bad option values: exit 2
        Probe("lr nan", [*T, w / "r1", *BB, "--lr", "nan"], 2),
        Probe("lr negative", [*T, w / "r1", *BB, "--lr", "-1"], 2),
        Probe("train batch 0", [*T, w / "r1", *BB, "--batch-size", "0"], 2),
        Probe("features batch 0", ["features", *D, *BB, "--batch-size", "0"], 2),
        Probe("eval batch 0", ["eval", "--run", run, "--batch-size", "0"], 2),
        Probe("infer batch 0", ["infer", ck, img, "--out", w / "p1", "--batch-size", "0"], 2),
        Probe("d-model 0,0", [*T, w / "r1", *BB, "--d-model", "0,0"], 2),
        Probe("d-model not / heads", [*T, w / "r1", *BB, "--d-model", "100,100"], 2),
        Probe("d-model one level", [*T, w / "r1", *BB, "--d-model", "64"], 2),
        Probe("seed -1", [*T, w / "r1", *BB, "--seed", "-1"], 2),
        Probe("seed 2**32", [*T, w / "r1", *BB, "--seed", str(2**32)], 2),
        Probe("image size 100000", [*T, w / "r1", *BB[:2], "--image-size", "100000"], 2),
        Probe("image size 7", [*T, w / "r1", *BB[:2], "--image-size", "7"], 2),
        Probe("features image size 0", ["features", *D, *BB[:2], "--image-size", "0"], 2),
        Probe("epochs 0", [*T, w / "r1", *BB, "--epochs", "0"], 2),
        Probe("epochs not a number", [*T, w / "r1", *BB, "--epochs", "many"], 2),
        Probe("heads 0", [*T, w / "r1", *BB, "--heads", "0"], 2),
        Probe("heads 3 (64 not divisible)", [*T, w / "r1", *BB, "--heads", "3"], 2),
        Probe("layers 0", [*T, w / "r1", *BB, "--layers", "0"], 2),
        Probe("calib-fraction 1.5", [*T, w / "r1", *BB, "--calib-fraction", "1.5"], 2),
        Probe("eval-every -1", [*T, w / "r1", *BB, "--eval-every", "-1"], 2),
        Probe("jobs 0", [*T, w / "r1", *BB, "--jobs", "0"], 2),
        Probe("num-workers -1", ["features", *D, *BB, "--num-workers", "-1"], 2),
        Probe("reducer topk:2", ["eval", "--run", run, "--reducer", "topk:2"], 2),
        Probe("threshold nan", ["infer", ck, img, "--out", w / "p1", "--threshold", "nan"], 2),
        Probe("precision fp64", [*T, w / "r1", *BB, "--precision", "fp64"], 2),
        Probe("no-intra and no-inter", [*T, w / "r1", *BB, "--no-intra", "--no-inter"], 2),
        Probe("missing --data-path", ["features", "--store", store, *BB], 2),
        Probe("unknown option", ["train", "--epoch", "3"], 2),
        # ------------------------------------------------------------------ bad data and files: exit 1
        Probe("data path missing", ["features", "--data-path", w / "nope", "--store", store, *BB], 1),
        Probe(
            "corrupt train image",
            ["features", "--data-path", corrupt, "--store", w / "s2", *BB],
            1,
            ("s2",),
            has("001.png"),
        ),
        Probe(
            "truncated train image",
            ["features", "--data-path", trunc, "--store", w / "s2", *BB],
            1,
            ("s2",),
            has("001.png"),
        ),
        Probe(
            "mask of another size",
            ["features", "--data-path", badmask, "--store", w / "s2", *BB],
            1,
            ("s2",),
            has("40x30"),
        ),
        Probe("missing mask", ["features", "--data-path", nomask, "--store", w / "s2", *BB], 1, ("s2",)),
        Probe("grey train images", ["features", "--data-path", grey, "--store", w / "s3", *BB], 0, ("s3",)),
        Probe("garbage checkpoint", ["eval", "--checkpoint", cks / "garbage.pt"], 1),
        Probe("truncated checkpoint", ["infer", cks / "trunc.pt", img, "--out", w / "p1"], 1),
        Probe("empty checkpoint", ["infer", cks / "empty.pt", img, "--out", w / "p1"], 1),
        Probe("pickled object in checkpoint", ["eval", "--checkpoint", cks / "evil.pt"], 1, check=nothing_pwned),
        Probe(
            "corrupt store file",
            ["train", "--data-path", data, "--store", badstore, "--out", w / "r2", *BB, *SMALL],
            1,
            ("r2",),
            has("not a valid HDF5"),
        ),
        Probe(
            "infer: a non-image among images", ["infer", ck, mixed, "--out", w / "p2", "--no-save-heatmaps"], 1, ("p2",)
        ),
        Probe("infer: input missing", ["infer", ck, w / "nope.png", "--out", w / "p1"], 1),
        Probe("eval: run missing", ["eval", "--run", w / "nope"], 1),
        # ------------------------------------------------------------------ the store knows what it was made from
        Probe(
            "eval --data-path OTHER",
            ["eval", "--checkpoint", ck, "--data-path", other, "--json"],
            0,
            ("run/metrics",),
            scored(n_other, other),
        ),
        Probe(
            "train image added -> recomputed",
            ["features", "--data-path", added, "--store", w / "s4", *BB],
            0,
            ("s4", "added"),
            has("1 train image added"),
            run=add_image,
        ),
        # ------------------------------------------------------------------ disk faults: exit 1
        Probe("train: read-only --out", [*T, ro / "out" / "r", *BB, *SMALL], 1, skip=skip_ro),
        Probe("infer: read-only --out", ["infer", ck, img, "--out", ro / "out" / "p"], 1, skip=skip_ro),
        # eval's first write (a worst-image panel under maps/, or metrics.json) is the one named
        Probe("eval: read-only run", ["eval", "--run", ro / "run"], 1, check=has("cannot write"), skip=skip_ro),
        Probe(
            "features: full disk",
            ["features", *D[:2], "--store", full / "s", *BB[:2], "--image-size", "128"],
            1,
            check=has("No space left"),
            skip=skip_full,
        ),
        Probe("train: full disk", [*T, full / "r", *BB, *SMALL], 1, check=has("No space left"), skip=skip_full),
        Probe(
            "infer: full disk",
            ["infer", ck, data / "brick" / "test", "--recursive", "--out", full / "p"],
            1,
            check=has("No space left"),
            skip=skip_full,
        ),
        # ------------------------------------------------------------------ signals
        Probe(
            "features: kill -9, then rerun",
            ["features", *D[:2], "--store", kf, *BB, "--batch-size", "1"],
            137,
            ("kill-features-9",),
            None,
            run=kill_during("features", signal.SIGKILL, "*.tmp-*", ["features", *D[:2], "--store", kf, *BB]),
        ),
        Probe(
            "features: Ctrl-C",
            ["features", *D[:2], "--store", w / "kill-features-2", *BB, "--batch-size", "1"],
            130,
            ("kill-features-2",),
            has("ed features: interrupted"),
            run=kill_during("features", signal.SIGINT, "*.tmp-*"),
        ),
        Probe(
            "train: kill -9, then --resume",
            [*T, ks, *BB, "--layers", "1", "--heads", "4", "--epochs", "40"],
            137,
            ("kill-train-9",),
            run=kill_during(
                "train",
                signal.SIGKILL,
                "*.resume.pt",
                [*T, ks, *BB, "--layers", "1", "--heads", "4", "--epochs", "40", "--resume"],
            ),
        ),
        Probe(
            "train: Ctrl-C",
            [*T, w / "kill-train-2", *BB, "--layers", "1", "--heads", "4", "--epochs", "40"],
            130,
            ("kill-train-2",),
            has("--resume"),
            run=kill_during("train", signal.SIGINT, "*.resume.pt"),
        ),
        Probe(
            "two features writers at once",
            ["features", *D[:2], "--store", w / "s5", *BB, "--overwrite"],
            0,
            ("s5",),
            run=concurrent,
        ),
        Probe(
            "files get the umask mode", ["eval", "--run", run], 0, ("run/metrics", "run/predictions", "run/maps"), modes
        ),
    ]
    rows = []
    for p in probes:
        cmd = "ed " + " ".join(str(x).replace(str(w) + "/", "") for x in p.args)
        if p.skip:
            rows.append({"cmd": cmd, "expect": p.expect, "rc": "-", "msg": p.skip, "damage": "-", "verdict": "skipped"})
            continue
        before = snapshot(w)
        o = p.run(p) if p.run else ed(p.args)
        after = snapshot(w)
        allowed = tuple(str(Path(x)) for x in p.may_change)
        changed = [k for k, v in before.items() if after.get(k) != v and not k.startswith(allowed)]
        left = temps(w)  # a killed writer leaves its temp file: the probe's rerun must have removed it
        damage = []
        if changed:
            damage.append(f"changed: {', '.join(changed[:3])}")
        if left:
            damage.append(f"temp files: {', '.join(left[:2])}")
        problems = []
        if o.rc != p.expect:
            problems.append(f"exit {o.rc}")
        if "Traceback" in o.stderr:
            problems.append("Traceback")
        extra = p.check(o) if p.check else ""
        if extra:
            problems.append(extra)
        problems += [n for n in o.notes if "failed" in n or "before the signal" in n]
        msg = message(o) + (f" ({'; '.join(o.notes)})" if o.notes else "")
        rows.append(
            {
                "cmd": cmd,
                "expect": p.expect,
                "rc": o.rc,
                "msg": msg,
                "damage": "; ".join(damage) or "none",
                "verdict": "ok" if not (problems or damage) else "NOT CLEAN: " + "; ".join(problems + damage),
            }
        )
        print(f"{len(rows):2d} {rows[-1]['verdict'][:60]:60s} {p.name}", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    main()
