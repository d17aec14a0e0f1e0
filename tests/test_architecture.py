"""The import rules of design.md, enforced by walking the AST of every module."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "edcli"
ONLY_IMPORTER = {"typer": "cli", "rich": "ui", "h5py": "store", "timm": "backbone"}
# the pure maths know nothing of files, HDF5, timm, typer or rich
PURE = {"model", "prior", "loss", "scoring", "metrics"}
FORBIDDEN_IN_PURE = {"h5py", "timm", "typer", "rich", "edcli.store", "edcli.backbone", "edcli.data", "edcli.cli", "edcli.ui"}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


MODULES = sorted(p for p in SRC.glob("*.py"))


def test_modules_found():
    assert {"cli", "ui", "store", "backbone", "model"} <= {p.stem for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_heavy_library_has_one_importer(path: Path):
    imported = imports_of(path)
    for lib, owner in ONLY_IMPORTER.items():
        uses = any(n == lib or n.startswith(lib + ".") for n in imported)
        if path.stem != owner:
            assert not uses, f"{path.name} imports {lib}; only {owner}.py may"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_nothing_imports_cli_or_ui(path: Path):
    imported = imports_of(path)
    allowed = {"cli": {"__main__"}, "ui": {"cli"}}
    for mod, who in allowed.items():
        if any(n == f"edcli.{mod}" or n.startswith(f"edcli.{mod}.") for n in imported):
            assert path.stem in who, f"{path.name} imports edcli.{mod}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.stem in PURE], ids=lambda p: p.stem)
def test_pure_modules_stay_pure(path: Path):
    imported = imports_of(path)
    bad = {n for n in imported for f in FORBIDDEN_IN_PURE if n == f or n.startswith(f + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"


def test_rule_checker_catches_a_violation(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text("import h5py\nfrom rich.table import Table\n")
    assert {"h5py", "rich.table"} <= imports_of(bad)


def test_no_cuda_calls_outside_engine():
    for path in MODULES:
        text = path.read_text()
        assert ".cuda()" not in text, f"{path.name} calls .cuda(); devices are decided in engine.py"
