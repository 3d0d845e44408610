"""The command line: flags, help, progress on stderr, data on stdout, exit codes. No ML here.

The Typer app and its global options; each group of commands lives in its own module and is
registered here (training.py, sampling.py, model_files.py, serving.py, benchmark.py, insight.py).
torch is imported only inside the commands that need it, so `charrnn --help` starts fast.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from charrnn import __version__
from charrnn.cli import benchmark, insight, model_files, sampling, serving, training
from charrnn.cli.console import state
from charrnn.signals import install as quit_quietly_on_signals

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Train character-level LSTM / GRU / RNN language models on any text, and sample from them.\n\n"
    "  charrnn train corpora/shakespeare.txt --time-budget 300\n\n"
    "  charrnn sample --temp 0.8 --length 500",
)
insight.register(app)  # eval, plot, neurons, runs (in their own help panel)
training.register(app)  # train, prepare
sampling.register(app)  # sample, play
model_files.register(app)  # info, export
benchmark.register(app)  # bench
serving.register(app)  # serve


def _version(value: bool) -> None:
    if value:
        typer.echo(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
) -> None:
    state["debug"] = debug


def main() -> None:
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit becomes a write error we can report, not a crash
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    quit_quietly_on_signals()  # (again: main() may be called without __main__); training installs gentler ones
    try:
        app()
    except SystemExit as exc:
        if "torch" in sys.modules and not state["debug"]:
            _exit_now(exc.code)
        raise


def _exit_now(code) -> None:
    """End a process that loaded torch without the interpreter's teardown, once everything is
    written and flushed. torch's teardown takes 1-2 s here (more on a busy machine), which
    --time-budget, the whole command's wall clock, would not see; and in a process that ran
    torch.distributed (a torchrun worker, `train --nproc`'s launcher) gloo's and the rendezvous
    store's C++ threads can abort it ("terminate called without an active exception", exit 134:
    about 1 run in 6 of tests/training/test_distributed.py on a busy machine, before this session's
    changes too; pytorch/pytorch#179291 describes the cause)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    main()
