"""torchrun with the gloo backend on the CPU: categories per rank, DDP, sharded inference, a failing rank."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_SIZE, invoke

pytestmark = pytest.mark.slow  # torchrun start-up: tens of seconds

COMMON = [
    "--dataset",
    "mvtec",
    "--backbone",
    "tf_efficientnet_lite0",
    "--image-size",
    str(TINY_SIZE),
    "--epochs",
    "2",
    "--batch-size",
    "2",
    "--layers",
    "2",
    "--heads",
    "4",
    "--seed",
    "11",
    "--device",
    "cpu",
    "--d-model",
    "auto",
]
EMA = ("--average", "ema")  # the averaged weights are what the ranks, the workers and a run alone agree on
ENV = {
    "OMP_NUM_THREADS": "1"
}  # torchrun's default; the in-process runs use one thread too (one_thread), so numbers match


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="200", **ENV)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "edcli",
        *map(str, args),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _same_weights(a: Path, b: Path) -> None:
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for sa, sb in zip(ca["state_dicts"], cb["state_dicts"]):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (a, k)


def test_categories_per_rank_and_jobs_equal_training_alone(tmp_path, tiny_data, one_thread):
    res = torchrun(
        "train",
        "--data-path",
        tiny_data,
        "--store",
        tmp_path / "store",
        "--out",
        tmp_path / "dist",
        "--strategy",
        "categories",
        "--json",
        *COMMON,
        *EMA,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout)  # only rank 0 prints, after gathering every rank's rows
    assert [r["category"] for r in rows] == ["brick", "gravel"]
    # --jobs 2 without torchrun: two worker processes with one thread each
    jobs = invoke(
        "train",
        "--data-path",
        tiny_data,
        "--store",
        tmp_path / "store2",
        "--out",
        tmp_path / "jobs",
        "--jobs",
        "2",
        *COMMON,
        *EMA,
    )
    assert jobs.returncode == 0, jobs.stderr[-3000:]
    for w, cat in ((1, "brick"), (2, "gravel")):  # the workers' progress reaches the parent: a line per epoch
        assert all(f"worker {w}: {cat} epoch {e}/2: " in jobs.stderr for e in (1, 2)), jobs.stderr
    for cat in ("brick", "gravel"):
        alone = invoke(
            "train",
            "--data-path",
            tiny_data,
            "--store",
            tmp_path / "store1",
            "--out",
            tmp_path / "alone",
            "--category",
            cat,
            *COMMON,
            *EMA,
        )  # one thread, as each rank
        assert alone.returncode == 0, alone.stderr[-3000:]
        _same_weights(tmp_path / "dist" / "checkpoints" / f"{cat}.pt", tmp_path / "alone" / "checkpoints" / f"{cat}.pt")
        _same_weights(tmp_path / "jobs" / "checkpoints" / f"{cat}.pt", tmp_path / "alone" / "checkpoints" / f"{cat}.pt")


def test_ddp_trains_one_category_and_eval_loads_it(tmp_path, tiny_data):
    res = torchrun(
        "train",
        "--data-path",
        tiny_data,
        "--store",
        tmp_path / "store",
        "--out",
        tmp_path / "ddp",
        "--strategy",
        "ddp",
        "--category",
        "brick",
        "--json",
        *COMMON,
        "--epochs",
        "4",
        "--average",
        "swa",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ck = torch.load(tmp_path / "ddp" / "checkpoints" / "brick.pt", weights_only=True)
    assert ck["selection"]["average"] == "swa (equal average of epochs 3 to 4)"
    recs = [h["rec"] for h in ck["history"]]
    assert len(recs) == 4 and recs[-1] < recs[0], recs
    ev = invoke("eval", "--run", tmp_path / "ddp", "--json", "--device", "cpu")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["rows"][0]["test_images"] == 8


def test_sharded_infer_writes_the_same_rows(tmp_path, tiny_data, tiny_run, one_thread):
    ck = tiny_run / "checkpoints" / "brick.pt"
    images = tiny_data / "brick" / "test"
    res = torchrun(
        "infer",
        ck,
        images,
        "--recursive",
        "--out",
        tmp_path / "dist",
        "--no-save-heatmaps",
        "--json",
        "--device",
        "cpu",
        "--num-workers",
        "0",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    single = invoke(
        "infer",
        ck,
        images,
        "--recursive",
        "--out",
        tmp_path / "one",
        "--no-save-heatmaps",
        "--json",
        "--device",
        "cpu",
        "--num-workers",
        "0",
    )
    assert single.returncode == 0, single.stderr
    a = [json.loads(line) for line in (tmp_path / "dist" / "predictions.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "one" / "predictions.jsonl").read_text().splitlines()]
    assert len(a) == 8 and len(b) == 8
    for ra, rb in zip(a, b):  # same rows in the same order; scores equal up to float rounding (buffer alignment
        # can change the last bits of a vectorised sum between processes)
        assert {k: v for k, v in ra.items() if not isinstance(v, float)} == {
            k: v for k, v in rb.items() if not isinstance(v, float)
        }
        for k, v in ra.items():
            if isinstance(v, float) and k != "seconds":  # seconds: the image's scoring time, a measurement
                assert v == pytest.approx(rb[k], rel=1e-6, abs=1e-9), (k, ra["path"])
    assert not (tmp_path / "dist" / "parts").exists()  # each rank streamed its part file; rank 0 merged them


def test_a_failing_rank_fails_the_job_and_keeps_the_others_outputs(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = next((data / "gravel" / "ground_truth" / "hole").glob("*_mask.png"))
    victim.unlink()  # gravel (rank 1) now has an anomalous image without its mask
    res = torchrun(
        "train",
        "--data-path",
        data,
        "--store",
        tmp_path / "store",
        "--out",
        tmp_path / "run",
        "--strategy",
        "categories",
        *COMMON,
    )
    assert res.returncode != 0
    assert "rank 1" in res.stderr and victim.name.replace("_mask", "") in res.stderr, res.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "brick.pt").exists()  # rank 0's work stays
    torch.load(tmp_path / "run" / "checkpoints" / "brick.pt", weights_only=True)
