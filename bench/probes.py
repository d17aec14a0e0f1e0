"""Probes of bad input and faults, as a user meets them: each runs `python -m edcli ...` in a subprocess on a tiny
dataset in a temp folder and checks the exit code, that stderr has no Traceback, that no file that existed before
changed (unless the probe is meant to change it) and that no temp file is left. Prints a markdown table.

    python bench/probes.py            # about 6-10 minutes on 2 idle CPU cores
    python bench/probes.py --keep     # keep the temp folder to look at
    python bench/probes.py --only EXIF --only "two trains"   # some probes (the baseline run is made first)

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


def flip_middle_of_a_tensor(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor record of a torch zip checkpoint (weights, not the header)."""
    import zipfile

    with zipfile.ZipFile(path) as z, path.open("rb") as fh:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        fh.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(fh.read(2), "little") for _ in range(2))
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_in_chunk(path: Path, name: str) -> None:
    """Flip one byte in the middle of the first stored chunk of HDF5 dataset `name`."""
    import h5py

    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[info.byte_offset + info.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--only", action="append", metavar="TEXT", help="Only the probes whose name has TEXT (repeatable)")
    a = ap.parse_args()
    # the commands get Ctrl-C as in a terminal: started in the background by a non-interactive shell (`cmd &`), this
    # script would inherit SIGINT ignored and pass that on, and every Ctrl-C probe would run to the end (exit 0).
    # A handler of our own becomes the default action in each child at exec.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="ed-probes-"))
    mounts: list[Path] = []
    try:
        rows = run_probes(work, mounts, a.only)
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


def run_probes(w: Path, mounts: list[Path], only: list[str] | None = None) -> list[dict]:
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

    # issue 24: a damaged checkpoint and store entry, a sideways phone JPEG, a 16-bit PNG, a formula file name
    flipped = cks / "flipped.pt"
    shutil.copy(ck, flipped)
    flip_middle_of_a_tensor(flipped)
    flipstore = w / "flipstore"
    shutil.copytree(store, flipstore)
    for p in (flipstore / "features").rglob("*.h5"):
        flip_in_chunk(p, "train/0")
    flipstore2 = w / "flipstore2"
    shutil.copytree(flipstore, flipstore2)
    exif = w / "exif"
    exif.mkdir()
    up = Image.open(img).convert("RGB")
    jpeg = {"quality": 100, "subsampling": 0}  # near-lossless: the copies differ by orientation, not by artefacts
    up.save(exif / "upright.jpg", **jpeg)
    tag = Image.Exif()
    tag[0x0112] = 6  # "turn 90 degrees clockwise to show": the pixels are stored turned the other way
    up.transpose(Image.Transpose.ROTATE_90).save(exif / "tagged.jpg", exif=tag, **jpeg)
    up.transpose(Image.Transpose.ROTATE_90).save(exif / "sideways.jpg", **jpeg)  # the same pixels, no tag
    grey16 = w / "grey16"
    grey16.mkdir()
    g16 = grey16 / "g16.png"
    Image.fromarray(np.asarray(up.convert("L")).astype(np.uint16) * 257).save(g16)
    formula = w / "formula"
    formula.mkdir()
    shutil.copy(img, formula / "=HYPERLINK(1+1).png")
    afile = w / "afile"
    afile.write_text("keep me")

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
        rcs = sorted(pr.returncode for pr in procs)
        o = Outcome(max(rcs), outs[0][0], outs[0][1] + outs[1][1], notes=[f"exits {rcs}"])
        # one writer per store entry (files.run_lock): when the two overlap, the second is refused at once
        if rcs == [0, 1] and "is in use by another ed features (pid" in o.stderr:
            o.rc = 0
            o.notes.append("the second was refused while the first held the entry")
        return o

    def modes(o: Outcome) -> str:
        bad = [
            str(p.relative_to(w))
            for p in list(run.rglob("*")) + list(store.rglob("*"))
            if p.is_file() and (p.stat().st_mode & 0o777) != (0o666 & ~0o022)
        ]
        return f"modes not 0644: {bad[:3]}" if bad else ""

    def both(*checks: Callable[[Outcome], str]) -> Callable[[Outcome], str]:
        return lambda o: "; ".join(m for m in (c(o) for c in checks) if m)

    def popen(args: list, **kw) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "edcli", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            **kw,
        )

    def infer_rows(o: Outcome) -> list[dict]:
        import json

        return json.loads(o.stdout)

    def upright_scores_alike(o: Outcome) -> str:
        try:
            tagged, upright, sideways = (r["score"] for r in infer_rows(o))
        except Exception as e:  # noqa: BLE001
            return f"no JSON rows: {e}"
        o.notes.append(f"scores: tagged {tagged:.3f}, upright {upright:.3f}, sideways untagged {sideways:.3f}")
        alike = abs(tagged - upright) <= 0.05 * max(abs(upright), 1e-6)
        return "" if alike and abs(tagged - upright) < abs(sideways - upright) else "tagged scored unlike upright"

    def two_trains(p: Probe) -> Outcome:
        """Two `ed train` into one --out at once (seeds 3407 and 1): one runs, the other is refused at once, and
        run.json and the checkpoint agree on the seed."""
        out = w / "twice"
        first = popen([*T, out, *BB, *SMALL, "--epochs", "30", "--seed", "3407"])  # long enough to be overlapped
        until(lambda: (out / ".ed.lock").exists(), 240)
        procs = [first, popen([*T, out, *BB, *SMALL, "--seed", "1"])]
        outs = [pr.communicate(timeout=600) for pr in procs]
        rcs = sorted(pr.returncode for pr in procs)
        o = Outcome(max(rcs), outs[0][0], outs[0][1] + outs[1][1], notes=[f"exits {rcs}"])
        if rcs != [0, 1]:
            o.notes.append("failed: not one run and one refusal")
            return o
        import json

        from edcli.checkpoint import load_checkpoint

        ran = json.loads((out / "run.json").read_text())["train"]["seed"]
        ck_seed = load_checkpoint(out / "checkpoints" / "brick.pt").config["train"]["seed"]
        o.notes.append(f"run.json seed {ran}, checkpoint seed {ck_seed}")
        if ran != ck_seed:
            o.notes.append("failed: run.json and the checkpoint disagree")
        return o

    def resume_state_kept(folder: Path) -> Callable[[Outcome], str]:
        return lambda o: "" if any(folder.rglob("*.resume.pt")) else "no resume state left"

    def term_features_overwrite(p: Probe) -> Outcome:
        """SIGTERM while `ed features --overwrite` writes its temp file: exit 143, no temp file, the entry there
        before still complete."""
        folder = w / "kill-features-15"
        first = ed(p.args[:-1])  # the entry, then its overwrite
        entries = sorted(folder.rglob("*.h5"))
        before = {e: e.read_bytes() for e in entries}
        proc = popen(p.args)
        hit = until(lambda: any(folder.rglob("*.tmp-*")), 240)
        if hit:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=300)
        o = Outcome(proc.returncode, out, err, notes=[] if hit else ["finished before the signal"])
        o.notes.append(f"first run exit {first.rc}")
        if sorted(folder.rglob("*.h5")) != entries or any(e.read_bytes() != b for e, b in before.items()):
            o.notes.append("failed: the entry there before changed")
        return o

    def deleted_cwd(p: Probe) -> Outcome:
        gone = w / "gone"
        gone.mkdir()
        script = 'cd "$1" && rmdir "$1" && shift && exec "$@"'
        r = subprocess.run(
            ["sh", "-c", script, "sh", str(gone), sys.executable, "-m", "edcli", *map(str, p.args)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        return Outcome(r.returncode, r.stdout, r.stderr)

    def csv_escaped(o: Outcome) -> str:
        import csv
        import json

        rows = list(csv.reader((w / "p-csv" / "predictions.csv").open()))
        cells = [c for r in rows[1:] for c in r[:1]]
        raw = [json.loads(ln)["path"] for ln in (w / "p-csv" / "predictions.jsonl").read_text().splitlines()]
        o.notes.append(f"CSV cell {cells[0]!r}, JSON {raw[0]!r}")
        return "" if cells == ["'=HYPERLINK(1+1).png"] and raw == ["=HYPERLINK(1+1).png"] else "not escaped as OWASP"

    def panel_not_white(o: Outcome) -> str:
        panels = sorted((w / "p16" / "heatmaps").glob("*.png"))
        if not panels:
            return "no panel"
        a = np.asarray(Image.open(panels[0]).convert("L")).astype(float)
        h = a.shape[0] - 24 - 18 - 8  # the first tile (the image), under the title and tile-name lines
        tile = a[24 + 18 : 24 + 18 + h, 8 : 8 + h]
        o.notes.append(f"image tile mean {tile.mean():.0f}, std {tile.std():.1f}")
        return "" if tile.mean() < 240 and tile.std() > 2 else "drawn as a white square"

    def help_says(text: str, not_text: str) -> Callable[[Outcome], str]:
        def check(o: Outcome) -> str:
            flat = " ".join(o.stdout.replace("│", " ").split())
            return "" if text in flat and not_text not in flat else f"help: {text!r} missing or {not_text!r} there"

        return check

    def first_line(text: str) -> Callable[[Outcome], str]:
        def check(o: Outcome) -> str:
            lines = o.stderr.strip().splitlines()
            return "" if lines and text in lines[0] else f"first stderr line is not {text!r}"

        return check

    kf, ks = w / "kill-features-9", w / "kill-train-9"
    T = ["train", *D, "--out"]
    KT2 = [*T, w / "kill-train-2", *BB, "--layers", "1", "--heads", "4", "--epochs", "40", "--resume"]
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
        # ------------------------------------------------------------------ issue 24: nothing silently wrong, round two
        Probe(
            "EXIF orientation 6 scores as upright",
            [
                "infer",
                ck,
                exif / "tagged.jpg",
                exif / "upright.jpg",
                exif / "sideways.jpg",
                "--out",
                w / "p-exif",
                "--json",
                "--no-save-heatmaps",
            ],
            0,
            check=upright_scores_alike,
        ),  # fmt: skip
        Probe(
            "flipped byte in a checkpoint",
            ["infer", flipped, img, "--out", w / "p1"],
            1,
            check=both(has("flipped.pt"), has("digest mismatch")),
        ),
        Probe(
            "flipped byte in a store entry: ed train recomputes it",
            ["train", "--data-path", data, "--store", flipstore, "--out", w / "r3", *BB, *SMALL],
            0,
            ("flipstore", "r3"),
            check=both(has("train/0 fails its checksum"), has("recomputing")),
        ),
        Probe(
            "flipped byte in a store entry: ed features recomputes it",
            ["features", "--data-path", data, "--store", flipstore2, *BB],
            0,
            ("flipstore2",),
            check=both(has("train/0 fails its checksum"), has("recomputing")),
        ),
        Probe(
            "two trains into one --out",
            [*T, w / "twice", "(seeds 3407 and 1 at once)"],
            1,
            check=has("is in use by another ed train (pid"),
            run=two_trains,
        ),
        Probe(
            "resume, other --d-model (interrupted run)",
            [*KT2, "--d-model", "96,96"],
            1,
            check=both(has("--d-model"), has("asked: 96,96"), has("--overwrite")),
        ),
        Probe(
            "resume, other --image-size",
            [*KT2, "--image-size", "96"],
            1,
            check=both(has("--image-size 64 (asked: 96)"), has("--overwrite")),
        ),
        Probe("resume, other --heads", [*KT2, "--heads", "8"], 1, check=has("--heads 4 (asked: 8)")),
        Probe("resume, other --lr", [*KT2, "--lr", "0.001"], 1, check=has("--lr 0.0001 (asked: 0.001)")),
        Probe(
            "resume a finished category, other --seed",
            [*T, run, *BB, *SMALL, "--resume", "--seed", "5"],
            1,
            check=both(has("--seed 3407 (asked: 5)"), has("--overwrite")),
        ),
        Probe(
            "train: SIGTERM",
            [*T, w / "kill-train-15", *BB, "--layers", "1", "--heads", "4", "--epochs", "40"],
            143,
            ("kill-train-15",),
            both(has("terminated (SIGTERM)"), has("--resume"), resume_state_kept(w / "kill-train-15")),
            run=kill_during("train", signal.SIGTERM, "*.resume.pt"),
        ),
        Probe(
            "train: SIGHUP (terminal closed)",
            [*T, w / "kill-train-1", *BB, "--layers", "1", "--heads", "4", "--epochs", "40"],
            129,
            ("kill-train-1",),
            both(has("terminated (SIGHUP)"), has("--resume"), resume_state_kept(w / "kill-train-1")),
            run=kill_during("train", signal.SIGHUP, "*.resume.pt"),
        ),
        Probe(
            "features --overwrite: SIGTERM",
            ["features", *D[:2], "--store", w / "kill-features-15", *BB, "--batch-size", "1", "--overwrite"],
            143,
            ("kill-features-15",),
            has("ed features: terminated (SIGTERM)"),
            run=term_features_overwrite,
        ),
        Probe(
            "infer from a deleted current directory",
            ["infer", ck, img, "--out", w / "p-cwd"],
            1,
            check=has("the current directory no longer exists"),
            run=deleted_cwd,
        ),
        Probe(
            "CSV cell a spreadsheet would evaluate",
            ["infer", ck, "=HYPERLINK(1+1).png", "--out", w / "p-csv", "--no-save-heatmaps"],
            0,
            check=csv_escaped,
            run=lambda p: ed(p.args, cwd=formula),
        ),
        Probe("16-bit PNG panel", ["infer", ck, g16, "--out", w / "p16"], 0, check=panel_not_white),
        Probe("train: --out is a file", [*T, afile, *BB, *SMALL], 1, check=has(f"--out {afile} is a file")),
        Probe("infer: --out is a file", ["infer", ck, img, "--out", afile], 1, check=has(f"--out {afile} is a file")),
        Probe(
            "features: --store is a file",
            ["features", *D[:2], "--store", afile, *BB],
            1,
            check=has(f"--store {afile} is a file"),
        ),
        Probe(
            "--precision help",
            ["train", "--help"],
            0,
            check=help_says("bf16 a GPU or a CPU with bf16 units", "the CPU takes fp32"),
        ),
        Probe("features: first line at once", ["features", *D, *BB], 0, check=first_line("ed features:")),
        Probe(
            "report: first line at once", ["report", run, "--out", w / "report.html"], 0, check=first_line("ed report:")
        ),
    ]
    rows = []
    for p in probes:
        if only and not any(t in p.name for t in only):
            continue
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
