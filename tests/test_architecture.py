"""The import rules of design.md, enforced on the AST of every module (imports inside functions and relative
imports included): layers only import down or sideways, the graph has no cycle, one importer (a module, or every
module of one package) per heavy library, and the `method/` folder stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "edcli"

# top to bottom; a module may import its own layer or lower ones. Packages are placed by folder.
LAYERS = [
    {"edcli", "edcli.__main__"},
    {"edcli.cli", "edcli.ui", "edcli.completions"},
    {"edcli.commands"},
    {
        "edcli.features",
        "edcli.training",
        "edcli.validation",
        "edcli.evaluate",
        "edcli.distributed",
        "edcli.report",
        "edcli.html_report",
        "edcli.detector",
        "edcli.scorer",
        "edcli.onnxio",
        "edcli.infer_output",
        "edcli.infer_scoring",
        "edcli.ray_infer",
    },
    {"edcli.engine", "edcli.backbone", "edcli.store", "edcli.checkpoint", "edcli.metrics", "edcli.data"},
    {"edcli.method"},
    {"edcli.config", "edcli.errors", "edcli.track", "edcli.files", "edcli.version", "edcli.identity"},
]
# the one module, or package (placed by folder: all its modules), that may import the library
ONLY_IMPORTER = {
    "typer": "edcli.cli",
    "rich": "edcli.ui",
    "h5py": "edcli.store",
    "timm": "edcli.backbone",
    "onnx": "edcli.onnxio",
    "onnxruntime": "edcli.onnxio",
    "ray": "edcli.ray_infer",
}
FORBIDDEN_IN_METHOD = (
    "h5py",
    "timm",
    "typer",
    "rich",
    "PIL",
    "edcli.store",
    "edcli.backbone",
    "edcli.data",
    "edcli.cli",
    "edcli.ui",
    "edcli.files",
)


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, src: Path = SRC) -> set[str]:
    """Every module name an import statement in the file names, relative imports resolved."""
    mod = module_name(path, src)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{a.name}" for a in node.names)
    return names


def modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted(src.rglob("*.py"))}


def internal_edges(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the edcli modules it imports (a name that is an attribute resolves to its module)."""
    mods = modules(src)
    edges = {}
    for name, path in mods.items():
        targets = set()
        for imp in imports_of(path, src):
            while imp and imp not in mods:
                imp = imp.rpartition(".")[0]
            if imp and imp != name and not (name.startswith(imp + ".") and mods[imp].name == "__init__.py"):
                targets.add(imp)
        edges[name] = targets
    return edges


def owns(owner: str, name: str, mods: dict[str, Path]) -> bool:
    """`name` is `owner` or, when `owner` is a package, one of the modules inside it."""
    return name == owner or (name.startswith(owner + ".") and mods.get(owner, Path()).name == "__init__.py")


def foreign_heavy_imports(name: str, mods: dict[str, Path], src: Path = SRC) -> list[str]:
    """The heavy libraries module `name` imports although another module or package owns them."""
    imported = imports_of(mods[name], src)
    return [
        f"{name} imports {lib}; only {owner} may"
        for lib, owner in ONLY_IMPORTER.items()
        if not owns(owner, name, mods) and any(n == lib or n.startswith(lib + ".") for n in imported)
    ]


def layer_of(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    for i, layer in enumerate(LAYERS):  # a module inside a package placed by its folder
        if any(name.startswith(p + ".") for p in layer if p != "edcli"):
            return i
    raise AssertionError(f"{name} has no layer: add it to LAYERS in tests/test_architecture.py (and design.md)")


def upward_imports(src: Path = SRC) -> list[str]:
    return [
        f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
        for a, bs in internal_edges(src).items()
        for b in sorted(bs)
        if layer_of(b) < layer_of(a)
    ]


def find_cycle(src: Path = SRC) -> list[str]:
    """One import cycle as a list of modules, or [] when the graph is acyclic."""
    edges = internal_edges(src)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_only_point_down():
    bad = upward_imports()
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycle():
    cycle = find_cycle()
    assert not cycle, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("name", sorted(modules()), ids=str)
def test_heavy_library_has_one_importer(name: str):
    bad = foreign_heavy_imports(name, modules())
    assert not bad, "; ".join(bad)


def test_the_store_package_is_placed_by_its_folder():
    store = [n for n in modules() if n == "edcli.store" or n.startswith("edcli.store.")]
    assert {"edcli.store", "edcli.store.hdf5"} <= set(store)
    assert {layer_of(n) for n in store} == {layer_of("edcli.store")}


def test_the_cli_package_is_placed_by_its_folder():
    cli = [n for n in modules() if owns("edcli.cli", n, modules())]
    assert {"edcli.cli", "edcli.cli.core", "edcli.cli.options"} <= set(cli)
    assert {layer_of(n) for n in cli} == {layer_of("edcli.cli")}


def test_nothing_imports_cli_or_ui():
    mods = modules()
    for a, bs in internal_edges().items():
        in_cli = owns("edcli.cli", a, mods)
        assert in_cli or a == "edcli.__main__" or not any(owns("edcli.cli", b, mods) for b in bs), (
            f"{a} imports edcli.cli"
        )
        assert "edcli.ui" not in bs or in_cli, f"{a} imports edcli.ui"


def test_method_folder_is_pure():
    pure = [n for n in modules() if n.startswith("edcli.method")]
    assert {"edcli.method.model", "edcli.method.prior", "edcli.method.loss", "edcli.method.scoring"} <= set(pure)
    for name in pure:
        bad = {n for n in imports_of(modules()[name]) for f in FORBIDDEN_IN_METHOD if n == f or n.startswith(f + ".")}
        assert not bad, f"{name} imports {sorted(bad)}"


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / "edcli"
    for rel, text in {
        "__init__.py": "",
        "errors.py": "",
        "cli.py": "",
        "method/__init__.py": "",
        "method/model.py": "from edcli.errors import X\n",
        **files,
    }.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


def test_checker_catches_an_upward_import(tmp_path: Path):
    src = _tree(tmp_path, {"method/model.py": "def f():\n    from ..cli import app\n"})
    assert upward_imports(src) == ["edcli.method.model (layer 5) imports edcli.cli (layer 1)"]


def test_checker_catches_a_cycle(tmp_path: Path):
    src = _tree(tmp_path, {"errors.py": "def f():\n    import edcli.method.model\n"})
    assert find_cycle(src) == ["edcli.errors", "edcli.method.model", "edcli.errors"]


def test_checker_lets_only_the_owning_package_import_a_library(tmp_path: Path):
    src = _tree(
        tmp_path,
        {
            "store/__init__.py": "from edcli.store.hdf5 import f\n",
            "store/hdf5.py": "import h5py\n",
            "store/keys.py": "from h5py import File\n",
            "storage.py": "import h5py\n",
            "cli.py": "import typer\nimport h5py.h5f\n",
            "ui.py": "",
            "ui/extra.py": "import rich\n",
        },
    )
    mods = modules(src)
    assert {n: foreign_heavy_imports(n, mods, src) for n in mods if foreign_heavy_imports(n, mods, src)} == {
        "edcli.cli": ["edcli.cli imports h5py; only edcli.store may"],
        "edcli.storage": ["edcli.storage imports h5py; only edcli.store may"],
        "edcli.ui.extra": ["edcli.ui.extra imports rich; only edcli.ui may"],
    }


def test_no_cuda_calls_outside_engine():
    for name, path in modules().items():
        assert ".cuda()" not in path.read_text(), f"{name} calls .cuda(); devices are decided in engine.py"
