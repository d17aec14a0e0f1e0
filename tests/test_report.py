"""What a person looks at: `ed eval`'s per-image CSVs against metrics.json, the heat-map panels, and `ed report`'s
HTML page, checked for self-containment and, in headless Chromium, for rendering."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import find_chromium, render
from conftest import invoke


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_run) -> Path:
    """A copy of the tiny run, evaluated (no --save-maps) and reported."""
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(tiny_run / "checkpoints", run / "checkpoints")
    res = invoke("eval", "--run", run, "--device", "cpu", "--json")
    assert res.returncode == 0, res.stderr
    res = invoke("report", run, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["missing_panels"] == []
    return run


def _csv(run: Path, cat: str = "brick") -> list[dict[str, str]]:
    from edcli.report import read_csv_rows

    return read_csv_rows(run / "predictions" / f"{cat}.csv")


def test_per_image_csv_agrees_with_metrics_json(evaluated):
    from sklearn.metrics import roc_auc_score

    metrics = json.loads((evaluated / "metrics.json").read_text())
    row = metrics["categories"][0]
    rows = _csv(evaluated)
    assert len(rows) == row["test_images"]
    y = np.array([r["label"] == "anomalous" for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    assert roc_auc_score(y, s) == pytest.approx(row["image_auroc"], abs=1e-12)
    thr = row["threshold"]
    assert all(float(r["threshold"]) == thr for r in rows)
    pred = np.array([r["predicted"] == "anomalous" for r in rows])
    np.testing.assert_array_equal(pred, s > thr)
    assert row["fp"] == int(np.sum(pred & ~y)) and row["fn"] == int(np.sum(~pred & y))
    assert row["tpr"] == pytest.approx(pred[y].mean()) and row["fpr"] == pytest.approx(pred[~y].mean())
    norm = np.array([float(r["normalized_score"]) for r in rows])
    assert np.all((norm > 0.5) == (s > thr))  # the threshold sits at 0.5
    assert {r["defect_type"] for r in rows if r["label"] == "normal"} == {"good"}
    # without --save-maps: panels of the 3 lowest-scored anomalous and the 3 highest-scored normal images only
    drawn = [r for r in rows if r["heatmap"]]
    assert len(drawn) == min(3, int(y.sum())) + min(3, int((~y).sum()))
    assert all((evaluated / r["heatmap"]).is_file() for r in drawn)
    lowest_anomalous = min((r for r in rows if r["label"] == "anomalous"), key=lambda r: float(r["score"]))
    assert lowest_anomalous["heatmap"]
    csv_head = (evaluated / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"threshold", "tpr", "fpr", "fp", "fn"} <= set(csv_head)


def test_panel_layout_and_fixed_colour_scale():
    from edcli.report import color_range, heatmap_panel

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    amap = rng.random((32, 48)).astype(np.float32)
    with_gt = heatmap_panel(img, amap, 0.0, 1.0, amap > 0.5, gt_mask=amap > 0.9, title="a.png score 0.5", threshold=0.5)
    without = heatmap_panel(img, amap, 0.0, 1.0, amap > 0.5, title="a.png", threshold=0.5)
    assert with_gt.dtype == np.uint8 and with_gt.shape[0] == without.shape[0]
    assert with_gt.shape[1] > without.shape[1]  # the ground-truth tile
    assert len(np.unique(with_gt.reshape(-1, 3), axis=0)) > 100  # drawn, not blank
    assert color_range({"threshold": 0.3}, (5.0, 9.0)) == (0.0, 0.6)  # the threshold in the middle
    assert color_range(None, (5.0, 9.0)) == (5.0, 9.0)


def test_report_is_one_self_contained_page(evaluated):
    from PIL import Image

    text = (evaluated / "report.html").read_text()
    bare = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "DATA", text)  # base64 may hold '//'
    assert not re.search(r"https?:|ftp:|file:|//[a-z]|url\(|@import", bare, flags=re.I)  # nothing to fetch
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', text)
    hrefs = re.findall(r'href="([^"]*)"', text)
    assert all(h.startswith("#") for h in hrefs)
    assert "<script" not in text and "<link" not in text
    # curves, histogram, losses, and the worst images' panels; each one a PNG that decodes
    assert len(srcs) >= 3 + 1
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).size[0] > 0
    metrics = json.loads((evaluated / "metrics.json").read_text())
    for needle in (
        "Protocol",
        "brick",
        metrics["protocol"]["weights_sha256"],
        "Adam",
        "ROC and PR curves",
        "Worst false negatives",
        "Worst false positives",
        "score histograms",
        "training curves",
    ):
        assert needle in text, needle


def test_report_without_eval_says_what_to_run(tmp_path, tiny_run):
    res = invoke("report", tmp_path)
    assert res.returncode == 1 and "ed eval --run" in res.stderr


@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    from PIL import Image

    # a page with known faults first proves the checks can fail
    (tmp_path / "bad.html").write_text(
        '<html><body><p>x</p><img src="missing.png"><script>console.error("boom")</script></body></html>'
    )
    report, bad = render([evaluated / "report.html", tmp_path / "bad.html"])
    assert bad["errors"] and any(i["naturalWidth"] == 0 for i in bad["images"])
    assert report["errors"] == []
    assert report["images"] and all(i["complete"] and i["naturalWidth"] > 0 for i in report["images"])
    assert all(u.startswith(("file:", "data:")) for u in report["requests"])
    shot = np.asarray(Image.open(io.BytesIO(report["screenshot"])).convert("RGB"))
    assert shot.shape[0] == report["height"] > 900  # the whole page, longer than one screen
    colours, counts = np.unique(shot.reshape(-1, 3)[::7], axis=0, return_counts=True)
    assert len(colours) > 200 and counts.max() < 0.97 * counts.sum()  # not blank, not a single colour


def test_csv_cells_a_spreadsheet_would_evaluate_are_escaped_and_json_stays_raw(tmp_path):
    from edcli.report import read_csv_rows, write_predictions

    names = ['=HYPERLINK("http://x").png', "+1.png", "-2.png", "@sum.png", "plain.png"]
    rows = [{"path": n, "score": -0.5, "label": "normal", "error": ""} for n in names]
    cpath, jpath = write_predictions(tmp_path, rows)
    lines = cpath.read_text().splitlines()[1:]
    assert [ln.split(",")[0].strip('"') for ln in lines][:4] == [
        '\'=HYPERLINK(""http://x"").png',
        "'+1.png",
        "'-2.png",
        "'@sum.png",
    ]
    assert lines[4].startswith("plain.png,-0.5,")  # numbers (a negative score too) are written as they are
    assert [r["path"] for r in read_csv_rows(cpath)] == names  # read back raw
    assert [json.loads(ln)["path"] for ln in jpath.read_text().splitlines()] == names
