"""The Typer app, its help layout, the runner that turns errors into exit codes, and the option parsers the commands
share. The command modules register on `app` through `command`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from edcli.cli.options import OUTPUT, PANELS, DatasetName
from edcli.config import BackboneConfig, DataConfig
from edcli.version import __version__


# ------------------------------------------------------------------------------------------- help layout
class _HelpParams:
    """Help panels in the order of PANELS (--help in Output); no `<bool>` type column for flags, nor `<list[str]>`
    for a variadic argument."""

    def get_params(self, ctx):
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
            if p.param_type_name == "option" and p.name == "help" and isinstance(self, TyperCommand):
                p.rich_help_panel = OUTPUT
            if p.param_type_name == "argument" and p.nargs != 1:  # its name (INPUTS...) says it; not <list[str]>
                p.display_type_rich = lambda ctx: None
        rank = {name: i for i, name in enumerate(PANELS)}
        return sorted(
            params,
            key=lambda p: (
                -1
                if p.param_type_name == "argument"
                else rank.get(getattr(p, "rich_help_panel", None) or "", len(PANELS))
            ),
        )


class _Group(_HelpParams, TyperGroup):
    pass


class _Command(_HelpParams, TyperCommand):
    """Usage as `ed infer [OPTIONS] CHECKPOINT INPUTS...` (Typer writes `{checkpoint} {inputs}...`)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if p.param_type_name == "argument":
                name = (p.metavar or p.name or "").upper()
                name += "..." if p.nargs != 1 and not name.endswith("...") else ""
                pieces.append(name if p.required else f"[{name}]")
        return pieces


app = typer.Typer(
    name="ed",
    cls=_Group,
    help="Unsupervised image anomaly detection with ED (Emphasize Differences): train on normal images, "
    "score new ones, localise their defects.",
    no_args_is_help=True,
    add_completion=False,  # the static scripts of `completions/` are the way (README "Shell completions")
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # help panels per option group; typer imports rich only to render help
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _escape(text: str) -> str:
    """Literal square brackets in rich markup (help text is rendered with rich_markup_mode="rich")."""
    return text.replace("[", "\\[")


def _examples(*lines: str) -> str:
    """The epilog of a command's help: a few complete command lines."""
    return "[bold]Examples[/bold]\n\n" + "\n\n".join(f"  [cyan]$ {_escape(line)}[/cyan]" for line in lines)


def command(name: str | None = None, examples: tuple[str, ...] = (), **kw):
    """Register a command on `app` with the help layout above and `examples` as its epilog."""
    return app.command(name, cls=_Command, epilog=_examples(*examples) if examples else None, **kw)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ed {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """ed: ED anomaly detection from the command line."""


# ------------------------------------------------------------------------------------------- runner
def run_command(fn: Callable[[], Any]) -> Any:
    """Run a command; EdError -> one red line + its exit code; an OSError (disk full, read-only, permission) -> one
    line naming the path, exit 1; Ctrl-C -> exit 130, SIGTERM -> exit 143, SIGHUP -> 129 (the same clean-up, its
    own words). Under torchrun only rank 0 renders."""
    import os

    from edcli.errors import EdError, Terminated
    from edcli.ui import print_error

    # the command whose body built `fn` ("features.<locals>.<lambda>", "eval_.<locals>.go"): messages name it
    name = f"ed {fn.__qualname__.split('.')[0].rstrip('_')}" if ".<locals>." in fn.__qualname__ else "ed"
    finished = False
    try:
        result = fn()
        finished = True
        return result if os.environ.get("RANK", "0") == "0" else None
    except EdError as exc:
        print_error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:  # a write or read the layers below did not name themselves
        where = exc.filename if exc.filename is not None else "a file"
        print_error(f"{name}: cannot access {where}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt as exc:
        hint = "; rerun with --resume to continue" if name in ("ed train", "ed infer") else ""
        how, code = (
            (f"terminated ({exc.name})", 128 + exc.signum) if isinstance(exc, Terminated) else ("interrupted", 130)
        )
        print_error(f"{name}: {how}; completed work is kept{hint}")
        raise typer.Exit(code) from None
    finally:
        if "torch.distributed" in sys.modules:  # only under torchrun; --help never imports torch
            from edcli.engine import shutdown_distributed

            shutdown_distributed(finished)


# ------------------------------------------------------------------------------------------- parsers
def int_list(text: str, option: str, example: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        values = ()
    if not values:
        raise typer.BadParameter(f"{text!r}: give integers like {example}", param_hint=option)
    return values


def parse_levels(text: str) -> tuple[int, ...]:
    return int_list(text, "--levels", "2,3")


def tracker(quiet: bool):
    from edcli.ui import Tracker

    return Tracker(quiet=quiet)


def backbone_config(backbone: str, levels: str, weights: Path | None, random_init: bool) -> BackboneConfig:
    return BackboneConfig(
        name=backbone, levels=parse_levels(levels), weights=str(weights) if weights else None, random_init=random_init
    )


def data_config(
    dataset: DatasetName,
    data_path: Path | None,
    category: list[str] | None,
    image_size: int,
    normal_name: str,
    test_fraction: float,
    split_seed: int,
) -> DataConfig:
    return DataConfig(
        dataset=dataset.value,
        data_path=str(data_path) if data_path else "",
        categories=tuple(category or ()),
        image_size=image_size,
        normal_name=normal_name,
        test_fraction=test_fraction,
        split_seed=split_seed,
    )


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
