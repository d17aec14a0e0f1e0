"""What each `ed` command hands to its `commands.<cmd>.run`: the options, parsed into the config dataclasses and
plain values, as keyword arguments. The run is replaced by a recorder (no work runs), as fastapi-cli's tests patch
the function below the command and assert the exact arguments it received."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Result, invoke

from edcli.config import BackboneConfig, DataConfig, EvalConfig, ModelConfig, TrainConfig
from edcli.ui import Tracker


@pytest.fixture(autouse=True)
def _in_tmp(monkeypatch, tmp_path):
    """The relative paths of the command lines below are under tmp_path (nothing is written: the runs are fakes)."""
    monkeypatch.chdir(tmp_path)


def ed(line: str, input: str | None = None) -> Result:
    """`ed` with one command line (no quoting: the tests use no spaces in their arguments)."""
    res = invoke(*line.split(), input=input)
    assert res.returncode == 0, res.stderr
    return res


def recorder(monkeypatch: pytest.MonkeyPatch, command: str, result: Any) -> list[dict[str, Any]]:
    """Replace `edcli.commands.<command>.run` (the name the CLI imports when the command runs) by a keyword-only
    stand-in that records its arguments and returns `result`."""
    calls: list[dict[str, Any]] = []

    def run(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return result

    monkeypatch.setattr(f"edcli.commands.{command}.run", run)
    return calls


def handed(calls: list[dict[str, Any]], quiet: bool) -> dict[str, Any]:
    """The one call's keyword arguments less `track`, once `track` is checked to be a progress tracker that is quiet
    exactly when --quiet was given."""
    assert len(calls) == 1, calls
    kwargs = dict(calls[0])
    track = kwargs.pop("track")
    assert isinstance(track, Tracker) and track.quiet is quiet
    return kwargs


def test_distmaps_hands_off_store_backbone_size_levels_and_grids(monkeypatch):
    res = {"path": "s/distmaps.h5", "grids": ["16x16", "8x8"], "tokens": [256, 64], "bytes": 10}
    calls = recorder(monkeypatch, "distmaps", res)
    got = ed("distmaps --store s --backbone resnet18 --image-size 96 --levels 1,2 --grid 16 --grid 8 --json")
    assert calls == [{"store": "s", "backbone": "resnet18", "image_size": 96, "levels": (1, 2), "grids": (16, 8)}]
    assert json.loads(got.stdout) == res


def test_features_hands_off_data_and_backbone_configs(monkeypatch):
    calls = recorder(monkeypatch, "features", [])
    got = ed(
        "features --data-path photos --dataset folder -c screws -c nuts --store s --backbone resnet18 "
        "--weights w.pth --image-size 96 --levels 1,2 --normal-name ok --test-fraction 0.3 --seed 5 --device cpu "
        "--batch-size 4 --num-workers 1 --overwrite --quiet --json"
    )
    assert handed(calls, quiet=True) == {
        "data": DataConfig(
            dataset="folder",
            data_path="photos",
            categories=("screws", "nuts"),
            image_size=96,
            normal_name="ok",
            test_fraction=0.3,
            split_seed=5,
        ),
        "bb_cfg": BackboneConfig(name="resnet18", levels=(1, 2), weights="w.pth", random_init=False),
        "store": "s",
        "device": "cpu",
        "batch_size": 4,
        "overwrite": True,
        "num_workers": 1,
    }
    assert json.loads(got.stdout) == []


def test_train_hands_off_every_config(monkeypatch):
    calls = recorder(monkeypatch, "train", [])
    ed(
        "train --data-path mvtec -c brick --store s --out run --backbone resnet18 --random-init --image-size 96 "
        "--levels 1,2 --epochs 3 --batch-size 2 --lr 0.001 --seed 7 --no-inter --layers 2 --heads 4 "
        "--d-model 64,128 --attn-out-proj --device cpu --precision bf16 --eval-every 2 --select best-image "
        "--val-fraction 0.2 --calib-fraction 0.05 --strategy categories --jobs 2 --optimizer per-level "
        "--lr-schedule cosine --warmup-epochs 1 --average swa --ema-decay 0.9 --swa-start 2 --score rec-kl --resume "
        "--num-workers 1 --json"
    )
    assert handed(calls, quiet=False) == {
        # --seed also picks the test split of a folder without test/ (split_seed)
        "data": DataConfig(data_path="mvtec", categories=("brick",), image_size=96, split_seed=7),
        "bb_cfg": BackboneConfig(name="resnet18", levels=(1, 2), random_init=True),
        "model_cfg": ModelConfig(inter=False, layers=2, heads=4, d_model=(64, 128), attn_out_proj=True),
        "train_cfg": TrainConfig(
            epochs=3,
            batch_size=2,
            lr=0.001,
            seed=7,
            device="cpu",
            precision="bf16",
            eval_every=2,
            select="best-image",
            calib_fraction=0.05,
            val_fraction=0.2,
            strategy="categories",
            jobs=2,
            optimizer="per-level",
            lr_schedule="cosine",
            warmup_epochs=1.0,
            average="swa",
            ema_decay=0.9,
            swa_start=2,
        ),
        "eval_cfg": EvalConfig(score="rec-kl"),
        "store": "s",
        "out": "run",
        "resume": True,
        "num_workers": 1,
        "overwrite": False,
    }


def test_eval_hands_off_the_eval_config_and_overrides(monkeypatch):
    res = {"rows": [], "mean": {"category": "mean"}}
    calls = recorder(monkeypatch, "eval", res)
    got = ed(
        "eval --run run --data-path photos --dataset folder -c brick --store s --reducer topk:0.05 "
        "--pixel-map smoothed --device cpu --precision fp16 --batch-size 3 --save-maps --num-workers 1 --score rec "
        "--json"
    )
    assert handed(calls, quiet=False) == {
        "run_dir": "run",
        "checkpoint": None,
        "eval_cfg": EvalConfig(reducer="topk:0.05", pixel_map="smoothed", device="cpu", precision="fp16", batch_size=3),
        "data_path": "photos",
        "dataset": "folder",
        "categories": ("brick",),
        "store": "s",
        "save_maps": True,
        "num_workers": 1,
        "score": "rec",
    }
    assert json.loads(got.stdout) == res


def test_infer_hands_off_inputs_options_and_stdin(monkeypatch):
    calls: list[dict[str, Any]] = []
    piped: list[str] = []

    def run(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        piped.append(kwargs["stdin"].read())  # what the command reads for the `-` input
        return {"rows": []}

    monkeypatch.setattr("edcli.commands.infer.run", run)
    got = ed(
        "infer bottle.pt a.png - --out pred --batch-size 2 --device cpu --precision fp16 --recursive "
        "--no-save-heatmaps --threshold 0.5 --num-workers 0 --quiet --json",
        input="shots/b.png\n",
    )
    kwargs = handed(calls, quiet=True)
    assert piped == ["shots/b.png\n"]  # stdin is the stream piped into `ed`
    del kwargs["stdin"]
    assert callable(kwargs.pop("on_row"))  # rows stream to stdout as they are scored
    assert kwargs == {
        "checkpoint": "bottle.pt",
        "inputs": ["a.png", "-"],
        "out": "pred",
        "batch_size": 2,
        "device": "cpu",
        "precision": "fp16",
        "recursive": True,
        "save_heatmaps": "none",
        "save_raw_maps": False,
        "threshold": 0.5,
        "num_workers": 0,
        "resume": False,
        "overwrite": False,
        "shard": None,
        "max_pixels": None,
        "engine": "torch",
    }
    assert json.loads(got.stdout) == []


def test_export_hands_off_out_opset_and_batch(monkeypatch):
    res = {"path": "m.onnx", "bytes": 2_000_000, "opset": 18, "batch": 4}
    calls = recorder(monkeypatch, "export", res)
    got = ed("export bottle.pt --out m.onnx --opset 18 --batch 4 --quiet --json")
    # --batch is "N|dynamic": the command parses it
    assert handed(calls, quiet=True) == {"checkpoint": "bottle.pt", "out": "m.onnx", "opset": 18, "batch": "4"}
    assert json.loads(got.stdout) == res


def test_report_hands_off_run_and_out(monkeypatch):
    calls = recorder(monkeypatch, "report", {"report": "page.html", "bytes": 2048, "categories": ["brick"]})
    got = ed("report run --out page.html --quiet")
    assert handed(calls, quiet=True) == {"run_dir": "run", "out": "page.html"}
    assert "wrote page.html (2.0 KiB, 1 categories)" in got.stdout


def test_demo_hands_off_out_categories_quick_and_device(monkeypatch):
    metrics = ("image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max", "test_images", "seconds")
    row = {"category": "brick", **dict.fromkeys(metrics, 1)}
    ev = {
        "protocol": {"pixel_map": "raw", "reducer": "max", "resolution": "128x128"},
        "rows": [row],
        "mean": dict(row, category="mean"),
        "metrics_json": "metrics.json",
        "metrics_csv": "metrics.csv",
    }
    calls = recorder(monkeypatch, "demo", {"eval": ev, "summary": "demo folder: d"})
    got = ed("demo --out d -c brick -c grass --quick --device cpu")
    want = {"out": "d", "categories": ("brick", "grass"), "quick": True, "seed": 3407, "device": "cpu"}
    assert handed(calls, quiet=False) == want
    assert "demo folder: d" in got.stdout and "wrote metrics.json and metrics.csv" in got.stdout
