"""One writer per run folder: `files.run_lock`; `ed train` and `ed features` refuse a folder another command holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_SIZE, invoke, tiny_train_args

from edcli import files
from edcli.errors import LockedError

HOLDER = (
    "import pathlib, sys, time\n"
    "from edcli.files import run_lock\n"
    "with run_lock(sys.argv[1], 'ed train'):\n"
    "    pathlib.Path(sys.argv[2]).write_text('ready')\n"
    "    time.sleep(600)\n"
)


def _hold(folder: Path, ready: Path) -> subprocess.Popen:
    """A process that takes the lock on `folder` and keeps it until killed; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), str(ready)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, "the lock holder died"
        assert time.monotonic() < deadline, "the lock holder never got ready"
        time.sleep(0.05)
    return proc


def _error_text(res) -> str:
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    return " ".join(ln.strip() for ln in lines[lines.index(errors[0]) :])  # the line, wrapped or not


def test_run_lock_holds_refuses_and_cleans_up(tmp_path):
    folder = tmp_path / "a" / "run"
    with files.run_lock(folder, "ed train") as got:
        assert got == folder and folder.is_dir()
        note = (folder / files.LOCK_NAME).read_text().splitlines()
        assert note[0] == str(os.getpid()) and note[1] == "ed train"
        # flock is per open file: a second taker, even in this process, is refused, naming the folder and the pid
        with pytest.raises(LockedError) as exc, files.run_lock(folder, "ed train"):
            pass
        msg = str(exc.value)
        assert str(folder) in msg and f"pid {os.getpid()}" in msg and "another --out" in msg and "\n" not in msg
        assert exc.value.exit_code == 1
        assert (folder / files.LOCK_NAME).exists()  # the refused taker left the holder's lock alone
    assert not folder.exists()  # made by the lock, left empty: removed with it
    assert folder.parent.is_dir()

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / files.LOCK_NAME).write_text("999999999\nkilled\n")  # the file of a dead holder does not block
    with files.run_lock(keep, "ed features", "--store"):
        (keep / "result").write_text("x")
        with pytest.raises(LockedError, match="another --store"), files.run_lock(keep, "ed features", "--store"):
            pass
    assert sorted(p.name for p in keep.iterdir()) == ["result"]  # a folder that was there stays; the lock goes

    with files.run_lock(keep, "ed train"):  # released: taken again at once
        pass


def test_run_lock_is_released_when_the_holder_is_killed(tmp_path):
    folder = tmp_path / "run"
    proc = _hold(folder, tmp_path / "ready")
    try:
        with pytest.raises(LockedError, match=f"pid {proc.pid}\\b"), files.run_lock(folder, "ed train"):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with files.run_lock(folder, "ed train"):  # no stale lock after SIGKILL
        assert (folder / files.LOCK_NAME).read_text().split("\n", 1)[0] == str(os.getpid())


def _train(tiny_data: Path, store: Path, out: Path):
    return invoke(*tiny_train_args(tiny_data, store, out), "--quiet")


def test_train_refuses_a_run_folder_in_use_then_runs_once_the_holder_is_gone(
    tmp_path, tiny_data, tiny_store, one_thread
):
    out = tmp_path / "run"
    proc = _hold(out, tmp_path / "ready")
    try:
        res = _train(tiny_data, tiny_store, out)
        assert res.returncode == 1, res.stderr
        text = _error_text(res)
        assert f"pid {proc.pid}" in text and str(out) in text and "--out" in text, text
        assert sorted(p.name for p in out.iterdir()) == [files.LOCK_NAME]  # nothing of a run was written
        assert (out / files.LOCK_NAME).read_text().split("\n", 1)[0] == str(proc.pid)  # the holder's lock untouched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    res = _train(tiny_data, tiny_store, out)
    assert res.returncode == 0, res.stderr
    assert (out / "checkpoints" / "brick.pt").is_file() and (out / "run.json").is_file()
    assert not (out / files.LOCK_NAME).exists()  # released when the command ended


def test_features_refuses_a_store_entry_in_use(tmp_path, tiny_data):
    store = tmp_path / "s"
    entry = store / "features" / "mvtec" / "brick"
    with files.run_lock(entry, "ed features", "--store"):
        res = invoke(
            "features",
            "--data-path",
            tiny_data,
            "--category",
            "brick",
            "--store",
            store,
            "--backbone",
            "tf_efficientnet_lite0",
            "--image-size",
            TINY_SIZE,
            "--device",
            "cpu",
            "--quiet",
        )
        assert res.returncode == 1, res.stderr
        text = _error_text(res)
        assert f"pid {os.getpid()}" in text and str(entry) in text and "--store" in text, text
        assert sorted(p.name for p in entry.iterdir()) == [files.LOCK_NAME]  # no features written
