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


def test_train_out_or_store_that_is_a_file_is_one_line_before_any_work(tmp_path, tiny_data):
    """Not "File exists" from a mkdir after the backbone is loaded: one line naming the option, nothing written."""
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for option, out, store in (("--out", afile, tmp_path / "store"), ("--store", tmp_path / "run", afile)):
        res = invoke(*tiny_train_args(tiny_data, store, out))
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert res.returncode == 1 and errors == [
            f"error: {option} {afile} is a file, not a folder; give a folder path (it is made if absent)"
        ], res.stderr
    assert afile.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


ABANDON = (
    "import os, signal, sys\n"
    "from pathlib import Path\n"
    "from edcli import files\n"
    "from edcli.errors import raise_terminated\n"
    "signal.signal(signal.SIGTERM, raise_terminated)\n"
    "tmp = files.prepare(Path(sys.argv[1]) / 'x.json')  # a temp file as the HDF5 writer makes it, never closed\n"
    "tmp.write_text('partial')\n"
    "os.kill(os.getpid(), signal.SIGTERM)  # raised outside any with block: only the exit can clean up\n"
)


def test_temp_files_of_writers_left_open_are_removed_when_the_process_exits(tmp_path):
    """A writer's temp files go on any exit the process survives, even one its `with` block did not see."""
    res = subprocess.run([sys.executable, "-c", ABANDON, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and "Terminated" in res.stderr, res.stderr  # the SIGTERM reached the writer
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "temp files left"


def test_an_hdf5_writer_never_closed_is_removed_at_exit(tmp_path):
    """The exit hook (`files._remove_open_temps`, run by atexit) also covers a store entry's temp file."""
    from edcli.store import FeatureWriter
    from test_store import SHAPES, S, make_meta

    writer = FeatureWriter(tmp_path / "entry.h5", make_meta(), SHAPES, 2, 1, S)
    (tmp,) = tmp_path.iterdir()
    assert files.is_temp(tmp)
    files._remove_open_temps()
    assert list(tmp_path.iterdir()) == []
    writer.abort()  # what a with block would have done: closes the HDF5 file, nothing left to remove
    assert list(tmp_path.iterdir()) == []


def test_the_next_writer_in_a_folder_removes_a_killed_writers_temp_files(tmp_path):
    """SIGKILL leaves a temp file (nothing runs); the next write into that folder, of any file, removes it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    proc.kill()
    proc.wait(timeout=10)
    dead = f"{proc.pid}-0badf00d"
    stale = [tmp_path / f"features.h5.tmp-{dead}", tmp_path / f".brick.tmp-{dead}"]
    stale[0].write_bytes(b"\0" * 1000)
    stale[1].mkdir()  # an atomic_folder's
    (stale[1] / "a.png").write_bytes(b"x")
    mine = tmp_path / f"run.json.tmp-{os.getpid()}-0badf00d"  # a live writer's (this process): kept
    mine.write_text("partial")
    files.write_text(tmp_path / "metrics.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", mine.name])
