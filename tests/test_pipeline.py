"""End-to-end behaviour of the pipeline functions on a tiny generated dataset (CPU, real lite0 weights)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edcli.errors import StoreError


def _store_file(store: Path, category: str = "brick") -> Path:
    files = sorted((store / "features" / "mvtec" / category).glob("*.h5"))
    assert len(files) == 1
    return files[0]


def test_reference_features_are_the_mean_of_cached_train_features(tiny_store):
    from edcli.store import FeatureFile

    with FeatureFile.open(_store_file(tiny_store)) as ff:
        assert ff.n_train == 8 and ff.n_test == 3 + 5
        for k in range(ff.n_levels):
            train = ff.train(k)  # (N, C, H, W)
            mean = train.astype(np.float64).mean(0).reshape(train.shape[1], -1)
            np.testing.assert_allclose(ff.ref(k), mean, rtol=0, atol=1e-5)
        assert ff.meta["backbone"] == "tf_efficientnet_lite0" and tuple(ff.meta["levels"]) == (2, 3)
        assert set(ff.test_defect_types) == {"good", "scratch", "hole", "stain", "patch", "distortion"}
        assert ff.test_masks().shape == (8, 64, 64) and ff.test_masks()[ff.test_labels == 1].any()


def test_features_rerun_skips_and_overwrite_redoes(tiny_configs, tiny_store):
    from edcli.commands.features import run as run_features

    data, bb, _, _ = tiny_configs
    rows = run_features(data=data, bb_cfg=bb, store=str(tiny_store), device="cpu")
    assert [r["status"] for r in rows] == ["cached"]
    before = _store_file(tiny_store).stat().st_mtime_ns
    rows = run_features(data=data, bb_cfg=bb, store=str(tiny_store), device="cpu", overwrite=True)
    assert [r["status"] for r in rows] == ["written"] and _store_file(tiny_store).stat().st_mtime_ns != before


@pytest.mark.parametrize("field,value", [("backbone", "wide_resnet50_2"), ("levels", [1, 2]), ("image_size", 96)])
def test_store_refuses_other_settings(tiny_store, field, value):
    from edcli.store import FeatureFile

    path = _store_file(tiny_store)
    with FeatureFile.open(path) as ff:
        expected = dict(ff.meta)
    expected[field] = value
    with pytest.raises(StoreError, match=field):
        FeatureFile.open(path, expected)


def test_other_image_size_gets_its_own_file(tiny_configs, tiny_store):
    from edcli.features import build_context
    from edcli.store import features_path

    data, bb, _, _ = tiny_configs
    ctx = build_context(data, bb, "cpu")
    p64 = features_path(tiny_store, "mvtec", "brick", dict(ctx.meta, category="brick"))
    ctx96 = build_context(replace(data, image_size=96), bb, "cpu")
    assert features_path(tiny_store, "mvtec", "brick", dict(ctx96.meta, category="brick")) != p64


def test_checkpoint_rebuilds_the_model_from_the_file_alone(tiny_run, tiny_store):
    from edcli.checkpoint import build_model, load_checkpoint

    ck = load_checkpoint(tiny_run / "checkpoints" / "brick.pt")
    raw = torch.load(tiny_run / "checkpoints" / "brick.pt", weights_only=True)
    assert raw["format"] == "edcli-checkpoint" and ck.complete and ck.epochs_done == 2
    model = build_model(ck)
    assert len(model.levels) == 2 and model.levels[0].ref.shape == (40, 64)
    for level, sd in zip(model.levels, ck.state_dicts):
        for k, v in level.state_dict().items():
            assert torch.equal(v, sd[k])
    assert ck.backbone["backbone"] == "tf_efficientnet_lite0" and ck.backbone["random_init"] is False
    assert ck.calibration["source"] == "held-out" and ck.calibration["n"] == 1
    assert len(ck.history) == 2 and all(np.isfinite(h["rec"]) for h in ck.history)
    assert not (tiny_store / "distmaps.h5").exists()  # the model computes its own; only `ed distmaps` exports them


def test_same_seed_same_losses(tiny_configs, tiny_store, tmp_path):
    from edcli.commands.train import run as run_train

    data, bb, model, train = tiny_configs
    a = run_train(
        data=data, bb_cfg=bb, model_cfg=model, train_cfg=train, store=str(tiny_store), out=str(tmp_path / "a")
    )
    b = run_train(
        data=data, bb_cfg=bb, model_cfg=model, train_cfg=train, store=str(tiny_store), out=str(tmp_path / "b")
    )
    assert a[0]["rec"] == b[0]["rec"] and a[0]["inter1"] == b[0]["inter1"]


def test_resume_after_interruption_gives_the_same_weights(tiny_configs, tiny_store, tmp_path, monkeypatch):
    from edcli.checkpoint import load_checkpoint
    from edcli.commands.train import run as run_train
    from edcli.training import loop  # train_epoch as fit_epoch looks it up

    data, bb, model, train = tiny_configs
    train = replace(train, epochs=3)
    run_train(data=data, bb_cfg=bb, model_cfg=model, train_cfg=train, store=str(tiny_store), out=str(tmp_path / "full"))
    calls = {"n": 0}
    real = loop.train_epoch

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_train(
            data=data, bb_cfg=bb, model_cfg=model, train_cfg=train, store=str(tiny_store), out=str(tmp_path / "cut")
        )
    assert (tmp_path / "cut" / "checkpoints" / "brick.resume.pt").exists()
    assert not (tmp_path / "cut" / "checkpoints" / "brick.pt").exists()
    monkeypatch.setattr(loop, "train_epoch", real)
    run_train(
        data=data,
        bb_cfg=bb,
        model_cfg=model,
        train_cfg=train,
        store=str(tiny_store),
        out=str(tmp_path / "cut"),
        resume=True,
    )
    full = load_checkpoint(tmp_path / "full" / "checkpoints" / "brick.pt")
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "brick.pt")
    for a, b in zip(full.state_dicts, cut.state_dicts):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert [h["rec"] for h in full.history] == [h["rec"] for h in cut.history]


def test_training_lowers_the_reconstruction_loss(tiny_configs, tiny_store, tmp_path):
    from edcli.checkpoint import load_checkpoint
    from edcli.commands.train import run as run_train

    data, bb, model, train = tiny_configs
    run_train(
        data=data,
        bb_cfg=bb,
        model_cfg=model,
        train_cfg=replace(train, epochs=6),
        store=str(tiny_store),
        out=str(tmp_path),
    )
    hist = load_checkpoint(tmp_path / "checkpoints" / "brick.pt").history
    recs = [h["rec"] for h in hist]
    assert all(b < a for a, b in zip(recs, recs[1:])) and recs[-1] < 0.9 * recs[0], recs


def test_eval_writes_metrics_with_protocol(tiny_run):
    from edcli.commands.eval import run as run_eval
    from edcli.config import EvalConfig

    res = run_eval(run_dir=str(tiny_run), checkpoint=None, eval_cfg=EvalConfig(device="cpu"))
    assert [r["category"] for r in res["rows"]] == ["brick"]
    row = res["rows"][0]
    for key in ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max"):
        assert row[key] is None or 0.0 <= row[key] <= 1.0
    saved = json.loads((tiny_run / "metrics.json").read_text())
    proto = saved["protocol"]
    assert proto["reducer"] == "max" and proto["pixel_map"].startswith("raw") and proto["resolution"] == "64x64"
    assert proto["seed"] == 7 and proto["backbone"] == "tf_efficientnet_lite0" and len(proto["weights_sha256"]) == 64
    assert proto["optimizer"] == "reference" and proto["lr_schedule"] == "constant" and proto["d_model"] == "64/64"
    assert saved["categories"][0]["epoch"] == 2 and saved["categories"][0]["selection"] == "last"
    lines = (tiny_run / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 1 + 1 and lines[-1].startswith("mean,")


def test_infer_scores_equal_eval_scores(tiny_run, tiny_store, tmp_path):
    from edcli.checkpoint import build_model, load_checkpoint
    from edcli.commands.infer import run as run_infer
    from edcli.config import EvalConfig
    from edcli.evaluate import read_from, score_cached
    from edcli.store import FeatureFile

    ck_path = tiny_run / "checkpoints" / "brick.pt"
    model = build_model(load_checkpoint(ck_path))
    with FeatureFile.open(_store_file(tiny_store)) as ff:
        split = score_cached(model, read_from(ff, "test"), ff.n_test, 64, torch.device("cpu"), "fp32", EvalConfig())
        paths = list(ff.test_paths)
    res = run_infer(checkpoint=str(ck_path), inputs=paths, out=str(tmp_path), device="cpu", num_workers=0, batch_size=3)
    got = np.array([r["score"] for r in res["rows"]])
    assert [r["path"] for r in res["rows"]] == paths
    np.testing.assert_allclose(got, split.scores, rtol=1e-5, atol=1e-7)


def test_test_selection_is_marked_everywhere(tiny_configs, tiny_store, tmp_path):
    from edcli.checkpoint import load_checkpoint
    from edcli.commands.eval import run as run_eval
    from edcli.commands.train import run as run_train
    from edcli.config import EvalConfig

    data, bb, model, train = tiny_configs
    run_train(
        data=data,
        bb_cfg=bb,
        model_cfg=model,
        train_cfg=replace(train, epochs=3, eval_every=1, select="best-image"),
        store=str(tiny_store),
        out=str(tmp_path),
    )
    ck = load_checkpoint(tmp_path / "checkpoints" / "brick.pt")
    assert ck.selection["test_selected"] is True and ck.selection["select"] == "best-image"
    assert all("image_auroc" in h for h in ck.history) and 1 <= ck.selection["epoch"] <= 3
    best = max(h["image_auroc"] for h in ck.history)
    assert ck.history[ck.selection["epoch"] - 1]["image_auroc"] == best
    res = run_eval(run_dir=str(tmp_path), checkpoint=None, eval_cfg=EvalConfig(device="cpu"))
    assert res["protocol"]["test_selected"] is True and "test-selected" in res["protocol"]["warning"]
    assert res["rows"][0]["image_auroc"] == pytest.approx(best, abs=1e-9)
    csv = (tmp_path / "metrics.csv").read_text()
    assert "test_selected" in csv.splitlines()[0] and "True" in csv.splitlines()[1]


def test_select_without_eval_every_is_refused(tiny_configs, tiny_store, tmp_path):
    from edcli.commands.train import run as run_train
    from edcli.errors import ConfigError

    data, bb, model, train = tiny_configs
    with pytest.raises(ConfigError, match="--eval-every"):
        run_train(
            data=data,
            bb_cfg=bb,
            model_cfg=model,
            train_cfg=replace(train, select="best-pixel"),
            store=str(tiny_store),
            out=str(tmp_path),
        )


def test_eval_without_cached_features_runs_the_backbone_and_agrees(tiny_run, tmp_path):
    from edcli.commands.eval import run as run_eval
    from edcli.config import EvalConfig

    cached = run_eval(run_dir=str(tiny_run), checkpoint=None, eval_cfg=EvalConfig(device="cpu"))["rows"][0]
    fresh = run_eval(
        run_dir=str(tiny_run),
        checkpoint=None,
        eval_cfg=EvalConfig(device="cpu"),
        store=str(tmp_path / "empty-store"),
    )["rows"][0]
    assert list((tmp_path / "empty-store" / "features" / "mvtec" / "brick").glob("*.h5"))
    for key in ("image_auroc", "pixel_auroc", "aupro"):
        assert fresh[key] == pytest.approx(cached[key], abs=1e-6)
