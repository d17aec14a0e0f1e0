"""`ed report`: one self-contained HTML page of an evaluated run, from the files `ed eval` and `ed train` left."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edcli.errors import DataError
from edcli.track import NullTracker


def run(*, run_dir: str, out: str | None = None, track=None) -> dict[str, Any]:
    """Read RUN/metrics.json, RUN/predictions/<category>.csv (with the panels they name) and the checkpoints'
    histories; write RUN/report.html (or `out`)."""
    from edcli.checkpoint import checkpoint_path, load_checkpoint
    from edcli.files import write_text
    from edcli.html_report import CategoryView, build_html, worst
    from edcli.report import read_csv_rows

    track = track or NullTracker()
    run = Path(run_dir)
    mpath = run / "metrics.json"
    if not mpath.is_file():
        raise DataError(f"{mpath} does not exist; evaluate the run first: ed eval --run {run}")
    metrics = json.loads(mpath.read_text())
    views = []
    for row in metrics.get("categories", []):
        cat = row["category"]
        ppath = run / "predictions" / f"{cat}.csv"
        if not ppath.is_file():
            raise DataError(
                f"{ppath} does not exist (metrics.json was written by an older ed eval); "
                f"evaluate again: ed eval --run {run}"
            )
        ck_path = checkpoint_path(run, cat)
        history, train = [], {}
        if ck_path.is_file():
            ck = load_checkpoint(ck_path)
            history, train = list(ck.history), dict(ck.config.get("train", {}))
        else:
            track.warn(f"{cat}: no checkpoint at {ck_path}; the report has no training curves for it")
        views.append(CategoryView(cat, row, read_csv_rows(ppath), history, train))
    path = Path(out) if out else run / "report.html"
    text = build_html(run, metrics, views)
    write_text(path, text)
    missing = [
        r["path"]
        for v in views
        for kind in ("fn", "fp")
        for r in worst(v, kind)
        if v.metrics.get("threshold") is not None and not (r.get("heatmap") and (run / r["heatmap"]).is_file())
    ]
    if missing:
        track.warn(f"{len(missing)} of the worst images have no heat-map panel; `ed eval --run {run}` draws them")
    return {
        "report": str(path),
        "categories": [v.name for v in views],
        "bytes": len(text.encode("utf-8")),
        "missing_panels": missing,
    }
