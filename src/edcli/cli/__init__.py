"""The `ed` Typer app: thin commands (parse -> config -> one commands.<cmd>.run(...) -> render).

The only typer importer: `core` (the app, its help layout, the runner), `options` (the shared options), and the
command modules, imported here in the order of `ed --help`: `prepare` (distmaps, features), `train`, `evaluate`
(eval), `deploy` (infer, export, report, demo).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edcli.cli.core import app, command, run_command

# each command module registers its commands on `app` when imported: this order is the order of `ed --help`
# isort: off
from edcli.cli import prepare  # noqa: F401
from edcli.cli import train  # noqa: F401
from edcli.cli import evaluate  # noqa: F401
from edcli.cli import deploy  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    import os

    try:
        os.getcwd()
    except FileNotFoundError:  # torch's MKL would die at import with "Cannot load libtorch_cpu.so" (exit 2)
        sys.stderr.write(
            "error: the current directory no longer exists (deleted or unmounted); cd to an existing folder and run "
            "the command again\n"
        )
        raise SystemExit(1) from None

    # idle OpenMP threads sleep instead of spinning: on a shared or small CPU (and beside DataLoader workers) spinning
    # threads steal the cores the work needs. Set before torch is imported; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import signal

    from edcli.errors import TERMINATING, raise_terminated

    # SIGTERM (schedulers, `kill`) and SIGHUP (a closed terminal) stop a command as Ctrl-C does: resume state kept,
    # temp files removed, a message
    stops = [getattr(signal, name) for name in TERMINATING if hasattr(signal, name)]
    for sig in stops:
        signal.signal(sig, raise_terminated)
    try:
        app(prog_name="ed")
    finally:
        # the command has finished and said so: a Ctrl-C or SIGTERM from here on (interpreter shutdown, h5py and
        # torch finalisers) must not turn its exit code into a signal death or print a traceback
        for sig in (signal.SIGINT, *stops):
            signal.signal(sig, signal.SIG_IGN)


@command("completions", hidden=True)
def completions(
    folder: Annotated[Path, typer.Argument(help="Where to write ed.bash, ed.zsh and ed.fish.")] = Path("completions"),
) -> None:
    """Regenerate the static shell completion scripts."""
    from edcli.completions import completion_scripts
    from edcli.files import write_text

    scripts = completion_scripts(typer.main.get_command(app))

    def write() -> None:
        for name, text in scripts.items():
            write_text(folder / name, text)
            typer.echo(str(folder / name))

    run_command(write)
