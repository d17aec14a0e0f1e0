"""Tables on a narrow terminal: every number whole, every value present (paths may fold, never cut)."""

from __future__ import annotations

import io

import pytest
from conftest import run_ed
from rich.console import Console

from edcli import ui

EVAL = ["category", "image AUROC", "pixel AUROC", "AUPRO@0.3", "image AP", "pixel AP", "F1-max", "TPR", "FPR", "FP",
        "FN", "test images", "epoch", "seconds"]  # fmt: skip
TRAIN = ["category", "images (fit+calib)", "epochs", "seconds", "rec", "intra corr", "inter corr", "intra H",
         "inter H", "threshold", "epoch kept", "checkpoint"]  # fmt: skip
CKPT = "/tmp/pytest-of-someone/pytest-123/run0/a/rather/deep/folder/checkpoints/brick.pt"


def _eval_rows() -> list[list]:
    return [
        ["brick", 0.987654, 0.912345, 0.8123, 0.99, 0.51, 0.9, 1.0, 0.125, 12, 3, 115, 100, 12.3456],
        ["gravel", 0.5, None, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0, 1, 4, 3, 1.5],
        ["mean", 0.74, 0.912, 0.45, 0.59, 0.4, 0.65, 0.75, 0.36, 12, 4, 119, "", 13.8456],
    ]


def _train_rows() -> list[list]:
    return [["brick", "8+2", 2, 3.21, 0.0123, 0.5, 0.25, 1.2, 1.3, 0.456, 2, CKPT]]


def _render(columns, rows, width: int, **kw) -> str:
    buf = io.StringIO()
    ui.print_table("t", columns, rows, console=Console(file=buf, width=width, no_color=True), **kw)
    return buf.getvalue()


def _parse(text: str) -> dict[tuple[str, str], str]:
    """{(row key, column): whole cell text} over every table printed: header lines give the column names (their
    words joined), a body line whose first cell is empty continues the row above (folded pieces joined)."""
    cells: dict[tuple[str, str], str] = {}
    names: list[list[str]] = []
    key = ""
    for line in text.splitlines():
        if line.startswith("┏"):
            names = []
        elif line.startswith("┃"):
            parts = [p.strip() for p in line.strip().strip("┃").split("┃")]
            names = [[*n, p] for n, p in zip(names, parts)] if names else [[p] for p in parts]
        elif line.startswith("│"):
            parts = [p.strip() for p in line.strip().strip("│").split("│")]
            cols = [" ".join(w for w in n if w) for n in names]
            key = parts[0] or key
            for col, part in zip(cols[1:], parts[1:]):
                cells[(key, col)] = cells.get((key, col), "") + part
    return cells


@pytest.mark.parametrize("width", [60, 80, 100, 150, 250])
@pytest.mark.parametrize("which", ["eval", "train"])
def test_every_value_is_whole_at_any_width(which, width):
    columns, rows = (EVAL, _eval_rows()) if which == "eval" else (TRAIN, _train_rows())
    text = _render(columns, rows, width, caption="the caption", last_row_is_total=which == "eval")
    assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= width, text
    cells = _parse(text)
    for row in rows:
        for col, value in zip(columns[1:], row[1:]):
            assert cells.get((row[0], col)) == ui._fmt(value), (row[0], col, text)
    assert text.count("the caption") == 1


def test_an_80_column_eval_table_splits_in_two_with_the_category_in_each():
    text = _render(EVAL, _eval_rows(), 80)
    assert text.count("┏") == 2 and text.count("│ brick") == 2 and "t (continued)" in text


def test_too_narrow_for_two_columns_prints_records():
    text = _render(TRAIN, _train_rows(), 20)
    lines = text.splitlines()
    assert "category: brick" in lines and "┏" not in text
    for col, value in zip(TRAIN[1:], _train_rows()[0][1:]):
        assert f"  {col}: {ui._fmt(value)}" in text.replace("\n", ""), (col, text)


def test_render_metrics_of_ed_eval_at_80_columns(monkeypatch, capsys):
    """`ed eval`'s own table (cli.evaluate.render_metrics) on an 80-column terminal: no metric cut to '0.…'."""
    from edcli.cli.evaluate import render_metrics

    buf = io.StringIO()
    monkeypatch.setattr(ui, "out_console", lambda: Console(file=buf, width=80, no_color=True))
    keys = ["image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "f1_max", "tpr", "fpr", "fp", "fn",
            "test_images", "epoch", "seconds"]  # fmt: skip
    rows = [dict(zip(["category", *keys], r)) for r in _eval_rows()]
    protocol = {"pixel_map": "fused", "reducer": "max", "resolution": "64 px"}
    render_metrics({"protocol": protocol, "rows": rows[:2], "mean": rows[2], "metrics_json": "m.json",
                    "metrics_csv": "m.csv"})  # fmt: skip
    text = buf.getvalue()
    assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= 80, text
    cells = _parse(text)
    for r in rows:
        for col, k in zip(EVAL[1:], keys):
            assert cells.get((r["category"], col)) == ui._fmt(r[k]), (r["category"], col, text)


@pytest.mark.parametrize("args", [["features", "--data-path", "nope", "--store", "s"], ["report", "nope"]])
def test_first_progress_line_comes_before_torch_is_imported(tmp_path, args):
    """torch and the backbone take seconds to load: the command says what it starts before that. A `torch` that
    stops the process when imported shows the order."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise SystemExit('torch imported')\n")
    res = run_ed(*args, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)})
    lines = res.stderr.splitlines()
    assert res.returncode == 1 and lines[-1] == "torch imported", res.stderr
    assert lines[0].split()[1:4] == ["ed", f"{args[0]}:", "every" if args[0] == "features" else "nope"], res.stderr
