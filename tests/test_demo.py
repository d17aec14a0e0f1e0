"""`ed demo --quick` end to end: the files it must leave and what it prints."""

from __future__ import annotations

import json

import pytest
from conftest import invoke


@pytest.mark.slow
def test_demo_quick_leaves_every_artefact(tmp_path):
    out = tmp_path / "demo"
    res = invoke("demo", "--quick", "--out", out, "--device", "cpu")
    assert res.returncode == 0, res.stderr[-3000:]
    cats = sorted(p.name for p in (out / "data").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert cats
    assert (out / "store" / "distmaps.h5").is_file()
    for cat in cats:
        assert len(list((out / "store" / "features" / "mvtec" / cat).glob("*.h5"))) == 1
        assert (out / "run" / "checkpoints" / f"{cat}.pt").is_file()
        assert not (out / "run" / "checkpoints" / f"{cat}.resume.pt").exists()
        pred = out / "predictions" / cat
        rows = [json.loads(ln) for ln in (pred / "predictions.jsonl").read_text().splitlines()]
        assert rows and all(r["error"] == "" and r["label"] in ("normal", "anomalous") for r in rows)
        assert (pred / "predictions.csv").is_file()
        assert len(list((pred / "heatmaps").glob("*.png"))) == len(rows)
        assert len(list((pred / "masks").glob("*.png"))) == len(rows)
        assert not list((pred / "maps").glob("*.npy"))  # raw maps only on request (--save-raw-maps)
        maps = out / "run" / "maps" / cat
        assert (maps / "good").is_dir() and list(maps.glob("*/*.png")) and list(maps.glob("*/*.npy"))
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    assert [r["category"] for r in metrics["categories"]] == cats
    assert (out / "run" / "metrics.csv").read_text().strip().splitlines()[-1].startswith("mean,")
    assert "image AUROC" in res.stdout and "mean" in res.stdout and "ed infer" in res.stdout
