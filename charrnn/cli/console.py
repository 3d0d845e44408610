"""What every command shares: the console on stderr, one line per error (or the traceback with
--debug), and how a flag shows its default."""

from __future__ import annotations

from typing import Any

import typer

from charrnn.config import SampleConfig, TrainConfig, defaults, help_of
from charrnn.errors import CharRNNError

state = {"debug": False}  # set by the app's --debug
TRAIN_DEFAULTS = defaults(TrainConfig)
SAMPLE_DEFAULTS = defaults(SampleConfig)


def opt(name: str, help: str, panel: str, table: dict = TRAIN_DEFAULTS, **kw) -> Any:
    default = table.get(name)
    if default is not None:
        help += f" [dim]\\[default: {default}][/]"
    return typer.Option(help=help, show_default=False, rich_help_panel=panel, **kw)


def flag(name: str, panel: str | None = None, cls=TrainConfig, **kw) -> Any:
    """The flag of option `name` of `cls` (a config dataclass of config.py): its help text and
    default from the field, where they are written once; None on the command line means "not
    given" (a --config file, or the default, fills it)."""
    help, default_text = help_of(cls, name)
    if default_text is not None:
        help += f" \\[default: {default_text}]"
        return typer.Option(help=help, show_default=False, rich_help_panel=panel, **kw)
    return opt(name, help, panel, defaults(cls), **kw)


def stderr():
    from rich.console import Console

    console = Console(stderr=True, highlight=False, markup=False)  # paths and text may hold [brackets]
    console.on_broken_pipe = lambda: _stderr_gone(console)  # (rich's own ends the program: exit 1)
    return console


def _stderr_gone(console) -> None:
    """The reader of stderr went away (`2>&1 | head`, a killed `tee`): what is for people is
    dropped from then on, and the work goes on (a training to its end and its last.pt)."""
    import os
    import sys

    console.quiet = True
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stderr.fileno())  # (Python's own writes, at exit too)


def fail(exc: CharRNNError) -> None:
    if state["debug"]:
        raise exc
    if exc.elsewhere:  # another process of a distributed run prints it
        import time

        time.sleep(1.0)  # torchrun stops all processes when one ends: give that one time to print
        raise typer.Exit(exc.exit_code)
    from rich.markup import escape

    stderr().print(f"[bold red]charrnn: error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
    raise typer.Exit(exc.exit_code)
