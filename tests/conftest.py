"""Shared fixtures: a tiny demo dataset from real textures, its feature store and a trained run (CPU, offline)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `ed` itself does (cli.main); before torch is imported

TINY_SIZE = 64  # tf_efficientnet_lite0 grids 8x8 and 4x4: seconds, not minutes


def pytest_collection_modifyitems(config, items):
    import torch

    # the long end-to-end checks (torchrun, kills, the demo) run with ED_SLOW_TESTS=1: .ci/run runs them after
    # the suite, which stays within its time budget without them
    if not os.environ.get("ED_SLOW_TESTS"):
        slow = pytest.mark.skip(reason="long check: set ED_SLOW_TESTS=1 (.ci/run does)")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(slow)

    if os.environ.get("ED_TEST_DEVICE", "cpu").startswith("cuda") and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (set ED_TEST_DEVICE=cuda on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny tensors: a second thread only adds waits on a busy 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def device() -> str:
    return os.environ.get("ED_TEST_DEVICE", "cpu")


def run_ed(
    *args: str, input: str | None = None, cwd: Path | None = None, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m edcli ...` in a subprocess (never a bare `ed`: the system has the line editor)."""
    e = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="200")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edcli", *map(str, args)],
        capture_output=True,
        text=True,
        input=input,
        cwd=cwd,
        env=e,
        timeout=timeout,
    )


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def invoke(*args, input: str | None = None, env: dict | None = None) -> Result:
    """`ed ...` in this process through Typer's CliRunner: the same exit codes and streams as `run_ed`, without a
    Python start-up. An exception that escapes the app (a traceback for a user) is re-raised, never an exit code."""
    from typer.testing import CliRunner

    from edcli.cli import app

    e = {"NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    res = CliRunner().invoke(app, [str(a) for a in args], input=input, env=e, prog_name="ed")
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from edcli.data.synth import SynthSpec, make_dataset

    root = tmp_path_factory.mktemp("data")
    make_dataset(root, ("brick", "gravel"), SynthSpec(n_train=8, n_test_good=3, n_per_defect=1, size=TINY_SIZE, seed=1))
    return root


@pytest.fixture(scope="session")
def tiny_configs(tiny_data):
    from edcli.config import BackboneConfig, DataConfig, ModelConfig, TrainConfig

    data = DataConfig(dataset="mvtec", data_path=str(tiny_data), categories=("brick",), image_size=TINY_SIZE)
    bb = BackboneConfig(name="tf_efficientnet_lite0")
    model = ModelConfig(layers=2, heads=4, d_model=(64, 64))  # narrow on purpose: the suite stays fast
    train = TrainConfig(epochs=2, batch_size=2, device="cpu", seed=7)
    return data, bb, model, train


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, tiny_configs) -> Path:
    from edcli.commands.features import run as run_features

    data, bb, _, _ = tiny_configs
    store = tmp_path_factory.mktemp("store")
    run_features(data=data, bb_cfg=bb, store=str(store), device="cpu", batch_size=8)
    return store


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_configs, tiny_store) -> Path:
    from edcli.commands.train import run as run_train

    data, bb, model, train = tiny_configs
    out = tmp_path_factory.mktemp("run")
    run_train(data=data, bb_cfg=bb, model_cfg=model, train_cfg=train, store=str(tiny_store), out=str(out))
    return out


def tiny_train_args(data: Path, store: Path, out: Path, epochs: int = 1, seed: int = 7) -> list[str]:
    """`ed train` of the fixture's brick at 64 px with the narrow test model (d_model 64/64, 2 layers, 4 heads)."""
    return ["train", "--data-path", str(data), "--store", str(store), "--out", str(out), "--category", "brick",
            "--backbone", "tf_efficientnet_lite0", "--image-size", str(TINY_SIZE), "--epochs", str(epochs),
            "--batch-size", "2", "--layers", "2", "--heads", "4", "--d-model", "64,64", "--seed", str(seed),
            "--device", "cpu"]  # fmt: skip
