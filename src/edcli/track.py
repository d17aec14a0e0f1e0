"""The progress protocol the lower layers call, and its relay from worker processes.

A tracker has `track(iterable, total, description)` (a bar over an iterable), `task(description, total, unit)` (a
context manager yielding a `Task` the caller advances itself: batches within epochs), log and warn.
`ui.Tracker` implements it with rich for the CLI; `NullTracker` is the silent one for library use and tests;
`QueueTracker` sends every call of a `--jobs` worker to its parent, where `relay` replays them on the real tracker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import Any


class NullTask:
    """A progress task: `advance` per unit of work, `update` its text, `checkpoint` at a milestone (an epoch's end:
    a plain-output tracker writes a line there; a live bar shows it anyway)."""

    def advance(self, n: int = 1) -> None:  # noqa: D102
        pass

    def update(self, description: str | None = None, postfix: str | None = None, total: int | None = None) -> None:  # noqa: D102
        pass

    def checkpoint(self) -> None:  # noqa: D102
        pass


class NullTracker:
    """The `track` protocol without any output (library use and tests)."""

    quiet = True

    def __call__(self, iterable: Iterable, total: int | None = None, description: str = "") -> Iterator:
        yield from iterable

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None, unit: str = "") -> Iterator[NullTask]:
        yield NullTask()

    def log(self, message: str) -> None:  # noqa: D102
        pass

    def warn(self, message: str) -> None:  # noqa: D102
        pass


# ---------------------------------------------------------------------------------------------- --jobs relay


class _QueueTask(NullTask):
    """A worker's task: advances are summed and sent at most every `every` seconds (a batch can take 1 ms)."""

    def __init__(self, send, tid: int, every: float = 0.2):
        self._send, self._tid, self._every = send, tid, every
        self._pending, self._last = 0, 0.0

    def _flush(self) -> None:
        if self._pending:
            self._send("advance", self._tid, self._pending)
            self._pending = 0
        self._last = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self._pending += n
        if time.monotonic() - self._last >= self._every:
            self._flush()

    def update(self, description=None, postfix=None, total=None) -> None:
        self._flush()
        self._send("update", self._tid, description, postfix, total)

    def checkpoint(self) -> None:
        self._flush()
        self._send("checkpoint", self._tid)


class QueueTracker(NullTracker):
    """The tracker of a worker process: every call goes to the parent through a multiprocessing queue."""

    quiet = False

    def __init__(self, queue, worker: int):
        self.queue, self.worker, self._tasks = queue, worker, 0

    def _send(self, kind: str, *args: Any) -> None:
        self.queue.put((self.worker, kind, args))

    def __call__(self, iterable: Iterable, total: int | None = None, description: str = "") -> Iterator:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        with self.task(description, total) as t:
            for item in iterable:
                yield item
                t.advance()

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None, unit: str = "") -> Iterator[NullTask]:
        self._tasks += 1
        tid = self._tasks
        self._send("start", tid, description, total, unit)
        t = _QueueTask(self._send, tid)
        try:
            yield t
        finally:
            t._flush()
            self._send("end", tid)

    def log(self, message: str) -> None:
        self._send("log", message)

    def warn(self, message: str) -> None:
        self._send("warn", message)


def relay(queue, track, names: dict[int, str]) -> None:
    """Replay the calls of `QueueTracker`s on `track` until a None arrives; a worker's lines name the worker."""
    stacks: dict[tuple[int, int], Any] = {}
    try:
        while True:
            msg = queue.get()
            if msg is None:
                return
            worker, kind, args = msg
            who = names.get(worker, f"worker {worker}")
            if kind == "log":
                track.log(f"{who}: {args[0]}")
            elif kind == "warn":
                track.warn(f"{who}: {args[0]}")
            elif kind == "start":
                tid, description, total, unit = args
                cm = track.task(f"{who}: {description}", total, unit)
                stacks[(worker, tid)] = (cm, cm.__enter__())
            elif (worker, args[0]) in stacks:
                cm, task = stacks[(worker, args[0])]
                if kind == "advance":
                    task.advance(args[1])
                elif kind == "update":
                    task.update(f"{who}: {args[1]}" if args[1] is not None else None, args[2], args[3])
                elif kind == "checkpoint":
                    task.checkpoint()
                elif kind == "end":
                    del stacks[(worker, args[0])]
                    cm.__exit__(None, None, None)
    finally:
        for cm, _ in stacks.values():
            cm.__exit__(None, None, None)
