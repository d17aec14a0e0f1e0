"""The shell completion scripts in completions/ are generated from the app and must be current."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _scripts() -> dict[str, str]:
    import typer

    from edcli.cli import app
    from edcli.completions import completion_scripts

    return completion_scripts(typer.main.get_command(app))


def test_completions_are_current():
    for name, text in _scripts().items():
        path = ROOT / "completions" / name
        assert path.exists(), f"{path} is missing: run `python -m edcli completions completions`"
        assert path.read_text() == text, f"{path} is stale: run `python -m edcli completions completions`"


def test_completions_cover_every_command_and_option():
    import typer

    from edcli.cli import app

    scripts = _scripts()
    root = typer.main.get_command(app)
    for name, cmd in root.commands.items():
        if cmd.hidden:
            continue
        for p in cmd.params:
            for opt in (o for o in [*p.opts, *p.secondary_opts] if o.startswith("--")):
                assert opt in scripts["ed.bash"] and opt in scripts["ed.zsh"], (name, opt)
                assert f"-l {opt[2:]}" in scripts["ed.fish"], (name, opt)


def test_bash_script_completes_options():
    if not shutil.which("bash"):
        pytest.skip("no bash")
    script = (ROOT / "completions" / "ed.bash").read_text()
    probe = script + '\nCOMP_WORDS=(ed train --ep); COMP_CWORD=2; _ed; echo "${COMPREPLY[@]}"\n'
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["--epochs"]
    probe = script + '\nCOMP_WORDS=(ed in); COMP_CWORD=1; _ed; echo "${COMPREPLY[@]}"\n'
    assert subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split() == ["infer"]


def test_bash_script_completes_short_options_and_option_values():
    if not shutil.which("bash"):
        pytest.skip("no bash")
    from edcli.config import PRECISIONS
    from edcli.data.layouts import LAYOUTS

    script = (ROOT / "completions" / "ed.bash").read_text()

    def complete(*words: str) -> list[str]:
        probe = (
            script + f'\nCOMP_WORDS=({" ".join(words)}); COMP_CWORD={len(words) - 1}; _ed; echo "${{COMPREPLY[@]}}"\n'
        )
        return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True).stdout.split()

    assert complete("ed", "train", "--precision", "") == list(PRECISIONS)
    assert complete("ed", "train", "--precision", "b") == ["bf16"]
    assert complete("ed", "features", "-d", "") == list(LAYOUTS)  # a short option's values
    assert complete("ed", "eval", "--device", "c") == ["cpu", "cuda"]
    assert "-j" in complete("ed", "train", "-")


def test_zsh_and_fish_keep_colons_and_complete_values():
    scripts = _scripts()
    assert "per category\\: prototypes" in scripts["ed.zsh"]  # escaped, so zsh shows the colon
    assert ":precision:(fp32 bf16 fp16)" in scripts["ed.zsh"] and "'(-d --dataset)-d[" in scripts["ed.zsh"]
    assert (
        "-l precision -d 'Autocast precision of the matrix products: fp16 needs a GPU, bf16 a GPU or a CPU with bf16 "
        "units (AVX512-BF16 or AMX)' -x -a 'fp32 bf16 fp16'" in scripts["ed.fish"]
    )
    assert "-l dataset -s d" in scripts["ed.fish"] and "per category: prototypes" in scripts["ed.fish"]
