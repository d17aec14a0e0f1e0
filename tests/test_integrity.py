"""Damaged files are refused, never scored: a flipped byte in a checkpoint's weights or a store chunk is an error."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke

from edcli.checkpoint import load_checkpoint, tensor_digest
from edcli.errors import CheckpointError, StoreError
from edcli.store import FeatureFile
from test_store import SHAPES, make_data, make_meta, write_file


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _tensor_ranges(path: Path) -> list[tuple[int, int]]:
    """(start, end) of the bytes of each tensor record inside a torch zip checkpoint."""
    out = []
    with zipfile.ZipFile(path) as z, path.open("rb") as fh:
        for info in z.infolist():
            if "/data/" not in info.filename:
                continue
            fh.seek(info.header_offset + 26)  # the local header's name and extra lengths may differ from the central
            name_len, extra_len = (int.from_bytes(fh.read(2), "little") for _ in range(2))
            start = info.header_offset + 30 + name_len + extra_len
            out.append((start, start + info.file_size))
    return out


@pytest.fixture
def ck_copy(tiny_run, tmp_path) -> Path:
    dst = tmp_path / "checkpoints" / "brick.pt"
    dst.parent.mkdir()
    shutil.copy(tiny_run / "checkpoints" / "brick.pt", dst)
    return dst


def test_saved_checkpoint_records_the_digest_of_its_weights(ck_copy):
    raw = torch.load(ck_copy, map_location="cpu", weights_only=True)
    assert raw["tensor_sha256"] == tensor_digest(raw["state_dicts"])
    assert len(raw["tensor_sha256"]) == 64
    bf16 = [{k: v.to(torch.bfloat16) for k, v in sd.items()} for sd in raw["state_dicts"]]
    assert tensor_digest(bf16) != raw["tensor_sha256"]  # dtype is part of the digest, bf16 hashes fine
    renamed = [{f"x{k}": v for k, v in sd.items()} for sd in raw["state_dicts"]]
    assert tensor_digest(renamed) != raw["tensor_sha256"]  # and so are the key names


def test_flipped_byte_in_the_middle_of_a_checkpoint_is_refused(ck_copy):
    middle = ck_copy.stat().st_size // 2
    assert any(a <= middle < b for a, b in _tensor_ranges(ck_copy))  # weights there: only the digest can tell
    _flip(ck_copy, middle)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ck_copy)
    msg = str(err.value)
    assert str(ck_copy) in msg and "damaged" in msg and "digest mismatch" in msg
    assert "ed train --overwrite" in msg and "\n" not in msg


def test_ed_infer_on_a_damaged_checkpoint_exits_1_with_one_error_line(ck_copy, tiny_data):
    _flip(ck_copy, ck_copy.stat().st_size // 2)
    img = sorted((tiny_data / "brick" / "test" / "good").glob("*.png"))[0]
    res = invoke("infer", ck_copy, img, "--device", "cpu", "--num-workers", "0")
    assert res.returncode == 1
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "damaged" in errors[0] and "brick.pt" in errors[0], res.stderr
    assert res.stdout.strip() == ""


def test_checkpoint_of_an_older_edcli_without_digest_still_loads(ck_copy):
    raw = torch.load(ck_copy, map_location="cpu", weights_only=True)
    del raw["tensor_sha256"]
    torch.save(raw, ck_copy)
    ck = load_checkpoint(ck_copy)
    assert ck.category == "brick" and tensor_digest(ck.state_dicts) == tensor_digest(raw["state_dicts"])


# ------------------------------------------------------------------------------------------------ store


def _flip_in_chunk(path: Path, name: str, row: int) -> None:
    """Flip one byte in the middle of the stored bytes of chunk `row` of dataset `name` (chunked, one row each)."""
    import h5py

    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(row)
    data = bytearray(path.read_bytes())
    data[info.byte_offset + info.size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_numeric_datasets_carry_a_checksum(tmp_path):
    import h5py

    path = write_file(tmp_path / "f.h5", make_meta(), make_data(5, 4))
    with h5py.File(path, "r") as f:
        numeric = [f"{s}/{k}" for s in ("train", "test", "ref") for k in range(len(SHAPES))]
        numeric += ["test/masks", "test/labels", "test/mask_known"]
        assert all(f[name].fletcher32 for name in numeric), [n for n in numeric if not f[n].fletcher32]


@pytest.mark.parametrize("name, read", [("train/1", lambda ff: ff.train(1)), ("ref/0", lambda ff: ff.ref(0))])
def test_flipped_byte_in_a_feature_chunk_is_a_store_error(tmp_path, name, read):
    meta, data = make_meta(), make_data(5, 4)
    path = write_file(tmp_path / "f.h5", meta, data)
    _flip_in_chunk(path, name, 0)
    with FeatureFile.open(path, expected=meta) as ff:  # the header is intact: opening is fine
        with pytest.raises(StoreError) as err:
            read(ff)
        msg = str(err.value)
        assert str(path) in msg and "damaged" in msg and name in msg and "ed features --overwrite" in msg
        np.testing.assert_array_equal(ff.ref(1), data["ref"][1])  # the other datasets still read
        if name == "train/1":
            np.testing.assert_array_equal(ff.train(1, [1, 4]), data["train"][1][[1, 4]].astype(np.float16))


def test_flipped_byte_in_a_compressed_mask_chunk_is_a_store_error(tmp_path):
    path = write_file(tmp_path / "f.h5", make_meta(), make_data(5, 4))
    _flip_in_chunk(path, "test/masks", 2)
    with FeatureFile.open(path) as ff, pytest.raises(StoreError, match="test/masks"):
        ff.test_masks()


def test_file_without_checksums_still_reads(tmp_path):
    """A store file written before the checksums (no filters at all) opens and reads as before."""
    import h5py

    meta, data = make_meta(), make_data(5, 4)
    new = write_file(tmp_path / "new.h5", meta, data)
    old = tmp_path / "old.h5"
    with h5py.File(new, "r") as src, h5py.File(old, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name, obj):
            if isinstance(obj, h5py.Dataset):
                dst.create_dataset(name, data=obj[()], dtype=obj.dtype)

        src.visititems(copy)
    with h5py.File(old, "r") as f:
        assert not f["train/0"].fletcher32 and f["train/0"].chunks is None
    with FeatureFile.open(old, expected=meta) as ff:
        np.testing.assert_array_equal(ff.train(0), data["train"][0].astype(np.float16))
        np.testing.assert_array_equal(ff.test_masks(), data["masks"])
        assert ff.test_paths == data["test_paths"]


def test_training_on_a_damaged_store_entry_recomputes_it_and_says_why(tiny_configs, tiny_store, tmp_path):
    """ensure-features reads an entry's every chunk before it is reused: a flipped byte is recomputed (naming the
    dataset that fails its checksum), so no model is trained on wrong numbers."""
    from edcli.commands.train import run as run_train
    from edcli.track import NullTracker

    class Log(NullTracker):
        lines: list[str] = []

        def log(self, message: str) -> None:
            self.lines.append(message)

    data, bb, model, train = tiny_configs
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    (entry,) = sorted((store / "features" / "mvtec" / "brick").glob("*.h5"))
    _flip_in_chunk(entry, "train/0", 3)
    log = Log()
    out = tmp_path / "run"
    run_train(data=data, bb_cfg=bb, model_cfg=model, train_cfg=train, store=str(store), out=str(out), track=log)
    said = " ".join(log.lines)
    assert "recomputing" in said and "train/0 fails its checksum" in said and str(entry) in said, said
    with FeatureFile.open(entry) as ff:
        assert ff.damaged() is None
    assert (out / "checkpoints" / "brick.pt").exists()
