"""`ed train --select validation`: the hold-out, the validation defects, the choice without test labels, its
records in every output, and resume keeping the best-so-far state."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke

from edcli.data import defects
from edcli.errors import ConfigError, TrainingError


def test_split_is_disjoint_seeded_and_keeps_the_calibration_hold_out():
    from edcli.method.scoring import calibration_split
    from edcli.validation import split

    for n, seed in ((8, 7), (20, 0), (300, 3407)):
        fit, cal, val = split(n, 0.1, 0.1, seed)
        assert np.array_equal(cal, calibration_split(n, 0.1, seed)[1])  # the threshold's images do not move
        assert len(val) == max(1, round(0.1 * n)) and len(fit) == n - len(cal) - len(val)
        assert sorted(np.concatenate([fit, cal, val]).tolist()) == list(range(n))
        assert all(np.array_equal(a, b) for a, b in zip(split(n, 0.1, 0.1, seed), (fit, cal, val)))
    assert not np.array_equal(split(20, 0.1, 0.2, 0)[2], split(20, 0.1, 0.2, 1)[2])
    with pytest.raises(ConfigError, match="at least 2"):
        split(2, 0.5, 0.1, 0)
    with pytest.raises(ConfigError, match="--val-fraction"):
        split(20, 0.1, 0.0, 0)


def test_ties_keep_the_earlier_epoch():
    from edcli.validation import KEY, keep_best

    best: dict = {}
    for epoch, value in enumerate([0.5, 0.7, 0.7, 0.6], start=1):
        keep_best(
            best, {"val_score": value, "val_image_auroc": value, "val_pixel_auroc": value}, epoch, lambda e=epoch: e
        )
    assert best[KEY]["epoch"] == 2 and best[KEY]["state"] == 2


def _copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _permute_test_labels(store: Path) -> None:
    """Permute /test/labels and /test/masks of the store's feature file in place (a test may use h5py)."""
    import h5py

    (path,) = (store / "features" / "mvtec" / "brick").glob("*.h5")
    with h5py.File(path, "r+") as f:
        labels, masks = f["test/labels"][()], f["test/masks"][()]
        perm = np.roll(np.arange(len(labels)), 3)
        assert not np.array_equal(labels[perm], labels)
        f["test/labels"][...] = labels[perm]
        f["test/masks"][...] = masks[perm]


def _weights(ck) -> list[torch.Tensor]:
    return [v for sd in ck.state_dicts for v in sd.values()]


def test_choice_never_reads_test_labels_and_is_recorded_everywhere(tiny_data, tiny_store, tmp_path):
    from edcli.checkpoint import load_checkpoint
    from edcli.validation import COPIES

    store = _copy_store(tiny_store, tmp_path / "store")
    common = (
        "--data-path",
        tiny_data,
        "--category",
        "brick",
        "--backbone",
        "tf_efficientnet_lite0",
        "--image-size",
        64,
        "--epochs",
        3,
        "--batch-size",
        2,
        "--layers",
        2,
        "--heads",
        4,
        "--d-model",
        "auto",
        "--seed",
        7,
        "--device",
        "cpu",
        "--select",
        "validation",
        "--val-fraction",
        0.25,
        "--eval-every",
        1,
        "--quiet",
    )
    res = invoke("train", "--store", store, "--out", tmp_path / "a", *common)
    assert res.returncode == 0, res.stderr
    assert "chosen on validation" in res.stdout and "test-selected" not in res.stdout
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "brick.pt")
    # the validation curve is in the history, and the kept epoch is its first best
    curve = [h["val_score"] for h in a.history]
    assert len(curve) == 3 and all(
        0.0 <= h["val_image_auroc"] <= 1.0 and 0.0 <= h["val_pixel_auroc"] <= 1.0 for h in a.history
    )
    assert a.selection["epoch"] == int(np.argmax(curve)) + 1 and a.selection["value"] == max(curve)
    assert a.selection["select"] == "validation" and a.selection["test_selected"] is False
    assert "no test labels" in a.selection["how"] and a.selection["val_images"] == 2 * (
        1 + COPIES * len(defects.VALIDATION_KINDS)
    )
    held = set(a.selection["val_train_index"])
    assert len(held) == 2 and a.calibration["n"] == 1  # 8 train images: 1 for the threshold, 2 for validation
    run_json = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run_json["selection"]["select"] == "validation" and run_json["selection"]["test_selected"] is False

    ev = invoke("eval", "--run", tmp_path / "a", "--device", "cpu", "--quiet")
    assert ev.returncode == 0, ev.stderr
    assert "chosen on validation" in ev.stdout and "TEST-SELECTED" not in ev.stdout
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    row = metrics["categories"][0]
    assert row["epoch"] == a.selection["epoch"] and row["selection"] == "validation" and row["test_selected"] is False
    assert metrics["protocol"]["selection"] == ["validation"] and "warning" not in metrics["protocol"]
    assert row["image_auroc"] == pytest.approx(a.history[a.selection["epoch"] - 1]["image_auroc"], abs=1e-9)
    first = next(csv.DictReader((tmp_path / "a" / "metrics.csv").read_text().splitlines()))
    assert first["epoch"] == str(a.selection["epoch"]) and first["selection"] == "validation"
    assert first["test_selected"] == "False"
    for text in ((tmp_path / "a" / "metrics.json").read_text(), (tmp_path / "a" / "run.json").read_text()):
        assert "test-selected" not in text

    # the same training with permuted test labels and masks: the same epoch and the same weights
    permuted = _copy_store(store, tmp_path / "permuted")
    _permute_test_labels(permuted)
    b = _train_direct(permuted, tmp_path / "b.pt", _cfg(epochs=3, eval_every=1))
    assert [h["image_auroc"] for h in a.history] != [h["image_auroc"] for h in b.history]  # the labels did change
    assert b.selection["epoch"] == a.selection["epoch"]
    assert [h["val_score"] for h in b.history] == curve
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))


def _cfg(**kw):
    from edcli.config import TrainConfig

    return TrainConfig(
        batch_size=2, seed=7, device="cpu", select="validation", val_fraction=0.25, strategy="categories", **kw
    )


def _train_direct(store: Path, ckpt: Path, cfg, resume: bool = False, validation=None):
    """training.train_category on the store's files as `ed train` calls it, without building the backbone again."""
    from edcli.checkpoint import load_checkpoint
    from edcli.config import ModelConfig
    from edcli.store import FeatureFile, ValidationFile
    from edcli.track import NullTracker
    from edcli.training import train_category

    (fpath,) = (store / "features" / "mvtec" / "brick").glob("*.h5")
    if validation is None:
        (vpath,) = (store / "validation" / "mvtec" / "brick").glob("*.h5")
        validation = ValidationFile(vpath)
    with FeatureFile.open(fpath) as ff:
        train_category(
            ff,
            "brick",
            dict(ff.meta),
            {"model": ModelConfig(layers=2, heads=4, width="auto").to_dict()},
            ModelConfig(layers=2, heads=4, width="auto"),
            cfg,
            ckpt,
            torch.device("cpu"),
            NullTracker(),
            resume=resume,
            validation=validation,
        )
    return load_checkpoint(ckpt)


def _fake_validation(store: Path, cfg) -> Path:
    """A validation file from cached train features (no backbone): enough where the scores are scripted."""
    from edcli.store import FeatureFile, validation_path, write_validation
    from edcli.validation import settings, split

    (fpath,) = (store / "features" / "mvtec" / "brick").glob("*.h5")
    with FeatureFile.open(fpath) as ff:
        _, _, val = split(ff.n_train, cfg.calib_fraction, cfg.val_fraction, cfg.seed)
        feats = [ff.train(k, val) for k in range(ff.n_levels)]
        sett = settings(cfg, ff.n_train)
        path = validation_path(store, "mvtec", "brick", ff.meta, sett)
        n, S = len(val), int(ff.meta["image_size"])
        masks = np.zeros((n, S, S), np.uint8)
        rows = {
            "labels": [0] * n,
            "masks": masks,
            "kinds": ["good"] * n,
            "sources": [ff.train_paths[i] for i in val],
            "train_index": val,
        }
        write_validation(path, sett, list(ff.shapes), n, S, iter([(0, feats, rows)]))
    return path


def test_resume_keeps_the_best_so_far(tiny_store, tmp_path, monkeypatch):
    import copy

    from edcli import validation
    from edcli.store import ValidationFile
    from edcli.training import loop  # train_epoch as fit_epoch looks it up

    store = _copy_store(tiny_store, tmp_path / "store")
    cfg = _cfg(epochs=3)
    vf = ValidationFile(_fake_validation(store, cfg))
    curve = [0.9, 0.5, 0.4]  # epoch 1 is best: an interruption after it must not forget it
    calls = {"n": 0}

    def scripted(*a, **k):
        value = curve[calls["n"]]
        calls["n"] += 1
        return {"val_image_auroc": value, "val_pixel_auroc": value, "val_score": value, "val_seconds": 0.0}

    monkeypatch.setattr(validation, "score", scripted)
    full = _train_direct(store, tmp_path / "full" / "brick.pt", cfg, validation=vf)
    real, steps = loop.train_epoch, {"n": 0}

    def interrupted(*a, **k):
        steps["n"] += 1
        if steps["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    calls["n"] = 0
    monkeypatch.setattr(loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train_direct(store, tmp_path / "cut" / "brick.pt", cfg, validation=vf)
    state = torch.load(tmp_path / "cut" / "brick.resume.pt", weights_only=True)
    assert state["epoch"] == 2 and state["best"][validation.KEY]["epoch"] == 1
    monkeypatch.setattr(loop, "train_epoch", real)
    other = copy.copy(vf)
    other.settings = dict(vf.settings, val_fraction=0.4)
    with pytest.raises(TrainingError, match="another validation hold-out"):
        _train_direct(store, tmp_path / "cut" / "brick.pt", cfg, resume=True, validation=other)
    cut = _train_direct(store, tmp_path / "cut" / "brick.pt", cfg, resume=True, validation=vf)
    assert full.selection["epoch"] == cut.selection["epoch"] == 1
    assert [h["val_score"] for h in cut.history] == curve
    assert all(torch.equal(x, y) for x, y in zip(_weights(full), _weights(cut)))
