"""`ed infer` at scale: rows streamed to disk survive a SIGKILL and --resume completes them exactly; --overwrite and
the one-line refusals; --shard I/N partitions the inputs and the last part merges; the pixel cap; Ray Data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import invoke

N_IMAGES = 32  # a few dozen tiny images at batch 1: a kill lands part way, the run stays short


@pytest.fixture(scope="module")
def many(tiny_data, tmp_path_factory) -> Path:
    """N_IMAGES copies of the fixture's brick test images, named in input order."""
    src = sorted((tiny_data / "brick" / "test").rglob("*.png"))
    folder = tmp_path_factory.mktemp("many")
    for k in range(N_IMAGES):
        shutil.copy(src[k % len(src)], folder / f"{k:03d}.png")
    return folder


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


def _same(rows: list[dict]) -> list[dict]:
    """Rows less the scoring time, which differs from run to run."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def _infer(ck, inputs, out, *more):
    return invoke("infer", ck, inputs, "--out", out, "--device", "cpu", "--num-workers", "0", "--batch-size", "1",
                  "--save-heatmaps", "none", "--json", *more)  # fmt: skip


@pytest.fixture(scope="module")
def reference(tiny_run, many, tmp_path_factory) -> list[dict]:
    """The rows of one uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "p"
    res = _infer(tiny_run / "checkpoints" / "brick.pt", many, out)
    assert res.returncode == 0, res.stderr
    rows = _rows(out)
    assert len(rows) == N_IMAGES and all(r["seconds"] > 0 for r in rows)  # each row carries its scoring time
    assert json.loads(res.stdout) == rows  # --json streams every row, as the file holds them
    assert (out / "infer.json").is_file() and not (out / "parts").exists()
    return rows


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_rows(tiny_run, many, reference, tmp_path):
    ck, out = tiny_run / "checkpoints" / "brick.pt", tmp_path / "p"
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "edcli", "infer", str(ck), str(many), "--out", str(out), "--device", "cpu",
           "--num-workers", "0", "--batch-size", "1", "--save-heatmaps", "none", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    jsonl, deadline = out / "predictions.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 1:  # a first batch is on disk, flushed
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    kept = jsonl.read_bytes()
    assert 1 <= kept.count(b"\n") < N_IMAGES  # killed part way, every flushed row there
    with open(jsonl, "ab") as fh:  # a writer killed inside a write leaves a torn last line: --resume drops it
        fh.write(b'{"path": "torn')
    again = _infer(ck, many, out)
    assert again.returncode == 1 and "already holds predictions" in again.stderr and "--resume" in again.stderr
    res = _infer(ck, many, out, "--resume")
    assert res.returncode == 0, res.stderr
    rows = _rows(out)
    assert _same(rows) == _same(reference)  # the same rows in input order, each image once
    assert _same(json.loads(res.stdout)) == _same(reference)  # and stdout gets all of them, in order
    csv_lines = (out / "predictions.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + N_IMAGES and csv_lines[1].startswith(rows[0]["path"] + ",")
    # another threshold: refused in one line naming it, the files untouched
    other = _infer(ck, many, out, "--resume", "--threshold", "0.5", "--quiet")
    assert other.returncode == 1 and "threshold" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    assert _rows(out) == rows


def test_shards_partition_the_inputs_and_the_last_one_merges(tiny_run, many, reference, tmp_path):
    ck, out = tiny_run / "checkpoints" / "brick.pt", tmp_path / "p"
    few = f"{many}/00*.png"  # the first 10 images, through a glob
    first = _infer(ck, few, out, "--shard", "0/2")
    assert first.returncode == 0, first.stderr
    a = json.loads(first.stdout)
    assert not (out / "predictions.jsonl").exists() and (out / "parts" / "0-of-2" / "predictions.jsonl").exists()
    second = _infer(ck, few, out, "--shard", "1/2")
    assert second.returncode == 0, second.stderr
    b = json.loads(second.stdout)
    paths = [r["path"] for r in reference[:10]]
    assert [r["path"] for r in a + b] == paths and len(a) == 5  # disjoint, covering, contiguous
    assert _same(_rows(out)) == _same(reference[:10]) and not (out / "parts").exists()  # merged in input order
    bad = _infer(ck, few, out, "--shard", "2/2")
    assert bad.returncode == 2 and "--shard 2/2" in bad.stderr


def test_overwrite_heatmaps_by_need_and_the_pixel_cap(tiny_run, many, reference, tmp_path):
    ck, out = tiny_run / "checkpoints" / "brick.pt", tmp_path / "p"
    imgs = sorted(many.glob("*.png"))[:4]
    low = sorted(r["score"] for r in reference[:4])
    thr = (low[1] + low[2]) / 2  # the 2 highest-scored of these 4 are anomalous (midway: another batch rounds apart)
    args = ["infer", ck, *imgs, "--out", out, "--device", "cpu", "--num-workers", "0", "--threshold", str(thr)]
    res = invoke(*args, "--save-heatmaps", "all", "--save-raw-maps")
    assert res.returncode == 0, res.stderr
    assert len(list((out / "heatmaps").glob("*.png"))) == 4 and len(list((out / "maps").glob("*.npy"))) == 4
    assert "scored 4 of 4 images: 2 anomalous, 0 failed" in res.stdout
    res = invoke(*args, "--overwrite", "--max-pixels", "4000")  # 64x64 = 4096 pixels: every image over the cap
    assert res.returncode == 1
    assert res.stderr.count("failed: image ") == 4 and "above --max-pixels 4000" in res.stderr
    assert not (out / "heatmaps").exists() and not (out / "maps").exists()  # the old run's files went
    res = invoke(*args, "--resume")  # failed rows are tried again: raising the cap scores them
    assert res.returncode == 0, res.stderr
    assert len(list((out / "heatmaps").glob("*.png"))) == 4 and not (out / "maps").exists()  # auto: all
    res = invoke(*args, "--overwrite", "--save-heatmaps", "anomalous")
    assert res.returncode == 0 and len(list((out / "heatmaps").glob("*.png"))) == 2
    assert sum(r["heatmap"] is not None for r in _rows(out)) == 2


@pytest.mark.slow  # Ray's start-up takes ~15 s of the suite's budget; .ci/run runs it after installing edcli[ray]
def test_ray_engine_writes_the_rows_of_ed_infer(tiny_run, many, reference, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'edcli[ray]')")
    import ray

    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - whatever keeps Ray from starting here is a skip that says so
        pytest.skip(f"Ray cannot start here: {type(e).__name__}: {e}")
    try:
        res = _infer(tiny_run / "checkpoints" / "brick.pt", many, tmp_path / "p", "--engine", "ray")
    finally:
        ray.shutdown()
    assert res.returncode == 0, res.stderr
    rows = _rows(tmp_path / "p")
    assert [r["path"] for r in rows] == [r["path"] for r in reference]
    for got, want in zip(rows, reference):  # another process scores them: equal up to float rounding
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], rel=1e-5)
