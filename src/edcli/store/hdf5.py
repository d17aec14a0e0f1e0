"""HDF5 plumbing of the store: atomic writes, Ctrl-C deferral, reads, attribute codecs.

Every file is complete or absent: it is written as ``<final>.tmp-<pid>-<random>`` in the same folder, closed,
fsynced and renamed onto its final name with ``os.replace``. A failed or interrupted writer (an error, Ctrl-C,
SIGTERM) removes that temp file; only a killed one (SIGKILL) leaves it, which readers ignore and the next writer in
that folder removes (`edcli.files.prepare`). Only the modules of this package import h5py; numpy goes in and out.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from functools import wraps
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from edcli.errors import TERMINATING, StoreError
from edcli.files import GuardedFile, discard, prepare, publish

_STR = h5py.string_dtype("utf-8")


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside HDF5 until the call returns: raised in a file callback, h5py would print
    it and swallow it, and the command would go on (and exit 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    # ed raises on SIGTERM and SIGHUP as on Ctrl-C (edcli.errors.Terminated)
    signals = (signal.SIGINT, *(getattr(signal, n) for n in TERMINATING if hasattr(signal, n)))
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in signals}
    try:
        yield
    finally:
        for s in signals:
            signal.signal(s, old[s])
    if pending:
        sig, handler = pending[0], old[pending[0]]
        if callable(handler):
            handler(sig, None)  # the handler raises here (KeyboardInterrupt, Terminated), outside HDF5
        elif handler == signal.SIG_DFL:
            signal.raise_signal(sig)  # no handler of ours: the default action (a SIGTERM ends the process)


def _deferring(method):
    @wraps(method)
    def wrapper(*args, **kwargs):
        with _sigint_deferred():
            return method(*args, **kwargs)

    return wrapper


def _create_temp(final: Path) -> tuple[Path, GuardedFile, h5py.File]:
    """Create the folder and an empty HDF5 temp file next to `final`, written through a GuardedFile: HDF5 never
    touches the disk itself, so a full disk is an error we report, not flush errors and a crash at exit."""
    tmp = prepare(final)  # WriteError naming the folder if it cannot be made
    stream = None
    try:
        stream = GuardedFile(tmp)
        return tmp, stream, h5py.File(stream, "w")
    except OSError as e:
        _discard(None, stream, tmp)
        raise _write_failed(final, e) from e


def _write_failed(final: Path, e: BaseException) -> StoreError:
    cause = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return StoreError(
        f"cannot write {final}: {cause}; nothing there was changed (free space, or choose a writable --store)"
    )


def _discard(f: h5py.File | None, stream: GuardedFile | None, tmp: Path) -> None:
    """Close the HDF5 file and its stream whatever state they are in, then remove the temp file."""
    if f is not None:
        with contextlib.suppress(Exception):
            f.close()
    if stream is not None:
        with contextlib.suppress(Exception):
            stream.close()
    discard(tmp)


def _finish(f: h5py.File, stream: GuardedFile, tmp: Path, final: Path) -> None:
    """Close (HDF5 flushes through the stream), check that every byte reached the disk, publish."""
    try:
        f.close()
        stream.close()  # raises the first write error
        publish(tmp, final)
    except (OSError, RuntimeError) as e:
        _discard(f, stream, tmp)
        raise _write_failed(final, stream.error or e) from e


@contextlib.contextmanager
def _atomic_h5(final: Path) -> Iterator[h5py.File]:
    """Yield a writable HDF5 file that appears at `final` only if the block finishes (a Ctrl-C waits for it)."""
    with _sigint_deferred():
        tmp, stream, f = _create_temp(final)
        try:
            yield f
        except BaseException as e:
            _discard(f, stream, tmp)
            if stream.error is not None:
                raise _write_failed(final, stream.error) from e
            raise
        _finish(f, stream, tmp, final)


def _open_read(path: Path, what: str, run: str, remedy: str) -> h5py.File:
    """Open an existing HDF5 file read-only, turning a missing or corrupt file into a StoreError."""
    if not path.is_file():
        raise StoreError(f"no {what} at {path}; run `{run}` first")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise StoreError(f"{path} is not a valid HDF5 file (corrupt or truncated: {e}); {remedy}") from e


def _canon(v: Any) -> Any:
    """Plain JSON-able Python value, so lists/tuples/numpy scalars compare and hash alike."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_canon(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, Path):
        return str(v)
    return v


def file_size(path: str | Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError as e:
        raise StoreError(f"cannot read the size of {path}: {e}") from e


def _to_attr(key: str, v: Any) -> Any:
    v = _canon(v)
    if isinstance(v, list):
        if v and all(isinstance(x, str) for x in v):
            return np.array(v, dtype=_STR)
        arr = np.asarray(v)
        if arr.dtype.kind not in "biuf":
            raise StoreError(f"feature metadata {key}={v!r} is not a list of numbers or strings")
        return arr
    if isinstance(v, (bool, int, float, str)):
        return v
    raise StoreError(f"feature metadata {key}={v!r} has type {type(v).__name__}; use a plain value")


def _from_attr(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return tuple(_from_attr(x) for x in v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return v
