"""No silent wrong results, no tracebacks (issue 12): option values are checked where the configs are built, the
image and mask readers fail with a DataError on any bad file, a failing disk is one error line with nothing
damaged, store entries know what they were made from, and `ed eval --data-path` scores those images."""

from __future__ import annotations

import errno
import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_SIZE, invoke, tiny_train_args
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edcli import files
from edcli.config import (
    SEED_LIMIT,
    BackboneConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    TrainConfig,
)
from edcli.data.images import load_image, load_mask
from edcli.data.layouts import SampleRef
from edcli.errors import DataError, UsageError, WriteError
from edcli.track import NullTracker

BOUNDED = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
NUMBERS = st.one_of(
    st.integers(-3, 2**33),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just(0),
    st.just(1),
    st.just(SEED_LIMIT),
    st.just(SEED_LIMIT - 1),
)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# (config, field, option, what is allowed)
RULES = [
    (TrainConfig, "epochs", "--epochs", lambda v: _is_int(v) and v >= 1),
    (TrainConfig, "batch_size", "--batch-size", lambda v: _is_int(v) and v >= 1),
    (TrainConfig, "lr", "--lr", lambda v: _is_real(v) and v > 0),
    (TrainConfig, "seed", "--seed", lambda v: _is_int(v) and 0 <= v < SEED_LIMIT),
    (TrainConfig, "eval_every", "--eval-every", lambda v: _is_int(v) and v >= 0),
    (TrainConfig, "calib_fraction", "--calib-fraction", lambda v: _is_real(v) and 0 <= v < 1),
    (TrainConfig, "jobs", "--jobs", lambda v: _is_int(v) and v >= 1),
    (ModelConfig, "layers", "--layers", lambda v: _is_int(v) and v >= 1),
    (ModelConfig, "heads", "--heads", lambda v: _is_int(v) and v >= 1),
    (EvalConfig, "batch_size", "--batch-size", lambda v: _is_int(v) and v >= 1),
    (DataConfig, "image_size", "--image-size", lambda v: _is_int(v) and v >= 1),
]


@pytest.mark.parametrize("cls, field, option, allowed", RULES, ids=[f"{r[0].__name__}.{r[1]}" for r in RULES])
def test_option_values_are_checked_on_construction(cls, field, option, allowed):
    @BOUNDED
    @given(NUMBERS)
    def check(value):
        if allowed(value):
            assert getattr(cls(**{field: value}), field) == value
        else:
            with pytest.raises(UsageError) as err:
                cls(**{field: value})
            assert err.value.exit_code == 2
            assert str(err.value).startswith(f"{option} {value!r}: use ")

    check()


@BOUNDED
@given(st.lists(st.integers(-8, 600), min_size=1, max_size=3), st.integers(1, 12))
def test_d_model_must_split_into_heads_and_the_positional_encoding(widths, heads):
    ok = all(d >= 1 and d % heads == 0 and d % 4 == 0 for d in widths)
    if ok:
        assert ModelConfig(d_model=tuple(widths), heads=heads).d_model == tuple(widths)
    else:
        with pytest.raises(UsageError, match="--d-model"):
            ModelConfig(d_model=tuple(widths), heads=heads)


@pytest.mark.parametrize(
    "cls, kw, option",
    [
        (TrainConfig, {"precision": "fp64"}, "--precision"),
        (TrainConfig, {"select": "best"}, "--select"),
        (TrainConfig, {"strategy": "x"}, "--strategy"),
        (TrainConfig, {"device": "gpu"}, "--device"),
        (ModelConfig, {"arch": "vit"}, "--arch"),
        (EvalConfig, {"reducer": "topk:2"}, "--reducer"),
        (EvalConfig, {"pixel_map": "blur"}, "--pixel-map"),
        (BackboneConfig, {"levels": ()}, "--levels"),
        (DataConfig, {"normal_name": ""}, "--normal-name"),
    ],
)
def test_choices_name_the_option_and_the_allowed_values(cls, kw, option):
    with pytest.raises(UsageError, match=f"^{option} "):
        cls(**kw)


def test_valid_choices_pass():
    assert TrainConfig(device="cuda:1", precision="bf16", select="best-image", strategy="ddp").device == "cuda:1"
    assert EvalConfig(reducer="topk:0.5", pixel_map="smoothed").reducer == "topk:0.5"


def _one_error_line(res, option: str, code: int = 2) -> str:
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert res.returncode == code, res.stderr
    assert lines and lines[-1].startswith("error:") and "Traceback" not in res.stderr, res.stderr
    text = " ".join(ln.strip() for ln in lines if not ln.startswith("warning"))
    assert option in text, text
    return text


@pytest.mark.parametrize(
    "args, option",
    [
        (("train", "--lr", "nan"), "--lr"),
        (("train", "--seed", "-1"), "--seed"),
        (("train", "--d-model", "0,0"), "--d-model"),
        (("train", "--batch-size", "0"), "--batch-size"),
        (("features", "--batch-size", "0"), "--batch-size"),
        (("features", "--num-workers", "-1"), "--num-workers"),
        (("train", "--image-size", "7"), "2x2"),
        (("train", "--image-size", "100000"), "PiB"),
        (("train", "--heads", "3"), "--heads 3"),
    ],
)
def test_bad_values_are_one_line_exit_2(tmp_path, tiny_data, args, option):
    res = invoke(
        *args,
        "--data-path",
        tiny_data,
        "--category",
        "brick",
        "--store",
        tmp_path / "s",
        *(("--out", tmp_path / "r", "--epochs", "1") if args[0] == "train" else ()),
        "--backbone",
        "tf_efficientnet_lite0",
        "--quiet",
    )
    _one_error_line(res, option)
    assert not (tmp_path / "s" / "features").exists()  # refused before any work


def test_bad_batch_sizes_of_eval_and_infer_exit_2(tmp_path, tiny_run):
    ck = tiny_run / "checkpoints" / "brick.pt"
    _one_error_line(invoke("eval", "--checkpoint", ck, "--batch-size", "0"), "--batch-size")
    img = ck  # any existing path: the value is refused before the inputs are read
    _one_error_line(invoke("infer", ck, img, "--out", tmp_path / "p", "--batch-size", "0"), "--batch-size")
    _one_error_line(invoke("infer", ck, img, "--out", tmp_path / "p", "--threshold", "nan"), "--threshold")


# --------------------------------------------------------------------------------------------- image readers


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG" if mode not in ("CMYK", "F", "I") else "TIFF")
    return buf.getvalue()


@BOUNDED
@given(st.binary(max_size=300), st.sampled_from(["x.png", "x.jpg", "x.bmp", "x.tif"]))
def test_random_bytes_are_a_data_error(tmp_path_factory, data, name):
    path = tmp_path_factory.mktemp("bytes") / name
    path.write_bytes(data)
    with pytest.raises(DataError, match="could not decode image"):
        load_image(str(path), 8, "squash")


@BOUNDED
@given(st.binary(max_size=300))
def test_random_bytes_as_a_mask_are_a_data_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("maskbytes")
    Image.new("RGB", (8, 8)).save(folder / "img.png")
    (folder / "m.png").write_bytes(data)
    with pytest.raises(DataError, match="could not decode mask"):
        load_mask(SampleRef(str(folder / "img.png"), 1, "hole", str(folder / "m.png")), 8, "squash", "mvtec")


@BOUNDED
@given(st.integers(0, 99))
def test_truncated_images_are_a_data_error(tmp_path_factory, percent):
    good = _png(np.random.default_rng(percent).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    path = tmp_path_factory.mktemp("trunc") / "t.png"
    cut = len(good) * percent // 100
    path.write_bytes(good[:cut])
    full = tmp_path_factory.mktemp("trunc") / "full.png"
    full.write_bytes(good)
    try:
        got = load_image(str(path), 8, "squash")
    except DataError as err:
        assert str(path) in str(err)
        return
    # decoded anyway: only trailing bytes after the pixel data (a CRC, IEND) were lost, never a pixel
    assert cut >= len(good) - 20 and bool((got == load_image(str(full), 8, "squash")).all())


@BOUNDED
@given(
    st.sampled_from(["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK"]),
    st.integers(1, 24),
    st.integers(1, 24),
    st.sampled_from(["squash", "shorter_crop"]),
)
def test_odd_modes_and_sizes_give_a_valid_image(tmp_path_factory, mode, w, h, resize):
    rng = np.random.default_rng(w * 31 + h)
    img = Image.fromarray(rng.integers(0, 255, (h, w, 4), dtype=np.uint8), "RGBA").convert(mode)
    path = tmp_path_factory.mktemp("modes") / ("m.tif" if mode in ("I", "F", "CMYK", "I;16") else "m.png")
    img.save(path)
    x = load_image(str(path), 8, resize)
    assert tuple(x.shape) == (3, 8, 8) and bool(((x >= 0) & (x <= 1)).all())


@BOUNDED
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20), st.integers(1, 20))
def test_a_mask_of_another_size_than_its_image_is_an_error(tmp_path_factory, iw, ih, mw, mh):
    folder = tmp_path_factory.mktemp("mask")
    Image.new("RGB", (iw, ih), (10, 20, 30)).save(folder / "img.png")
    Image.fromarray((np.arange(mw * mh).reshape(mh, mw) % 2 * 255).astype(np.uint8)).save(folder / "m.png")
    ref = SampleRef(str(folder / "img.png"), 1, "hole", str(folder / "m.png"))
    if (iw, ih) == (mw, mh):
        m = load_mask(ref, 8, "squash", "mvtec")
        assert m.shape == (8, 8) and set(np.unique(m)) <= {0, 1}
    else:
        with pytest.raises(DataError) as err:
            load_mask(ref, 8, "squash", "mvtec")
        msg = str(err.value)
        assert f"{mw}x{mh}" in msg and f"{iw}x{ih}" in msg and "m.png" in msg


# --------------------------------------------------------------------------------------------- disk faults


class _FailingFile(io.FileIO):
    """A real file whose writes fail like a full disk (or a read-only one) once `budget` bytes are written."""

    budget = 0
    err = errno.ENOSPC

    def write(self, b):
        n = len(memoryview(b).cast("B"))
        if _FailingFile.budget < n:
            raise OSError(self.err, os.strerror(self.err))
        _FailingFile.budget -= n
        return super().write(b)


def _fail_writes(monkeypatch, budget: int, err: int = errno.ENOSPC):
    real_open = open

    def fake_open(path, mode="r", buffering=-1, **kw):
        if not any(c in mode for c in "wxa+"):
            return real_open(path, mode, buffering, **kw)
        raw = _FailingFile(path, mode.replace("b", "").replace("t", ""))
        if buffering == 0:
            return raw
        buffered = io.BufferedRandom(raw) if "+" in mode else io.BufferedWriter(raw)
        return buffered if "b" in mode else io.TextIOWrapper(buffered, **kw)

    _FailingFile.budget, _FailingFile.err = budget, err
    monkeypatch.setattr(files, "open", fake_open, raising=False)


def test_guarded_file_keeps_what_the_disk_refused_in_memory(tmp_path):
    g = files.GuardedFile(tmp_path / "g.bin")
    g.write(b"abcd")
    g._fh.close()  # the disk goes away: every later write fails
    g._fh = open(tmp_path / "g.bin", "rb", buffering=0)
    g._fh.seek(4)
    assert g.write(b"EFGH") == 4 and isinstance(g.error, OSError)
    g.seek(2)
    assert g.write(b"XY") == 2 and g.tell() == 4
    g.seek(0)
    assert g.read(8) == b"abXYEFGH" and g.seek(0, 2) == 8
    with pytest.raises(OSError):
        g.close()
    assert (tmp_path / "g.bin").read_bytes() == b"abcd"  # nothing more reached the disk


def _temps(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if files.is_temp(p)]


@pytest.mark.parametrize("err, cause", [(errno.ENOSPC, "No space left"), (errno.EROFS, "Read-only")])
def test_a_failing_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, err, cause):
    target = tmp_path / "a.json"
    files.write_text(target, "old\n")
    _fail_writes(monkeypatch, 2, err)
    with pytest.raises(WriteError, match=f"cannot write {target}: {cause}"):
        files.write_text(target, "new content\n")
    assert target.read_text() == "old\n" and _temps(tmp_path) == []


def test_features_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, tiny_data):
    _fail_writes(monkeypatch, 50_000)
    res = invoke(
        "features",
        "--data-path",
        tiny_data,
        "--category",
        "brick",
        "--store",
        tmp_path / "s",
        "--backbone",
        "tf_efficientnet_lite0",
        "--image-size",
        TINY_SIZE,
        "--quiet",
    )
    text = _one_error_line(res, "No space left on device", code=1)
    assert "cannot write" in text and ".h5" in text
    assert _temps(tmp_path) == [] and list((tmp_path / "s").rglob("*.h5")) == []


def test_train_eval_infer_into_a_read_only_folder_exit_1(tmp_path, monkeypatch, tiny_data, tiny_store, tiny_run):
    before = {p: p.read_bytes() for p in tiny_run.rglob("*") if p.is_file()}
    store_before = {p: p.stat().st_mtime_ns for p in tiny_store.rglob("*.h5")}
    _fail_writes(monkeypatch, 0, errno.EROFS)
    res = invoke(
        "train",
        "--data-path",
        tiny_data,
        "--category",
        "brick",
        "--store",
        tiny_store,
        "--out",
        tmp_path / "r",
        "--backbone",
        "tf_efficientnet_lite0",
        "--image-size",
        TINY_SIZE,
        "--epochs",
        "1",
        "--layers",
        "2",
        "--heads",
        "4",
        "--d-model",
        "auto",
        "--quiet",
    )
    assert "Read-only file system" in _one_error_line(res, "cannot write", code=1)
    ck = tmp_path / "run" / "checkpoints" / "brick.pt"
    ck.parent.mkdir(parents=True)
    shutil.copy(tiny_run / "checkpoints" / "brick.pt", ck)
    # the first write of eval that fails is named: its worst-image panels under maps/ or metrics.json
    line = _one_error_line(invoke("eval", "--checkpoint", ck, "--quiet"), "Read-only", code=1)
    assert f"cannot write {tmp_path / 'run'}/" in line and ("metrics.json" in line or "/maps/" in line)
    img = next((tiny_data / "brick" / "test" / "good").glob("*.png"))
    res = invoke("infer", ck, img, "--out", tmp_path / "p", "--num-workers", "0", "--quiet")
    _one_error_line(res, "Read-only file system", code=1)
    assert _temps(tmp_path) == [] and _temps(tiny_run) == []
    assert {p: p.read_bytes() for p in tiny_run.rglob("*") if p.is_file()} == before
    assert {p: p.stat().st_mtime_ns for p in tiny_store.rglob("*.h5")} == store_before


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only): a real full disk."""
    folder = tmp_path / "full"
    folder.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("needs root and tmpfs to mount a small file system")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_real_full_disk_is_one_line_for_hdf5(small_tmpfs, tiny_data):
    (small_tmpfs / "filler").write_bytes(b"\0" * 900_000)
    res = invoke(
        "features",
        "--data-path",
        tiny_data,
        "--category",
        "brick",
        "--store",
        small_tmpfs / "s",
        "--backbone",
        "tf_efficientnet_lite0",
        "--image-size",
        TINY_SIZE,
        "--quiet",
    )
    assert "No space left on device" in _one_error_line(res, "cannot write", code=1)
    assert _temps(small_tmpfs) == [] and (small_tmpfs / "filler").stat().st_size == 900_000


def test_temp_files_of_dead_writers_are_removed_by_the_next_writer(tmp_path):
    target = tmp_path / "x.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"x.json.tmp-{int(dead.stdout)}-0badf00d"
    live = tmp_path / f"x.json.tmp-{os.getppid()}-0badf00d"  # a running process
    other = tmp_path / f"y.json.tmp-{int(dead.stdout)}-0badf00d"  # another target's, in the same folder
    for p in (stale, live, other):
        p.write_text("partial")
    files.write_text(target, "{}\n")
    assert not stale.exists() and live.exists() and not other.exists() and target.read_text() == "{}\n"


def test_files_get_the_umask_mode(tmp_path):
    from edcli.checkpoint import atomic_torch_save

    old = os.umask(0o022)
    try:
        files.write_text(tmp_path / "a.txt", "x")
        atomic_torch_save({"a": 1}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert {oct((tmp_path / n).stat().st_mode & 0o777) for n in ("a.txt", "c.pt")} == {"0o644"}


def test_ctrl_c_during_features_names_the_command(monkeypatch, tmp_path):
    import edcli.commands.features as features_cmd

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(features_cmd, "run", interrupted)
    res = invoke("features", "--data-path", tmp_path, "--quiet")
    assert res.returncode == 130 and "ed features: interrupted" in res.stderr and "--resume" not in res.stderr


# --------------------------------------------------------------------------------------------- fingerprint


class _Log(NullTracker):
    def __init__(self):
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_store_entry_is_recomputed_when_images_are_added_removed_or_touched(tmp_path, tiny_data):
    from edcli.features import build_context, extract_category

    root = tmp_path / "d"
    shutil.copytree(tiny_data / "brick", root / "brick")
    data = DataConfig(data_path=str(root), categories=("brick",), image_size=TINY_SIZE)
    ctx = build_context(data, BackboneConfig(name="tf_efficientnet_lite0"), "cpu")
    store = str(tmp_path / "s")
    train = root / "brick" / "train" / "good"

    def again() -> tuple[dict, str]:
        log = _Log()
        row = extract_category(ctx, store, "brick", 16, 0, log)
        return row, " ".join(log.lines)

    assert again()[0]["status"] == "written"
    row, log = again()
    assert row["status"] == "cached" and "same images" in log
    shutil.copy(train / "000.png", train / "100.png")
    shutil.copy(train / "000.png", train / "101.png")
    (train / "002.png").unlink()
    st_ = (train / "001.png").stat()
    os.utime(train / "001.png", ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    mask = next((root / "brick" / "ground_truth").rglob("*.png"))
    os.utime(mask, ns=(mask.stat().st_atime_ns, mask.stat().st_mtime_ns + 10**9))
    row, log = again()
    assert row["status"] == "recomputed" and row["train"] == 9, log
    assert "2 train images added, 1 removed, 1 changed, 1 test mask changed since" in log
    assert again()[0]["status"] == "cached"
    from test_integrity import _flip_in_chunk  # a flipped byte in a stored chunk: recomputed, saying why

    _flip_in_chunk(Path(row["path"]), "train/1", 0)
    row, log = again()
    assert row["status"] == "recomputed" and "train/1 fails its checksum" in log, log
    assert again()[0]["status"] == "cached"
    assert _temps(tmp_path) == []


def test_eval_data_path_scores_those_images(tmp_path, tiny_run, tiny_store):
    import json

    from edcli.data.synth import SynthSpec, make_dataset

    other = tmp_path / "other"
    make_dataset(other, ("brick",), SynthSpec(n_train=2, n_test_good=2, n_per_defect=1, size=TINY_SIZE, seed=9))
    n_other = sum(1 for p in (other / "brick" / "test").rglob("*.png"))
    ck = tmp_path / "run" / "checkpoints" / "brick.pt"
    ck.parent.mkdir(parents=True)
    shutil.copy(tiny_run / "checkpoints" / "brick.pt", ck)
    store_before = {p: p.read_bytes() for p in tiny_store.rglob("*.h5")}
    res = invoke("eval", "--checkpoint", ck, "--data-path", other, "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    n_own = sum(
        1
        for _ in Path(json.loads((tiny_run / "run.json").read_text())["data"]["data_path"], "brick", "test").rglob(
            "*.png"
        )
    )
    assert got["rows"][0]["test_images"] == n_other != n_own
    assert got["rows"][0]["data_path"] == str(other.resolve()) and got["mean"]["test_images"] == n_other
    assert {p: p.read_bytes() for p in tiny_store.rglob("*.h5")} == store_before  # the run's store is untouched


def test_ctrl_c_inside_hdf5_is_raised_not_swallowed(tmp_path, monkeypatch):
    import signal

    from edcli.store import FeatureWriter

    real, sent = files.GuardedFile.write, []

    def write(self, data):  # Ctrl-C arrives while HDF5 is inside its file callback
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, data)

    monkeypatch.setattr(files.GuardedFile, "write", write)
    # Python's own Ctrl-C handler, as in a terminal: a process started in the background by a non-interactive shell
    # (`cmd &`) inherits SIGINT ignored, and then there is nothing to raise
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    meta = dict(backbone="b", weights_sha256="x", levels=[2], image_size=8, resize_mode="squash")
    try:
        with pytest.raises(KeyboardInterrupt):
            with FeatureWriter(tmp_path / "f.h5", meta, [(4, 2, 2)], 2, 0, 8) as w:
                w.write_train(0, [np.ones((2, 4, 2, 2))], ["a", "b"])
                w.write_ref(0, np.ones((4, 4), np.float32))
    finally:
        signal.signal(signal.SIGINT, old)
    assert sent and _temps(tmp_path) == [] and not (tmp_path / "f.h5").exists()


@pytest.mark.slow
def test_sigterm_stops_train_as_ctrl_c_does(tmp_path, tiny_data, tiny_store):
    """SIGTERM (schedulers, `kill`): one message, exit 143, the resume state kept, no temp file. SIGTERM raises
    edcli.errors.Terminated, a KeyboardInterrupt, so resuming is the Ctrl-C path test_pipeline checks bit for bit."""
    import signal
    import time

    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    out = tmp_path / "run"
    args = tiny_train_args(tiny_data, store, out, epochs=6)
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "edcli", *args], stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until an epoch has finished (its resume state is on disk)
        seen.append(line)
        if "epoch 2/6" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 143, "".join(seen) + rest
    errors = [ln for ln in rest.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "terminated (SIGTERM)" in errors[0] and "--resume" in errors[0], rest
    assert "Traceback" not in rest
    assert (out / "checkpoints" / "brick.resume.pt").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
