"""Keep README.md honest: its set-up commands are CI's, and its command sections list exactly the app's options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DEMO_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/ed demo"
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q"
)


def _app_options() -> dict[str, set[str]]:
    import typer

    from edcli.cli import app

    root = typer.main.get_command(app)
    out = {}
    for name, cmd in root.commands.items():
        if cmd.hidden:
            continue
        out[name] = {o for p in cmd.params for o in [*p.opts, *p.secondary_opts] if o.startswith("--")}
    return out


def _sections() -> dict[str, str]:
    parts = re.split(r"^### `ed (\w+)`", README, flags=re.M)
    return {parts[i]: parts[i + 1].split("\n## ")[0] for i in range(1, len(parts), 2)}


def test_the_two_setup_commands_are_in_the_readme_and_ci_runs_the_test_one():
    assert DEMO_COMMAND in README and TEST_COMMAND in README
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_every_command_has_a_section():
    assert set(_sections()) == set(_app_options())


@pytest.mark.parametrize("command", sorted(_app_options()))
def test_section_lists_exactly_the_options(command):
    section = _sections()[command]
    line = next((ln for ln in section.splitlines() if ln.startswith("Options:")), None)
    assert line is not None, f"README section of ed {command} has no 'Options:' line"
    listed = set(re.findall(r"`(--[a-z0-9-]+)`", line))
    assert listed == _app_options()[command], (
        f"ed {command}: README lists {sorted(listed - _app_options()[command])} that the app lacks and lacks "
        f"{sorted(_app_options()[command] - listed)}"
    )


def test_options_used_in_readme_examples_exist():
    """Every `ed CMD ... --opt` in a code block names an option CMD really has."""
    opts = _app_options()
    blocks = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.S)
    checked = 0
    for lang, block in blocks:
        if lang not in ("bash", "sh", "console", ""):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            m = re.search(r"(?:^|\s|/)ed (\w+)\b(.*)", line)
            if not m or m.group(1) not in opts:
                continue
            for opt in re.findall(r"\s(--[a-z0-9-]+)", m.group(2)):
                assert opt in opts[m.group(1)] or opt in ("--help",), (
                    f"README example uses {opt} with ed {m.group(1)}: {line}"
                )
                checked += 1
    assert checked > 20


def test_dataset_layouts_are_one_list():
    """The CLI's --dataset choices, the README's table and data.layouts.LAYOUTS name the same layouts."""
    from conftest import invoke

    from edcli.data.layouts import LAYOUTS

    table = README.split("## Datasets", 1)[1].split("\n## ", 1)[0]
    in_readme = re.findall(r"^\| `(\w+)`", table, flags=re.M)
    for name in ("features", "train", "eval"):
        shown = re.search(r"--dataset\s+-d\s+<([\w|]+)>", invoke(name, "--help").stdout)  # a rich help panel row
        assert shown and shown.group(1).split("|") == list(LAYOUTS), name
    assert in_readme == list(LAYOUTS)
    for name, lay in LAYOUTS.items():  # each row is the registry's own description
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| `{name}`"))
        assert lay.doc_layout in row and lay.doc_resize in row, name


def test_readme_lists_the_accepted_mask_names():
    """The mask table of README "Datasets" is the registry's: folder, names and extensions per layout."""
    from edcli.data.layouts import LAYOUTS

    table = README.split("## Datasets", 1)[1].split("\n## ", 1)[0]
    for name, lay in LAYOUTS.items():
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| {name} |"))
        assert lay.mask_dir.replace("{type}", "<type>") in row, name
        assert all(f"`{n.replace('{stem}', '<stem>')}`" in row for n in lay.mask_names), name
        assert "any image type" in row if len(lay.mask_exts) > 2 else all(f"`{e}`" in row for e in lay.mask_exts)


def test_architecture_names_every_module():
    """ARCHITECTURE.md's code map names every module under src/edcli (a new module must be placed on the map)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    src = ROOT / "src" / "edcli"
    missing = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        name = f"{rel.parent.as_posix()}/" if rel.name == "__init__.py" and rel.parent != Path(".") else rel.as_posix()
        if f"`{name}`" not in text and f"`{rel.as_posix()}`" not in text:
            missing.append(rel.as_posix())
    assert not missing, f"ARCHITECTURE.md does not name {missing}"
    assert "ARCHITECTURE.md" in README.split("## Development", 1)[1]
