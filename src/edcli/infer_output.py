"""`ed infer`'s files at scale: rows streamed to predictions.jsonl/.csv batch by batch, what a run records for
`--resume` (infer.json), the part files of `--shard` and torchrun ranks, and their merge into the final files.

Layout of --out:
  predictions.jsonl, predictions.csv, infer.json   the rows of the whole input list, in input order
  parts/K-of-M/ (the same three files)             part K of M (--shard I/N, torchrun ranks), merged at the end
  heatmaps/, masks/, maps/                         <input index:06d>_<stem>.png / .npy

A writer appends each finished batch to its folder's two files and flushes them, so a killed run leaves every
completed batch on disk (at most a torn last line, which `--resume` drops). Rows arrive in input order within a
part; `finish` rewrites the files atomically in input order only when a resume left them otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edcli.errors import ConfigError, LockedError
from edcli.files import atomic_open, run_lock, write_text
from edcli.report import PREDICTION_FIELDS, predictions_csv_header, predictions_csv_line

INFO, JSONL, CSV, PARTS = "infer.json", "predictions.jsonl", "predictions.csv", "parts"
IMAGE_FOLDERS = ("heatmaps", "masks", "maps")
SAME_RUN = ("model_sha256", "threshold", "inputs_sha256", "parts")  # sibling parts of one job agree on these
SAME_ROWS = ("model_sha256", "threshold")  # rows are facts of (model, threshold, image): what --resume compares


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inputs_sha256(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def part_folder(out: Path, part: int, parts: int) -> Path:
    return Path(out) if parts == 1 else Path(out) / PARTS / f"{part}-of-{parts}"


def read_info(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(folder) / INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_info(folder: Path, info: dict[str, Any]) -> None:
    write_text(Path(folder) / INFO, json.dumps(info, indent=2) + "\n")


def row_folders(out: Path) -> list[Path]:
    """The folders of --out that hold predictions: the final one first, then the parts."""
    out = Path(out)
    found = [out] if (out / JSONL).exists() else []
    with contextlib.suppress(OSError):
        found += sorted(p for p in (out / PARTS).iterdir() if (p / JSONL).exists())
    return found


def _count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _is_sibling(folder: Path, out: Path, ident: dict[str, Any]) -> bool:
    info = read_info(folder)
    return folder.parent == Path(out) / PARTS and info is not None and all(info.get(k) == ident[k] for k in SAME_RUN)


def claim_refusal(out: Path, mine: Path, ident: dict[str, Any]) -> str | None:
    """Without --resume or --overwrite: the one line refusing an --out that holds another run's predictions (or
    this part's own, from an earlier run); None when nothing would be replaced. The other parts of the same job
    (same model, threshold, input list and number of parts) are not another run."""
    held = [f for f in row_folders(out) if f == mine or not _is_sibling(f, out, ident)]
    if not held:
        return None
    names = ", ".join(str((f / JSONL).relative_to(out)) for f in held[:3]) + (
        f" and {len(held) - 3} more" if len(held) > 3 else ""
    )
    rows = sum(_count_lines(f / JSONL) for f in held)
    return (
        f"{out} already holds predictions ({names}, {rows} rows): pass --overwrite to replace them and their heat "
        "maps, --resume to score only the images without a row, or another --out"
    )


def _describe(info: dict[str, Any], key: str) -> str:
    if key == "model_sha256":
        return f"{info.get('checkpoint')} (sha256 {str(info.get('model_sha256'))[:12]})"
    return f"{info.get('threshold'):.6g} ({info.get('threshold_origin')})"


def resume_refusal(out: Path, ident: dict[str, Any]) -> str | None:
    """--resume: one line naming every difference (model, threshold) between the rows on disk and this run."""
    diffs: list[str] = []
    for f in row_folders(out):
        info = read_info(f)
        where = (f / JSONL).relative_to(out)
        if info is None:
            diffs.append(f"{where} has no {INFO} (written by an older ed infer): its model is unknown")
            continue
        for key in SAME_ROWS:
            if info.get(key) != ident[key]:
                what = "model" if key == "model_sha256" else "threshold"
                diffs.append(f"{what}: {where} holds {_describe(info, key)}, asked {_describe(ident, key)}")
    if not diffs:
        return None
    return f"--resume {out}: " + "; ".join(dict.fromkeys(diffs)) + "; pass --overwrite to start again, or another --out"


def _image_index(name: str) -> int | None:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def clear(out: Path, mine: Path, ident: dict[str, Any], indices: range, whole: bool) -> list[str]:
    """--overwrite: remove this part's rows, the final files, other runs' parts and the heat maps, masks and raw
    maps of this part's images (all of them for a run of the whole list); the job's sibling parts stay."""
    out, removed = Path(out), []
    for f in row_folders(out) + ([mine] if mine.exists() and mine != out else []):
        if f != out and f != mine and _is_sibling(f, out, ident):
            continue
        for name in (JSONL, CSV, INFO):
            if (f / name).exists():
                (f / name).unlink(missing_ok=True)  # torchrun ranks may both remove the final files
                removed.append(str((f / name).relative_to(out)))
        if f != out and f != mine:
            shutil.rmtree(f, ignore_errors=True)
    for sub in IMAGE_FOLDERS:
        folder = out / sub
        if not folder.is_dir():
            continue
        if whole:
            shutil.rmtree(folder)
            removed.append(f"{sub}/")
            continue
        gone = 0
        for p in folder.iterdir():
            i = _image_index(p.name)
            if i is not None and i in indices:
                p.unlink(missing_ok=True)
                gone += 1
        if gone:
            removed.append(f"{gone} files of {sub}/")
    return removed


def scored_rows(out: Path, index_of: dict[str, int], mine: Path) -> dict[int, tuple[Path, int]]:
    """The rows already on disk for this part's images (resume): input index -> (file, byte offset), from this
    part's own file first, then the final file, then the other parts. Each image once (its first row); a row with
    an error is not kept (the image is tried again: a --max-pixels raised, a file that came back); a torn or
    unreadable line ends its file (a killed writer's last line)."""
    folders = [mine] + [f for f in row_folders(out) if f != mine]
    done: dict[int, tuple[Path, int]] = {}
    for folder in folders:
        path = folder / JSONL
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            offset = 0
            for line in fh:
                if not line.endswith(b"\n"):
                    break
                try:
                    row = json.loads(line)
                except ValueError:
                    break
                i = index_of.get(row.get("path")) if isinstance(row, dict) else None
                if i is not None and i not in done and not row.get("error"):
                    done[i] = (path, offset)
                offset += len(line)
    return done


class _Lines:
    """Random access to rows by (file, offset), one open handle per file."""

    def __init__(self):
        self.handles: dict[Path, Any] = {}

    def line(self, path: Path, offset: int) -> bytes:
        fh = self.handles.get(path)
        if fh is None:
            fh = self.handles[path] = open(path, "rb")
        fh.seek(offset)
        return fh.readline()

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()
        self.handles.clear()


def _csv_line(line: bytes) -> bytes:
    return predictions_csv_line(json.loads(line)).encode("utf-8")


def row_json(row: dict[str, Any]) -> bytes:
    return (json.dumps({k: row.get(k) for k in PREDICTION_FIELDS}) + "\n").encode("utf-8")


class RowStream:
    """One folder's predictions.jsonl and .csv, written batch by batch and flushed after each."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.jsonl, self.csv = self.folder / JSONL, self.folder / CSV
        self.offsets: dict[int, int] = {}  # input index -> byte offset of its row in self.jsonl
        self.last = -1  # the largest index written so far: a smaller one later means a rewrite at the end
        self.ordered = True
        self._jf = self._cf = None
        self._reader: Any = None

    def start(self, done: dict[int, tuple[Path, int]]) -> None:
        """Begin with the rows of `done` (a resume), written in input order (atomically: their sources may be these
        very files), or with empty files (a header only)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if done:
            self._write_ordered(sorted(done.items()))
        else:
            with atomic_open(self.jsonl, "wb"):
                pass
            write_text(self.csv, predictions_csv_header())
            self.offsets = {}
        self.last = max(self.offsets, default=-1)
        self._jf, self._cf = open(self.jsonl, "ab"), open(self.csv, "ab")

    def _write_ordered(self, items: list[tuple[int, tuple[Path, int]]]) -> None:
        lines, offsets, pos = _Lines(), {}, 0
        try:
            with atomic_open(self.jsonl, "wb") as jf, atomic_open(self.csv, "wb") as cf:
                cf.write(predictions_csv_header().encode("utf-8"))
                for i, (path, off) in items:
                    line = lines.line(path, off)
                    jf.write(line)
                    cf.write(_csv_line(line))
                    offsets[i] = pos
                    pos += len(line)
        finally:
            lines.close()
        self.offsets = offsets

    def append(self, rows: list[tuple[int, dict[str, Any]]]) -> None:
        """Rows of one batch ((input index, row)), appended and flushed: on disk for a reader and a kill."""
        pos = self._jf.tell()
        for i, row in rows:
            data = row_json(row)
            self._jf.write(data)
            self._cf.write(predictions_csv_line(row).encode("utf-8"))
            self.offsets[i] = pos
            pos += len(data)
            if i < self.last:
                self.ordered = False
            self.last = max(self.last, i)
        self._jf.flush()
        self._cf.flush()

    def row(self, i: int) -> dict[str, Any]:
        """A row written earlier (by index), read back from the file."""
        if self._reader is None:
            self._reader = _Lines()
        return json.loads(self._reader.line(self.jsonl, self.offsets[i]))

    def finish(self) -> None:
        """Close the files; rewrite them in input order if a resume appended rows before earlier ones."""
        for fh in (self._jf, self._cf):
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())  # the end of a run is durable, as the atomic writer's files are
                fh.close()
        self._jf = self._cf = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if not self.ordered:
            self._write_ordered([(i, (self.jsonl, off)) for i, off in sorted(self.offsets.items())])
            self.ordered = True

    def close(self) -> None:
        """Close without rewriting (an error or an interrupt): what was flushed stays for --resume."""
        for fh in (self._jf, self._cf, self._reader):
            if fh is not None:
                with contextlib.suppress(OSError):
                    fh.close()
        self._jf = self._cf = self._reader = None


def read_rows(folder: Path) -> Iterator[dict[str, Any]]:
    with open(Path(folder) / JSONL, "rb") as fh:
        for line in fh:
            yield json.loads(line)


def merge_parts(out: Path, parts: int, ident: dict[str, Any]) -> str | None:
    """Concatenate parts 0..M-1 of this job (each finished, in input order) into --out's final files, then remove
    them. Returns why it did not (a part not finished yet, another process merging), None once merged."""
    out = Path(out)
    folders = [part_folder(out, k, parts) for k in range(parts)]
    infos = [read_info(f) for f in folders]
    waiting = [str(k) for k, info in enumerate(infos) if not (info and info.get("complete"))]
    if waiting:
        return f"part{'s' if len(waiting) > 1 else ''} {', '.join(waiting)} of {parts} not finished yet"
    other = [str(k) for k, info in enumerate(infos) if any(info.get(key) != ident[key] for key in SAME_RUN)]
    if other:
        raise ConfigError(
            f"{out}: part(s) {', '.join(other)} of {parts} were written with another model, threshold or input list;"
            " rerun them with --overwrite"
        )
    try:
        with run_lock(out, "ed infer (merging the parts)"):
            with atomic_open(out / JSONL, "wb") as jf, atomic_open(out / CSV, "wb") as cf:
                cf.write(predictions_csv_header().encode("utf-8"))
                for f in folders:
                    with open(f / JSONL, "rb") as fh:
                        for line in fh:
                            jf.write(line)
                            cf.write(_csv_line(line))
            new = sum(int(info.get("scored_now", 0)) for info in infos)
            seconds = max(float(info.get("seconds", 0.0)) for info in infos)
            write_info(out, dict(ident, parts=1, merged_from=parts, complete=True, scored_now=new, seconds=seconds))
            remove_parts(out)  # these parts, and those of an earlier job whose rows --resume took over
    except LockedError:
        return "another process is merging the parts"
    return None


def remove_parts(out: Path) -> None:
    """Once the final files hold every row: the part folders are spent."""
    shutil.rmtree(Path(out) / PARTS, ignore_errors=True)


def images_per_second(n: int, seconds: float) -> float | None:
    return n / seconds if n and seconds > 0 and math.isfinite(seconds) else None
