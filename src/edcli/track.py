"""The progress protocol the lower layers call (`track(iterable, total, description)`, log, warn, postfix).

`ui.Tracker` implements it with rich for the CLI; `NullTracker` is the silent one for library use and tests.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional


class NullTracker:
    """The `track` protocol without any output (library use and tests)."""

    quiet = True

    def __call__(self, iterable: Iterable, total: Optional[int] = None, description: str = "") -> Iterator:
        yield from iterable

    def log(self, message: str) -> None:  # noqa: D102
        pass

    def warn(self, message: str) -> None:  # noqa: D102
        pass

    def postfix(self, text: str) -> None:  # noqa: D102
        pass
