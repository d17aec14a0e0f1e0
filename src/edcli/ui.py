"""Rich consoles: results on stdout, progress and logs on stderr. The only module that imports rich."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable, Iterator, Optional, Sequence

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


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


def out_console() -> Console:
    """Results go to stdout. No colour when not a TTY or NO_COLOR is set."""
    return Console(file=sys.stdout, no_color=_no_color(), soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def err_console() -> Console:
    return Console(file=sys.stderr, no_color=_no_color(), stderr=True)


class Tracker:
    """Progress on stderr. Live bars on a TTY; otherwise one plain line per finished task."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = err_console()
        self.live = self.console.is_terminal and not _no_color() and not quiet
        self._postfix = ""
        self._progress: Optional[Progress] = None
        self._task = None

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)

    def postfix(self, text: str) -> None:
        """Numbers shown beside the current bar (e.g. loss terms)."""
        self._postfix = text
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, postfix=text)

    def __call__(self, iterable: Iterable, total: Optional[int] = None, description: str = "") -> Iterator:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        if not self.live:
            yield from self._plain(iterable, total, description)
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[postfix]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            self._progress = progress
            self._task = progress.add_task(description, total=total, postfix="")
            try:
                for item in iterable:
                    yield item
                    progress.advance(self._task)
            finally:
                self._progress, self._task, self._postfix = None, None, ""

    def _plain(self, iterable: Iterable, total: Optional[int], description: str) -> Iterator:
        import time

        start, n = time.perf_counter(), 0
        last = start
        step = max(1, (total or 0) // 10)
        for item in iterable:
            yield item
            n += 1
            now = time.perf_counter()
            # without a live bar, a line every tenth of the work or every 30 s, so CI logs show progress
            if description and not self.quiet and total and n < total and (n % step == 0 or now - last > 30):
                tail = f"  {self._postfix}" if self._postfix else ""
                self.log(f"{description}: {n}/{total} after {now - start:.1f} s{tail}")
                last = now
        if description and not self.quiet:
            tail = f"  {self._postfix}" if self._postfix else ""
            self.log(f"{description}: {n}/{total if total is not None else n} in {time.perf_counter() - start:.1f} s{tail}")
        self._postfix = ""


def _fmt(value: Any) -> str:
    if value is None:
        return "n/d"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "",
                last_row_is_total: bool = False) -> None:
    """A results table on stdout; None shows as 'n/d' (not defined)."""
    table = Table(title=title, caption=caption or None, show_lines=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    for i, row in enumerate(rows):
        style = "bold" if last_row_is_total and i == len(rows) - 1 else None
        table.add_row(*[_fmt(v) for v in row], style=style, end_section=last_row_is_total and i == len(rows) - 2)
    out_console().print(table)


def print_json(obj: Any) -> None:
    """Nothing but JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_text(text: str) -> None:
    out_console().print(text, markup=False, highlight=False)


def print_error(message: str) -> None:
    err_console().print(f"error: {message}", style="bold red", markup=False, highlight=False, soft_wrap=True)
