"""The one atomic writer: a temp file in the target folder, fsync, os.replace, the mode the umask gives.

A target is complete or absent: a killed or failing writer leaves at most its temp file
(``<name>.tmp-<pid>-<random>``), which readers ignore.
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

TMP_MARK = ".tmp-"


def temp_path(final: Path) -> Path:
    """A fresh temp name beside `final` that names the writer's pid."""
    final = Path(final)
    return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def is_temp(path: Path) -> bool:
    return TMP_MARK in Path(path).name


def _umask_mode() -> int:
    mask = os.umask(0)  # the only portable way to read the umask is to set it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """Make the closed temp file durable and readable as the umask allows, then rename it onto `final`."""
    os.chmod(tmp, _umask_mode())  # mkstemp-style files are 0600; teammates and services must read results
    _fsync(tmp)  # the rename must never expose a name whose data is still only in the page cache
    os.replace(tmp, final)
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        _fsync(Path(final).parent)


def discard(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(tmp).unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """`with atomic_open(p, "w") as fh: ...`: `p` appears, complete, only if the block finishes."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    kw = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
    try:
        with open(tmp, mode.replace("w", "x"), **kw) as fh:
            yield fh
            fh.flush()
        publish(tmp, final)
    except BaseException:
        discard(tmp)
        raise


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)
