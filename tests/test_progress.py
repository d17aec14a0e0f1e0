"""The progress protocol: plain lines (times, ETA, never wrapped), live bars under NO_COLOR, the --jobs relay."""

from __future__ import annotations

import io
import queue
import re

from rich.console import Console

from edcli import ui
from edcli.track import QueueTracker, relay


def _tracker(monkeypatch, terminal: bool, width: int = 40) -> tuple[ui.Tracker, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, no_color=ui._no_color(), soft_wrap=True, width=width)
    monkeypatch.setattr(ui, "err_console", lambda: console)
    return ui.Tracker(), buf


def test_plain_task_lines_have_times_eta_and_are_never_wrapped(monkeypatch):
    track, buf = _tracker(monkeypatch, terminal=False)
    with track.task("brick epoch 1/2", total=4, unit="batches") as bar:
        for epoch in (1, 2):
            bar.update(description=f"brick epoch {epoch}/2")
            bar.advance(2)
            bar.update(postfix="rec 0.1234 intra 1.000 inter 2.000 H 3.00/4.00")
            bar.checkpoint()
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2, lines  # one per epoch, none broken at the 40 columns
    assert re.fullmatch(
        r"\s+\d+\.\d+s  brick epoch 1/2: 2/4 batches after \d+\.\d s, ETA \d+:\d\d  rec 0\.1234.*", lines[0]
    ), lines[0]
    assert "brick epoch 2/2: 4/4 batches after" in lines[1] and "ETA" not in lines[1]


def test_no_color_keeps_the_live_bar_on_a_terminal(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    track, buf = _tracker(monkeypatch, terminal=True, width=100)
    assert track.live
    for _ in track(range(3), description="brick eval"):
        pass
    out = buf.getvalue()
    assert "brick eval" in out and "3/3" in out and "━" in out
    assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", out)  # no colour codes


def test_worker_progress_is_relayed_to_the_parent(monkeypatch):
    track, buf = _tracker(monkeypatch, terminal=False, width=200)
    q: queue.Queue = queue.Queue()
    worker = QueueTracker(q, 2)
    worker.log("started")
    with worker.task("gravel epoch 1/1", total=3, unit="batches") as bar:
        for _ in range(3):
            bar.advance()
        bar.checkpoint()
    q.put(None)
    relay(q, track, {2: "worker 2"})
    lines = buf.getvalue().splitlines()
    assert lines[0].endswith("worker 2: started")
    assert "worker 2: gravel epoch 1/1: 3/3 batches after" in lines[1] and len(lines) == 2, lines
