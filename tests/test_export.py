"""The Python API (edcli.Detector), the exportable score path, and `ed export` to ONNX with score parity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import invoke
from PIL import Image


def _ck(tiny_run: Path) -> Path:
    return tiny_run / "checkpoints" / "brick.pt"


def _test_images(tiny_data: Path) -> list[str]:
    return sorted(str(p) for p in (tiny_data / "brick" / "test").glob("*/*.png"))


# ------------------------------------------------------------------------------------------- the exportable path


@pytest.mark.parametrize("arch,inter", [("ed", True), ("ed", False), ("fod", True)])
def test_portable_level_score_equals_the_fast_score_mode(arch, inter, one_thread):
    from edcli.config import ModelConfig
    from edcli.method.model import build_ed_model
    from edcli.method.portable import level_score
    from edcli.method.prior import grid_axes
    from edcli.method.scoring import reconstruction_score, token_score

    torch.manual_seed(0)
    grid = (4, 6)
    model = build_ed_model(
        [40], [grid], [torch.randn(40, 24)], ModelConfig(layers=2, heads=4, arch=arch, inter=inter, d_model=(32,))
    ).eval()
    level = model.levels[0]
    x = torch.randn(3, 24, 40)
    for score in ("ed", "rec", "rec-kl"):  # every --score
        with torch.no_grad():
            out = level(x, branches="score")
            want = token_score(reconstruction_score(out.recon, x), out.score_kl, score)
            got = level_score(level, x, grid_axes(level.dx, level.dy), score)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size,sigma", [(64, 4.0), (20, 4.0), (7, 4.0), (33, 1.5)])
def test_gaussian_smooth_equals_scipy_reflect(size, sigma):
    from scipy.ndimage import gaussian_filter

    from edcli.method.scoring import GaussianSmooth

    maps = np.random.default_rng(size).random((2, size, size)).astype(np.float32) * 5
    got = GaussianSmooth(size, sigma)(torch.from_numpy(maps)).numpy()
    want = np.stack([gaussian_filter(m, sigma=sigma, truncate=4.0, mode="reflect") for m in maps])
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)  # radius 16 > size 7: repeated reflection


@pytest.mark.parametrize("reducer", ["max", "mean", "topk:0.01", "topk:0.3"])
def test_reduce_maps_equals_numpy(reducer):
    from edcli.method.scoring import reduce_maps

    maps = np.random.default_rng(1).random((3, 16, 16)).astype(np.float32)
    flat = maps.reshape(3, -1).astype(np.float64)
    if reducer == "max":
        want = flat.max(1)
    elif reducer == "mean":
        want = flat.mean(1)
    else:  # the mean of the top round(R * pixels) values, at least one
        k = max(1, int(round(float(reducer.split(":")[1]) * flat.shape[1])))
        want = np.sort(flat, axis=1)[:, -k:].mean(1)
    np.testing.assert_allclose(reduce_maps(torch.from_numpy(maps), reducer).numpy(), want, rtol=1e-6)


# ------------------------------------------------------------------------------------------- the Python API


def test_import_edcli_is_light_and_names_the_api():
    code = "import edcli, sys; assert 'torch' not in sys.modules, 'torch imported'; print(edcli.__all__)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert {"Detector", "Prediction", "__version__"} <= set(eval(res.stdout))
    import edcli
    from edcli.detector import Detector, Prediction

    assert edcli.Detector is Detector and edcli.Prediction is Prediction
    with pytest.raises(AttributeError):
        edcli.NoSuchThing  # noqa: B018


def test_detector_takes_every_input_type_and_writes_nothing(tiny_run, tiny_data, tmp_path, monkeypatch):
    from edcli import Detector, Prediction
    from edcli.commands.infer import run as run_infer
    from edcli.errors import DataError

    paths = _test_images(tiny_data)
    rows = run_infer(
        checkpoint=str(_ck(tiny_run)),
        inputs=paths,
        out=str(tmp_path / "infer"),
        device="cpu",
        num_workers=0,
        save_heatmaps=False,
    )["rows"]
    monkeypatch.chdir(tmp_path / "infer")
    before = sorted(Path(".").rglob("*"))
    det = Detector.load(_ck(tiny_run), device="cpu")
    preds = det.predict(paths, batch_size=8)  # infer's batches: bit-equal numbers
    assert isinstance(preds, list) and all(isinstance(p, Prediction) for p in preds)
    # ed infer is built on the Detector: the same numbers
    assert [p.score for p in preds] == [r["score"] for r in rows]
    assert [p.normalized_score for p in preds] == [r["normalized_score"] for r in rows]
    assert [p.label for p in preds] == [r["label"] for r in rows] and preds[0].threshold == rows[0]["threshold"]

    one = det.predict(paths[0])
    # one image at a time: the same maths, batched differently (float rounding only)
    assert isinstance(one, Prediction) and one.score == pytest.approx(preds[0].score, rel=1e-5) and one.path == paths[0]
    with Image.open(paths[0]) as im:
        pil = im.copy()
    rgb = np.asarray(pil.convert("RGB"))
    assert det.predict(pil).score == one.score
    by_array = det.predict(rgb)
    assert by_array.score == one.score and by_array.path is None
    np.testing.assert_array_equal(by_array.raw_map, one.raw_map)
    grey = np.asarray(pil.convert("L"))
    assert det.predict(grey).score == det.predict(pil.convert("L")).score
    # a non-square image: the map and mask come back at its size, the mask from the smoothed map and threshold
    wide = np.concatenate([rgb, rgb[:, :20]], axis=1)
    p = det.predict(wide)
    assert p.anomaly_map.shape == p.mask.shape == wide.shape[:2] and p.raw_map.shape == (64, 64)
    np.testing.assert_array_equal(p.mask, p.anomaly_map > p.threshold)
    assert p.mask.dtype == bool and p.anomaly_map.max() == pytest.approx(p.smoothed_map.max(), rel=0.05)
    for bad in (rgb.astype(np.float32), rgb[..., :2].copy(), 3.0):
        with pytest.raises(DataError):
            det.predict(bad)
    assert sorted(Path(".").rglob("*")) == before  # predict writes nothing


def test_detector_threshold_override(tiny_run):
    from edcli import Detector

    det = Detector.load(_ck(tiny_run), device="cpu", threshold=0.0)
    assert det.threshold == 0.0 and det.threshold_origin.startswith("--threshold")


# ------------------------------------------------------------------------------------------- ed export, ONNX Runtime


def test_export_without_the_extra_says_how_to_install(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    res = invoke("export", _ck(tiny_run), "--out", tmp_path / "m.onnx")
    assert res.returncode == 1 and "pip install 'edcli[onnx]'" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.onnx").exists()


def test_export_rejects_a_bad_batch(tiny_run, tmp_path):
    pytest.importorskip("onnx", reason="ed export needs the onnx extra")
    res = invoke("export", _ck(tiny_run), "--out", tmp_path / "m.onnx", "--batch", "zero")
    assert res.returncode == 1 and "--batch" in res.stderr


@pytest.mark.slow
def test_onnx_parity_with_the_torch_path(tiny_run, tiny_data, tmp_path, one_thread):
    pytest.importorskip("onnxruntime", reason="the ONNX Runtime path needs the onnx extra: pip install 'edcli[onnx]'")
    import onnx

    from edcli import Detector
    from edcli.checkpoint import load_checkpoint
    from edcli.method.scorer import ImageScorer, MapScorer
    from edcli.onnxio import OnnxScorer, export_graph
    from edcli.scorer import scoring_metadata

    ck_path, model_path = _ck(tiny_run), tmp_path / "brick.onnx"
    res = invoke("export", ck_path, "--out", model_path, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["path"] == str(model_path)
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    ck = load_checkpoint(ck_path)
    assert meta["calibration"]["threshold"] == ck.calibration["threshold"] and meta["image_size"] == 64
    assert meta["weights_sha256"] == ck.backbone["weights_sha256"] and meta["mean"] == [0.5, 0.5, 0.5]
    assert {"scale", "mean", "std", "sigma", "reducer"} <= set(meta["calibration"]) and "normalized_score" in meta

    paths = _test_images(tiny_data)
    torch_det = Detector.load(ck_path, device="cpu")
    images = torch.stack([torch_det.prepare(p)[0] for p in paths])

    # 1. the conversion itself, fp32 end to end (no float16 rounding): the spec's 1e-4 tolerances
    scorer = torch_det.scorer  # its backbone and model, built once
    extractor, levels = scorer.images_module.extractor, scorer.maps.levels
    graph = ImageScorer(extractor, MapScorer(levels, 64, 4.0, "max", portable=True), quantize=False)
    export_graph(graph, tmp_path / "fp32.onnx", 64, scoring_metadata(ck), batch=3)  # fixed batch: 8 images pad
    raw, smoothed, scores = OnnxScorer(tmp_path / "fp32.onnx", "cpu").images(images.numpy())
    with torch.no_grad():  # the fast flavour of the same path on the same fp32 features
        want = MapScorer(levels, 64, 4.0, "max")(extractor(images))
    want_raw, want_smoothed, want_scores = (t.double().numpy() for t in want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4)
    np.testing.assert_allclose(raw, want_raw, rtol=0, atol=1e-4)
    np.testing.assert_allclose(smoothed, want_smoothed, rtol=0, atol=1e-4)
    fp32_gap = (np.abs(scores / want_scores - 1).max(), np.abs(raw - want_raw).max())

    # 2. the shipped graph (features rounded to float16 as the store) against the torch Detector / ed infer.
    # Both sides round the same features, but ~1e-6 differences between ONNX Runtime's and torch's convolutions
    # flip about 1% of them by one float16 step (2^-11 relative), which moves maps by a few 1e-4: measured here
    # scores 8e-5 relative, maps 3e-4 absolute (maps reach ~4, score ed). The tolerances leave room for other CPUs.
    onnx_det = Detector.load(model_path, device="cpu")
    assert onnx_det.backend == "onnxruntime" and onnx_det.threshold == torch_det.threshold
    got, want = onnx_det.predict(paths), torch_det.predict(paths)
    got_s, want_s = np.array([p.score for p in got]), np.array([p.score for p in want])
    np.testing.assert_allclose(got_s, want_s, rtol=1e-3)
    gap = max(float(np.abs(a.raw_map - b.raw_map).max()) for a, b in zip(got, want))
    top = max(float(np.abs(b.raw_map).max()) for b in want)  # maps reach ~4 with --score ed, hundreds with rec-kl
    assert gap < 5e-4 * top, (gap, top)
    print(
        f"\nONNX vs torch: fp32 graph scores {fp32_gap[0]:.2e} rel, maps {fp32_gap[1]:.2e} abs; "
        f"shipped (fp16 features) scores {np.abs(got_s / want_s - 1).max():.2e} rel, maps {gap:.2e} abs "
        f"(largest map value {top:.3g})"
    )

    # 3. ed infer MODEL.onnx: every output of ed infer (a threshold midway through the scores: both labels)
    out = tmp_path / "pred"
    ranked = np.sort(got_s)
    mid = (ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2
    res = invoke(
        "infer",
        model_path,
        *paths,
        "--out",
        out,
        "--json",
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--fail-on-anomaly",
        "--save-raw-maps",
        "--threshold",
        str(mid),
    )
    rows = json.loads(res.stdout)
    assert {r["label"] for r in rows} == {"normal", "anomalous"}
    assert res.returncode == 3, res.stderr
    np.testing.assert_allclose([r["score"] for r in rows], got_s, rtol=1e-6)
    for sub, ext in (("heatmaps", "png"), ("masks", "png"), ("maps", "npy")):
        assert len(list((out / sub).glob(f"*.{ext}"))) == len(paths)
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + len(paths)


def test_onnx_providers_follow_the_device():
    ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra")
    from edcli.errors import ConfigError
    from edcli.onnxio import providers

    assert providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match="auto, cpu or cuda"):
        providers("mps")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(ConfigError, match="onnxruntime-gpu"):
            providers("cuda:1")
    else:
        assert providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})


def test_detector_repr_says_what_it_scores_with(tiny_run):
    from edcli import Detector

    det = Detector.load(_ck(tiny_run), device="cpu")
    text = repr(det)
    assert text.startswith("Detector(") and "brick.pt" in text and "category='brick'" in text
    assert "backend='torch'" in text and "tf_efficientnet_lite0" in text and "image_size=64" in text
    assert f"threshold={det.threshold:.6g}" in text
