"""What a store entry was made from: one line per image and mask of a split (relative path, size, mtime).

The listing is recorded with the cached features; a later run compares it with the files on disk, so an image
added, removed or changed since is noticed (and the entry recomputed) instead of serving features of other files.
"""

from __future__ import annotations

import os
from pathlib import Path

from edcli.data.layouts import SampleRef
from edcli.errors import DataError


def _entry(kind: str, path: str, root: Path) -> str:
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    return f"{kind}\t{os.path.relpath(path, root)}\t{st.st_size}\t{st.st_mtime_ns}"


def source_listing(refs: list[SampleRef], root: str | Path) -> list[str]:
    """'image|mask <TAB> relative path <TAB> bytes <TAB> mtime_ns' per file of the split, in the split's order."""
    root = Path(root).resolve()
    rows = []
    for r in refs:
        rows.append(_entry("image", r.path, root))
        if r.mask_path:
            rows.append(_entry("mask", r.mask_path, root))
    return rows


def _parse(rows: list[str]) -> dict[tuple[str, str], tuple[str, str]]:
    out = {}
    for row in rows:
        kind, rel, size, mtime = (row.split("\t") + ["", "", "", ""])[:4]
        out[(kind, rel)] = (size, mtime)
    return out


def describe_changes(old: list[str], new: list[str], split: str) -> str | None:
    """'3 train images added, 1 removed, 2 changed' (masks counted apart); None when nothing changed."""
    if list(old) == list(new):
        return None
    a, b = _parse(old), _parse(new)
    parts = []
    for kind in ("image", "mask"):
        counts = [
            (sum(1 for k in b if k[0] == kind and k not in a), "added"),
            (sum(1 for k in a if k[0] == kind and k not in b), "removed"),
            (sum(1 for k in b if k[0] == kind and k in a and a[k] != b[k]), "changed"),
        ]
        said = [(n, what) for n, what in counts if n]
        if said:
            (n0, w0), rest = said[0], said[1:]
            parts.append(f"{n0} {split} {kind}{'s' if n0 != 1 else ''} {w0}" + "".join(f", {n} {w}" for n, w in rest))
    return ", ".join(parts) or f"the {split} files are listed in another order"
