"""Rich consoles: results on stdout, progress and logs on stderr. The only module that imports rich."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from edcli.track import NullTask


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def out_console() -> Console:
    """Results go to stdout. No colour when not a TTY or NO_COLOR is set."""
    return Console(file=sys.stdout, no_color=_no_color(), soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def err_console() -> Console:
    # soft_wrap: a plain (non-TTY) line is never broken in the middle of a value; a terminal wraps it itself
    return Console(file=sys.stderr, no_color=_no_color(), stderr=True, soft_wrap=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _LiveTask:
    def __init__(self, progress: Progress, tid):
        self.progress, self.tid = progress, tid

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.tid, n)

    def update(self, description: str | None = None, postfix: str | None = None, total: int | None = None) -> None:
        kw: dict[str, Any] = {"description": description} if description is not None else {}
        if postfix is not None:
            kw["postfix"] = postfix
        if total is not None:
            kw["total"] = total
        self.progress.update(self.tid, **kw)

    def checkpoint(self) -> None:
        pass


class _PlainTask:
    """Without a live bar: a line at each checkpoint (an epoch's end), every `auto` share of the work (bars over
    an iterable) and every 30 s, so CI logs show progress; each line has its counts, time and ETA."""

    def __init__(self, tracker: Tracker, description: str, total: int | None, unit: str, auto: bool):
        self.tracker, self.description, self.total, self.unit = tracker, description, total, unit
        self.postfix = ""
        self.done = self.shown = 0
        self.start = self.last = time.perf_counter()
        self.step = max(1, (total or 0) // 10) if auto else 0

    def advance(self, n: int = 1) -> None:
        before, self.done = self.done, self.done + n
        now = time.perf_counter()
        crossed = self.step and self.done // self.step > before // self.step
        if self.total and self.done < self.total and (crossed or now - self.last > 30):
            self.line()

    def update(self, description: str | None = None, postfix: str | None = None, total: int | None = None) -> None:
        self.description = description if description is not None else self.description
        self.postfix = postfix if postfix is not None else self.postfix
        self.total = total if total is not None else self.total

    def checkpoint(self) -> None:
        self.line()

    def line(self, final: bool = False) -> None:
        now = time.perf_counter()
        self.last, self.shown = now, self.done
        total = self.total if self.total is not None else self.done
        unit = f" {self.unit}" if self.unit else ""
        took = f"in {now - self.start:.1f} s" if final else f"after {now - self.start:.1f} s"
        eta = ""
        if not final and self.total and 0 < self.done < self.total:
            eta = f", ETA {_clock((now - self.start) / self.done * (self.total - self.done))}"
        tail = f"  {self.postfix}" if self.postfix else ""
        self.tracker.log(f"{self.description}: {self.done}/{total}{unit} {took}{eta}{tail}")

    def finish(self) -> None:
        if self.done != self.shown or self.done == 0 or self.step:
            self.line(final=True)


class Tracker:
    """Progress on stderr: live bars on a terminal (NO_COLOR only drops the colour), otherwise plain lines, each
    led by the seconds since the command started."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = err_console()
        self.live = self.console.is_terminal and not quiet
        self.started = time.perf_counter()
        self._lock = threading.RLock()  # the --jobs relay thread and the main thread share the bars
        self._progress: Progress | None = None
        self._active = 0

    def _stamp(self, message: str) -> str:
        return message if self.live else f"{time.perf_counter() - self.started:7.1f}s  {message}"

    def log(self, message: str) -> None:
        if not self.quiet:
            with self._lock:
                self.console.print(self._stamp(message), markup=False, highlight=False)

    def warn(self, message: str) -> None:
        with self._lock:
            self.console.print(self._stamp(f"warning: {message}"), style="yellow", markup=False, highlight=False)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None, unit: str = "", auto: bool = False) -> Iterator[Any]:
        """A bar the caller advances (`advance`, `update`, `checkpoint`); several may be live at once."""
        if self.quiet:
            yield NullTask()
            return
        if not self.live:
            t = _PlainTask(self, description, total, unit, auto)
            yield t
            t.finish()
            return
        with self._lock:
            if self._progress is None:
                columns = [
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[unit]}"),
                    TimeElapsedColumn(),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[postfix]}"),
                ]
                self._progress = Progress(*columns, console=self.console, transient=False)
                self._progress.start()
            self._active += 1
            live = _LiveTask(self._progress, self._progress.add_task(description, total=total, postfix="", unit=unit))
        try:
            yield live
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._progress is not None:
                    self._progress.stop()
                    self._progress = None

    def __call__(self, iterable: Iterable, total: int | None = None, description: str = "") -> Iterator:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        if not description:
            yield from iterable
            return
        with self.task(description, total, auto=True) as t:
            for item in iterable:
                yield item
                t.advance()


def _fmt(value: Any) -> str:
    if value is None:
        return "n/d"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


_FOLD_AT = 24  # a longer cell (a path) may fold over lines; shorter ones (numbers, names) are always kept whole


def _frame(n: int) -> int:
    return 3 * n + 1  # rich's default box: one border per column plus one, and one space of padding each side


def _groups(least: list[int], width: int) -> list[list[int]] | None:
    """Columns in tables of at most `width`, the first column repeated in each, every column at its `least`
    width; None when not even the first and one other fit side by side."""
    groups: list[list[int]] = []
    for i in range(1, len(least)):
        if groups and sum(least[j] for j in groups[-1]) + least[i] + _frame(len(groups[-1]) + 1) <= width:
            groups[-1].append(i)
        elif least[0] + least[i] + _frame(2) <= width:
            groups.append([0, i])
        else:
            return None
    return groups or [[0]]


def _widths(group: list[int], natural: list[int], least: list[int], width: int) -> list[int]:
    """Each column of `group` at its least width; the room left goes first to the columns that need the least of
    it to be whole (the fewest wrapped headers), what remains to the long cells (paths)."""
    got = [least[i] for i in group]
    spare = width - _frame(len(group)) - sum(got)
    for k in sorted(range(len(group)), key=lambda k: natural[group[k]] - got[k]):
        add = max(0, min(spare, natural[group[k]] - got[k]))
        got[k] += add
        spare -= add
    return got


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    caption: str = "",
    last_row_is_total: bool = False,
    console: Console | None = None,
) -> None:
    """A results table on stdout; None shows as 'n/d' (not defined). A number or a name is never cut: on a narrow
    terminal headers and long cells (paths) wrap, then the columns go into several tables (the first column repeated
    in each), and where not even two columns fit each row is printed as 'name  value' lines."""
    console = console or out_console()
    cells = [[_fmt(v) for v in row] for row in rows]
    natural = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(columns)]
    # at least: the longest word of the header (it wraps between words) and every cell up to _FOLD_AT characters
    least = [
        max([*(len(w) for w in h.split()), *(min(len(r[i]), _FOLD_AT) for r in cells)], default=1)
        for i, h in enumerate(columns)
    ]
    fits = sum(natural) + _frame(len(columns)) <= console.width
    groups = [list(range(len(columns)))] if fits else _groups(least, console.width)
    if groups is None:
        _print_records(console, title, columns, cells, caption)
        return
    for g, group in enumerate(groups):
        widths = None if fits else _widths(group, natural, least, console.width)
        table = Table(
            title=title if g == 0 else f"{title} (continued)",
            caption=(caption or None) if g == len(groups) - 1 else None,
        )
        for k, i in enumerate(group):
            table.add_column(
                columns[i],
                justify="left" if i == 0 or natural[i] > _FOLD_AT else "right",  # a folded path reads from the left
                width=None if widths is None else widths[k],
                no_wrap=fits,  # at natural widths nothing needs to wrap; fitted widths hold every short cell whole
                overflow="fold",
            )
        for r, row in enumerate(cells):
            style = "bold" if last_row_is_total and r == len(rows) - 1 else None
            section = last_row_is_total and r == len(rows) - 2
            table.add_row(*[row[i] for i in group], style=style, end_section=section)
        console.print(table)


def _print_records(console: Console, title: str, columns: Sequence[str], cells, caption: str) -> None:
    """Each row as lines of 'name: value' (a terminal too narrow for two columns side by side)."""
    console.print(title, markup=False, highlight=False)
    for row in cells:
        console.print(f"{columns[0]}: {row[0]}", markup=False, highlight=False)
        for name, value in zip(columns[1:], row[1:]):
            console.print(f"  {name}: {value}", markup=False, highlight=False)
    if caption:
        console.print(caption, markup=False, highlight=False)


def print_json(obj: Any) -> None:
    """Nothing but JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_text(text: str) -> None:
    out_console().print(text, markup=False, highlight=False)


def print_error(message: str) -> None:
    err_console().print(f"error: {message}", style="bold red", markup=False, highlight=False, soft_wrap=True)
