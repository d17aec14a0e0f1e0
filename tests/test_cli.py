"""The `ed` app as users run it: in-process through Typer's CliRunner (exit codes, stdout/stderr, JSON), plus a few
subprocess smoke tests of `python -m edcli` itself (exit codes of a real process). Start-up time is measured by
bench/timings.py, not asserted here: a shared CPU under load makes any time bound flaky."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import invoke, run_ed

COMMANDS = ("distmaps", "features", "train", "eval", "infer", "report", "demo")


def test_help_lists_every_command():
    out = run_ed("--help").stdout
    for cmd in COMMANDS:
        assert cmd in out


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from edcli import cli; "
        "print(sorted(m for m in ('torch','h5py','timm','sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_version():
    from edcli import __version__

    res = run_ed("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"ed {__version__}"


def test_wrong_data_path_is_one_line_exit_1(tmp_path):
    res = run_ed(
        "features", "--data-path", tmp_path / "nope", "--store", tmp_path / "s", "--backbone", "tf_efficientnet_lite0"
    )
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and "nope" in errors[0] and lines[-1] == errors[0], res.stderr
    assert len(lines) <= 2  # at most the first progress line (printed at once) before it
    assert res.stdout == ""


def test_missing_weights_offline_names_the_options(tmp_path, tiny_data):
    res = invoke("features", "--data-path", tiny_data, "--store", tmp_path / "s", "--backbone", "wide_resnet50_2")
    assert res.returncode == 1
    assert "--weights" in res.stderr and "tf_efficientnet_lite0" in res.stderr and "--random-init" in res.stderr


def test_bad_usage_is_exit_2():
    assert run_ed("train", "--epochs", "many").returncode == 2
    bad = run_ed("train", "--data-path", "data", "--d-model", "abc")  # --data-path is required (its own exit 2)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--d-model" in bad.stderr


@pytest.mark.parametrize("problem", ["no_mask", "unreadable", "empty_train"])
def test_dataset_problems_exit_1_naming_the_path(tmp_path, tiny_data, problem):
    root = tmp_path / "d"
    shutil.copytree(tiny_data / "brick", root / "brick")
    if problem == "no_mask":
        victim = next((root / "brick" / "ground_truth" / "hole").glob("*.png"))
    elif problem == "unreadable":
        victim = next((root / "brick" / "train" / "good").glob("*.png"))
        victim.write_bytes(b"not an image")
    else:
        victim = root / "brick" / "train" / "good"
        for p in victim.glob("*.png"):
            p.unlink()
    if problem == "no_mask":
        victim.unlink()
    res = invoke(
        "features",
        "--data-path",
        root,
        "--store",
        tmp_path / "s",
        "--backbone",
        "tf_efficientnet_lite0",
        "--image-size",
        "64",
    )
    assert res.returncode == 1, res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and str(victim.name if problem != "empty_train" else "train") in err[0], res.stderr


def test_distmaps_json(tmp_path):
    res = invoke("distmaps", "--store", tmp_path, "--grid", "3", "--grid", "4", "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["grids"] == ["3x3", "4x4"] and got["tokens"] == [9, 16]
    from edcli.store import read_distmaps

    dx, dy = read_distmaps(tmp_path, 3, 3)
    assert dx[0, 2] == 4 and dy[0, 6] == 4 and (dx == dx.T).all() and (dy.diagonal() == 0).all()


def test_eval_json_is_only_json_and_csv_has_mean(tiny_run):
    res = invoke("eval", "--run", tiny_run, "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["rows"][0]["category"] == "brick" and "image_auroc" in got["mean"]
    rows = (tiny_run / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("category,image_auroc") and [r.split(",")[0] for r in rows[1:]] == ["brick", "mean"]


def _mixed_folder(tmp_path: Path, tiny_data: Path) -> Path:
    folder = tmp_path / "mixed"
    (folder / "nested").mkdir(parents=True)
    goods = sorted((tiny_data / "brick" / "test" / "good").glob("*.png"))
    shutil.copy(goods[0], folder / "a_good.png")
    shutil.copy(goods[1], folder / "nested" / "b_good.png")
    data = goods[2].read_bytes()
    (folder / "c_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "d_text.png").write_text("this is not an image\n")
    return folder


def test_infer_mixed_folder_rows_errors_and_exit_codes(tmp_path, tiny_data, tiny_run):
    folder = _mixed_folder(tmp_path, tiny_data)
    ck = tiny_run / "checkpoints" / "brick.pt"
    res = invoke(
        "infer", ck, folder, "--recursive", "--out", tmp_path / "p", "--json", "--device", "cpu", "--num-workers", "2",
        "--save-raw-maps",
    )  # fmt: skip
    assert res.returncode == 1, res.stderr  # some files failed
    rows = json.loads(res.stdout)
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"a_good.png", "b_good.png", "c_truncated.png", "d_text.png"}
    for good in ("a_good.png", "b_good.png"):
        assert by_name[good]["error"] == "" and by_name[good]["score"] > 0 and 0 < by_name[good]["normalized_score"] < 1
    for bad in ("c_truncated.png", "d_text.png"):
        assert by_name[bad]["error"] and by_name[bad]["score"] is None
    csv_rows = (tmp_path / "p" / "predictions.csv").read_text().strip().splitlines()
    jsonl = [json.loads(ln) for ln in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    assert len(csv_rows) == 1 + 4 and [r["path"] for r in jsonl] == [r["path"] for r in rows]
    assert len(list((tmp_path / "p" / "heatmaps").glob("*.png"))) == 2
    assert all(Path(r["heatmap"]).is_file() for r in jsonl if not r["error"])  # each image names its panel
    assert all(r["heatmap"] is None for r in jsonl if r["error"]) and csv_rows[0].endswith(",heatmap,seconds")
    assert len(list((tmp_path / "p" / "masks").glob("*.png"))) == 2
    assert len(list((tmp_path / "p" / "maps").glob("*.npy"))) == 2


def test_infer_fail_on_anomaly_and_threshold(tmp_path, tiny_data, tiny_run):
    ck = tiny_run / "checkpoints" / "brick.pt"
    img = sorted((tiny_data / "brick" / "test" / "hole").glob("*.png"))[0]
    low = invoke(
        "infer",
        ck,
        img,
        "--threshold",
        "0",
        "--fail-on-anomaly",
        "--no-save-heatmaps",
        "--csv",
        "--out",
        tmp_path / "a",
        "--device",
        "cpu",
    )
    assert low.returncode == 3, low.stderr
    assert low.stdout.startswith("path,score,normalized_score,label") and "anomalous" in low.stdout
    high = invoke(
        "infer",
        ck,
        img,
        "--threshold",
        "1e9",
        "--fail-on-anomaly",
        "--no-save-heatmaps",
        "--out",
        tmp_path / "b",
        "--json",
        "--device",
        "cpu",
    )
    assert high.returncode == 0 and json.loads(high.stdout)[0]["label"] == "normal"
    assert json.loads(high.stdout)[0]["threshold_origin"].startswith("--threshold")


def test_infer_reads_paths_from_stdin(tmp_path, tiny_data, tiny_run):
    imgs = sorted((tiny_data / "brick" / "test" / "good").glob("*.png"))[:2]
    res = invoke(
        "infer",
        tiny_run / "checkpoints" / "brick.pt",
        "-",
        "--json",
        "--no-save-heatmaps",
        "--out",
        tmp_path,
        "--device",
        "cpu",
        input="\n".join(map(str, imgs)) + "\n",
    )
    assert res.returncode == 0, res.stderr
    assert [r["path"] for r in json.loads(res.stdout)] == [str(p) for p in imgs]


def test_help_groups_options_shows_choices_examples_and_whole_summaries():
    from edcli.config import PRECISIONS, SELECTIONS

    train = invoke("train", "--help").stdout
    for panel in ("Data", "Backbone", "Model", "Optimisation", "Evaluation", "Output", "Hardware"):
        assert f"─ {panel} ─" in train, panel
    assert f"<{'|'.join(SELECTIONS)}>" in train and f"<{'|'.join(PRECISIONS)}>" in train
    assert "auto|cpu|cuda|cuda:N|mps" in train and "<str>" not in train and "<list[str]>" not in train
    assert "Examples" in train and "$ ed train --data-path" in train
    infer = invoke("infer", "--help").stdout
    assert "Usage: ed infer [OPTIONS] CHECKPOINT INPUTS..." in infer and "<list[str]>" not in infer
    assert "max|mean|topk:R" in invoke("eval", "--help").stdout
    root = invoke("--help").stdout
    assert (
        "--install-completion" not in root
        and "--show-completion" not in root
        and "..." not in root.split("Commands")[1]
    )
    assert "and run the whole pipeline on it." in root  # the demo's summary, whole


def test_a_wrong_choice_or_a_missing_data_path_is_a_usage_error():
    bad = invoke("train", "--data-path", "data", "--precision", "fp64")
    assert bad.returncode == 2 and all(p in bad.stderr for p in ("fp32", "bf16", "fp16")), bad.stderr
    assert invoke("train", "--data-path", "data", "--select", "best").returncode == 2
    missing = invoke("features", "--store", "s")
    assert missing.returncode == 2 and "--data-path" in missing.stderr


def test_train_progress_lines_eval_bar_and_the_overwrite_refusal(tmp_path, tiny_data, tiny_store):
    out = tmp_path / "run"
    args = [
        "train",
        "--data-path",
        tiny_data,
        "--store",
        tiny_store,
        "--out",
        out,
        "--category",
        "brick",
        "--backbone",
        "tf_efficientnet_lite0",
        "--image-size",
        "64",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--layers",
        "2",
        "--heads",
        "4",
        "--d-model",
        "auto",
        "--seed",
        "7",
        "--device",
        "cpu",
    ]
    res = invoke(*args, env={"COLUMNS": "60"})  # not a terminal: plain lines, one per epoch
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert re.match(r"\s*\d+\.\d+s  ed train: brick of .* 2 epochs, batch 2", lines[0]), lines[0]
    assert all(re.match(r"\s*\d+\.\d+s  ", ln) for ln in lines), res.stderr  # each with its time; none wrapped
    from edcli.method.scoring import calibration_split

    per_epoch = -(-len(calibration_split(8, 0.1, 7)[0]) // 2)  # batches of 2 over the images left after calibration
    epochs = [ln for ln in lines if "brick epoch" in ln]
    assert [re.search(r"epoch (\d/\d): (\d+)/(\d+) batches", ln).groups() for ln in epochs] == [
        ("1/2", str(per_epoch), str(2 * per_epoch)),
        ("2/2", str(2 * per_epoch), str(2 * per_epoch)),
    ]
    assert "ETA" in epochs[0] and "rec " in epochs[0] and max(map(len, lines)) > 60
    ev = invoke("eval", "--run", out, "--device", "cpu")  # 3 good and 5 defective test images
    assert ev.returncode == 0 and re.search(r"brick eval: 8/8 images in \d+\.\d s", ev.stderr), ev.stderr
    before = (out / "checkpoints" / "brick.pt").read_bytes()
    again = invoke(*args)
    err = [ln for ln in again.stderr.splitlines() if ln.startswith("error:")]
    assert again.returncode == 1 and len(err) == 1 and "--overwrite" in err[0] and "brick.pt" in err[0], again.stderr
    assert (out / "checkpoints" / "brick.pt").read_bytes() == before and (out / "metrics.json").exists()
    (out / "maps").mkdir(exist_ok=True)  # eval writes its worst panels there
    redo = invoke(*args, "--overwrite", "--seed", "8")
    assert redo.returncode == 0, redo.stderr
    assert not (out / "metrics.json").exists() and not (out / "metrics.csv").exists() and not (out / "maps").exists()
    assert (out / "checkpoints" / "brick.pt").read_bytes() != before


def test_a_folder_of_normal_images_only_gives_a_normal_test_split(tmp_path, tiny_data):
    root = tmp_path / "photos" / "widget" / "train" / "normal"
    shutil.copytree(tiny_data / "brick" / "train" / "good", root)  # 8 images, no test/
    res = invoke(
        "features",
        "--dataset",
        "folder",
        "--normal-name",
        "normal",
        "--data-path",
        tmp_path / "photos",
        "--store",
        tmp_path / "s",
        "--backbone",
        "tf_efficientnet_lite0",
        "--image-size",
        "64",
        "--test-fraction",
        "0.25",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert (row["train"], row["test"]) == (6, 2)
    assert "no test/ folder: 2 of the 8 normal images" in res.stderr and "not defined" in res.stderr


def test_a_deleted_current_directory_is_one_line_not_a_crash(tmp_path):
    """torch's MKL dies at import when the current directory is gone ("Cannot load libtorch_cpu.so", exit 2)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    code = f"import os, runpy, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); sys.argv = ['ed', '--version']; "
    code += "runpy.run_module('edcli', run_name='__main__')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 1 and res.stderr.strip().startswith("error: the current directory no longer exists")
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, tiny_data, tiny_run):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    img = sorted((tiny_data / "brick" / "test" / "good").glob("*.png"))[0]
    for args, option in (
        (("infer", tiny_run / "checkpoints" / "brick.pt", img, "--out", afile, "--device", "cpu"), "--out"),
        (("features", "--data-path", tiny_data, "--store", afile, "--backbone", "tf_efficientnet_lite0"), "--store"),
    ):
        res = invoke(*args)
        lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert res.returncode == 1 and len(lines) == 1 and f"{option} {afile} is a file" in lines[0], res.stderr
    assert afile.read_text() == "keep me"
