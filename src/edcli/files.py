"""The one atomic writer: a temp file in the target folder, fsync, os.replace, the mode the umask gives.

A target is complete or absent: a failing or interrupted writer removes its temp file (``<name>.tmp-<pid>-<random>``),
on an exception, Ctrl-C or SIGTERM where it happens and at interpreter exit for any still open; only a killed one
(SIGKILL, power loss) leaves it, which readers ignore and the next writer in that folder removes once that pid is
gone. A write that fails (read-only folder, no space, permission) is a WriteError naming the path and the cause;
its temp file is removed and what was at the target before is untouched.

A folder is written the same way by `atomic_folder`: into a hidden temp sibling (``.<name>.tmp-<pid>-<random>``),
renamed onto the target once complete; `remove_folder_leftovers` clears what a killed writer left.

One writer per folder: `run_lock` holds an advisory lock (``<folder>/.ed.lock``) for a command's life; a second
command on the same folder is refused at once, and the OS releases the lock when its holder dies.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from edcli.errors import ConfigError, LockedError, WriteError

try:
    import fcntl
except ImportError:  # Windows is not a target: no lock there
    fcntl = None  # type: ignore[assignment]

TMP_MARK = ".tmp-"
LOCK_NAME = ".ed.lock"
_TMP_NAME = re.compile(r".+\.tmp-(\d+)-[0-9a-f]{8}")  # what temp_path makes: the pid of the writer, 4 random bytes
_open_temps: set[Path] = set()  # this process's temp files not yet published or discarded
_swept: set[Path] = set()  # folders this process has already cleared of dead writers' temp files


def temp_path(final: Path) -> Path:
    """A fresh temp name beside `final` that names the writer's pid."""
    final = Path(final)
    return final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


@atexit.register
def _remove_open_temps() -> None:
    """At interpreter exit (an error that escaped, sys.exit, a writer never closed), remove what this process began
    and never published; a forked child's copy of the set is not its own to remove."""
    for tmp in list(_open_temps):
        if f"{TMP_MARK}{os.getpid()}-" in tmp.name:
            discard(tmp)


def is_temp(path: Path) -> bool:
    return TMP_MARK in Path(path).name


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    return False


def remove_stale_temps(final: Path) -> list[Path]:
    """Remove the temp files and folders in `final`'s folder whose writer process is gone (a killed run), whatever
    target they were for; live writers' are kept. Once per folder and process: a folder of many files is listed
    once, not at every write."""
    folder = Path(final).parent
    key = folder.absolute()
    if key in _swept:
        return []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    _swept.add(key)
    removed = []
    for n in names:
        m = _TMP_NAME.fullmatch(n)
        if m and int(m.group(1)) != os.getpid() and _pid_gone(int(m.group(1))):
            p = folder / n
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
                removed.append(p)
    return removed


def write_error(path: Path, exc: OSError) -> WriteError:
    """One line naming the target and the cause ('No space left on device', 'Read-only file system', ...)."""
    cause = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno is None:  # a library's own short-write message ("4096 requested and 2016 written"): say why
        with contextlib.suppress(OSError):
            st = os.statvfs(Path(path).parent)
            if st.f_bavail * st.f_frsize < (1 << 20):
                cause = f"No space left on device ({cause})"
    return WriteError(
        f"cannot write {path}: {cause}; nothing there was changed (free space, or choose a writable folder)"
    )


def prepare(final: Path) -> Path:
    """Create the target's folder, clear stale temp files of killed writers, and name a fresh temp file."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(final, e) from e
    remove_stale_temps(final)
    tmp = temp_path(final)
    _open_temps.add(tmp)
    return tmp


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
    _open_temps.discard(Path(tmp))
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        _fsync(Path(final).parent)


def discard(tmp: Path) -> None:
    _open_temps.discard(Path(tmp))
    with contextlib.suppress(OSError):
        Path(tmp).unlink()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """`with atomic_open(p, "w") as fh: ...`: `p` appears, complete, only if the block finishes."""
    final = Path(path)
    tmp = prepare(final)
    kw = {"encoding": "utf-8", "newline": ""} if "b" not in mode else {}
    try:
        with open(tmp, mode.replace("w", "x"), **kw) as fh:
            yield fh
            fh.flush()
        publish(tmp, final)
    except OSError as e:
        discard(tmp)
        raise write_error(final, e) from e
    except BaseException:
        discard(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """`with atomic_folder(d) as tmp: ...` (write the files into `tmp`): the folder `d` appears, complete, only if
    the block finishes. `tmp` is a fresh hidden sibling ``.<name>.tmp-<pid>-<random>``; an existing `d` is swapped
    out (to ``.<name>.old-<random>``), the new one renamed in, then the old one deleted. A block that fails or is
    interrupted leaves no temp folder; an OSError goes through as it is, not as a WriteError."""
    final = Path(path)
    tmp = temp_path(final.with_name(f".{final.name}"))  # mkdir, not mkdtemp: honours umask
    try:
        tmp.mkdir()
        yield tmp
        if final.exists():  # overwrite: swap the old folder out, the new one in, then delete the old one
            old = final.with_name(f".{final.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_folder_leftovers(path: str | Path) -> None:
    """Delete the temp and swapped-out folders an interrupted `atomic_folder` of `path` left, whatever their pid:
    callers write a folder from one process at a time."""
    final = Path(path)
    for pattern in (f".{final.name}{TMP_MARK}*", f".{final.name}.old-*"):
        for p in final.parent.glob(pattern):
            shutil.rmtree(p, ignore_errors=True)


class GuardedFile:
    """A binary file for a library that writes through callbacks (h5py's fileobj driver). The first OSError of a
    write is kept in `error`; from then on the file lives on in memory (later writes kept in an overlay that reads
    see, nothing more on disk), so the library stays consistent and closes cleanly instead of crashing on a full
    disk, and the caller removes the file and reports the error. Unbuffered: only write() ever writes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "xb+", buffering=0)
        self.error: OSError | None = None
        self._pos = 0  # the position once the disk has failed
        self._overlay: list[tuple[int, bytes]] = []

    def write(self, data) -> int:
        mv = memoryview(data).cast("B")
        if self.error is None:
            start, done = self._fh.tell(), 0
            try:
                while done < len(mv):
                    n = self._fh.write(mv[done:])
                    if not n:
                        raise OSError(28, os.strerror(28))  # ENOSPC: a write that makes no progress
                    done += n
                return len(mv)
            except OSError as e:
                self.error, self._pos = e, start
        self._overlay.append((self._pos, bytes(mv)))
        self._pos += len(mv)
        return len(mv)

    def _end(self) -> int:
        disk = os.fstat(self._fh.fileno()).st_size
        return max([disk] + [off + len(b) for off, b in self._overlay])

    def readinto(self, buf) -> int:
        if self.error is None:
            return self._fh.readinto(buf)
        out = memoryview(buf).cast("B")
        size, pos = len(out), self._pos
        disk = os.pread(self._fh.fileno(), size, pos)
        out[: len(disk)] = disk
        got = len(disk)
        for off, b in self._overlay:  # later writes win
            lo, hi = max(off, pos), min(off + len(b), pos + size)
            if lo < hi:
                if lo - pos > got:
                    out[got : lo - pos] = bytes(lo - pos - got)
                out[lo - pos : hi - pos] = b[lo - off : hi - off]
                got = max(got, hi - pos)
        self._pos += got
        return got

    def read(self, n: int = -1) -> bytes:
        if self.error is None:
            return self._fh.read(n)
        buf = bytearray(max(0, (self._end() - self._pos) if n < 0 else n))
        return bytes(buf[: self.readinto(buf)])

    def seek(self, offset: int, whence: int = 0) -> int:
        if self.error is None:
            return self._fh.seek(offset, whence)
        self._pos = offset if whence == 0 else self._pos + offset if whence == 1 else self._end() + offset
        return self._pos

    def tell(self) -> int:
        return self._fh.tell() if self.error is None else self._pos

    def truncate(self, size=None):
        if self.error is None:
            try:
                return self._fh.truncate(size)
            except OSError as e:
                self.error, self._pos = e, self._fh.tell()
        return size

    def flush(self) -> None:
        pass  # unbuffered: nothing waits in this process

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        """Close the file; raise the first write error (as it happened) if there was one."""
        try:
            self._fh.close()
        except OSError as e:
            self.error = self.error or e
        self._overlay = []
        if self.error is not None:
            raise self.error


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def require_folder(path: str | os.PathLike, option: str) -> None:
    """ConfigError before any work when `path` (an output or store folder, made if absent) is an existing file."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder; give a folder path (it is made if absent)")


def _holder_pid(path: Path) -> str:
    """The pid the lock's holder wrote on the file's first line ('unknown' if it is not there yet)."""
    try:
        first = path.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0].strip()
    except OSError:
        first = ""
    return first if first.isdigit() else "unknown"


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, what: str, option: str = "--out") -> Iterator[Path]:
    """`with run_lock(out, "ed train"): ...`: this process is the one writer of `folder` (made if absent) for the
    block. Another process holding it is a LockedError naming the folder and its pid. The lock is `flock` on
    ``folder/.ed.lock`` (holding the holder's pid and command): the OS drops it when the holder dies, so a killed
    command never blocks the next one. On release the file is removed, and the folder too if this lock made it
    and it stayed empty. A no-op where fcntl is missing (Windows)."""
    folder = Path(folder)
    if fcntl is None:
        yield folder
        return
    created = not folder.exists()
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from e
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise write_error(path, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{folder} is in use by another {what} (pid {_holder_pid(path)}): wait for it to finish, or give "
                f"another {option}"
            ) from None
        except OSError:  # a filesystem without flock (some network mounts): go on unlocked, as before locks
            os.close(fd)
            yield folder
            return
        try:  # the holder may have removed the file between our open and our lock: lock the file now there
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)  # the note: pid, what, the command line (for a person who finds the file)
        os.pwrite(fd, f"{os.getpid()}\n{what}\n{' '.join(sys.argv)}\n".encode(), 0)
    except OSError:
        pass  # the lock holds without its note; a refused command then says "pid unknown"
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a waiter that opened this file sees it gone and retries
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a run that wrote nothing leaves no folder behind
