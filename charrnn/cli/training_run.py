"""A training run on the console, around `charrnn.train()`: SIGINT and SIGTERM stop it (the
first saves last.pt; in a single process a second ends at once), what is printed after it (how
to go on after an interruption, its exit code), the command that goes on after a failure, and
`--nproc`'s hand-over to torchrun (launching processes is the command's business)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys

import typer

from charrnn.api.training import Run, Stop
from charrnn.cli.console import state as _state
from charrnn.training.distributed import Dist
from charrnn.training.runlock import LOCK_HOLDER

LAUNCHED_AS = "CHARRNN_LAUNCHED_AS"  # set for the processes `train --nproc` starts: the user's command


class SignalStop(Stop):
    """A `Stop` that SIGINT and SIGTERM call while the model trains (before, charrnn/signals.py
    ends the command at once); the signals received, for the exit code."""

    def __init__(self, dist: Dist | None = None) -> None:
        super().__init__()
        self.received: list[int] = []
        self.single = (dist or Dist.from_env()).world == 1

    def on_signal(self, signum, frame) -> None:
        self.received.append(signum)
        self(signal.Signals(signum).name)
        if self.single:  # a second one ends at once (torchrun repeats signals, and kills after 30 s)
            signal.signal(signum, signal.SIG_DFL)

    @contextlib.contextmanager
    def attached(self, trainer):
        old = {
            s: signal.signal(s, self.on_signal)
            for s in (signal.SIGINT, signal.SIGTERM)
            if signal.getsignal(s) is not signal.SIG_IGN
        }
        try:
            with super().attached(trainer):
                yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def resume_hint(resume: bool) -> str:
    """How the error of a failed write says to go on: this command, with --resume if it can."""
    return _resume_hint(Dist.from_env(), resume)


def report(run: Run, stop: SignalStop, display) -> None:
    """After a signal (or another process') how to go on, and its exit code (the summary and how
    the run did were shown by the display, from the run's events)."""
    dist, received = Dist.from_env(), stop.received
    if not dist.main:
        if received:
            raise typer.Exit(128 + received[0])
        return
    if received or run.reason == "stopped by another process":
        why = signal.Signals(received[0]).name if received else "a signal to another process"
        display.console.print(
            f"stopped by {why}; progress saved in {run.summary['last']}\n{_resume_hint(dist)}",
            soft_wrap=True,
            markup=False,
        )
        if received:
            raise typer.Exit(128 + received[0])


def _resume_hint(dist, resume: bool = True) -> str:
    """The command that goes on: the user's own, with --resume (or, for a run that kept nothing,
    without: it starts again)."""
    launched = os.environ.get(LAUNCHED_AS)  # the command the user typed, when --nproc started torchrun
    argv = json.loads(launched) if launched else sys.argv[1:]
    argv = shlex.join(a for a in argv if a not in ("--overwrite", "--resume"))
    if not resume:
        return (
            f"start again with{' the same torchrun command' if dist.world > 1 and not launched else ''}: charrnn {argv}"
        )
    if dist.world > 1 and not launched:
        return f"resume with the same torchrun command, adding --resume to: charrnn {argv}"
    return f"resume with: charrnn {argv} --resume"


def launch(nproc: int, display) -> None:
    """Run the same command in `nproc` processes under torchrun (in this process, so that its
    failures become an exit code and the workers' one-line errors are all that is printed)."""
    import time

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from charrnn import STARTED
    from charrnn.machine.threads import cores_here
    from charrnn.training.distributed import launch_command

    args, env = launch_command(
        sys.argv[1:], nproc, cores_here(), started_wall=time.time() - (time.monotonic() - STARTED)
    )
    display.message(f"launching {nproc} processes: torchrun {' '.join(args)}")
    os.environ.update(env, **{LOCK_HOLDER: str(os.getpid())})  # we hold the run folder's lock for them
    if not _state["debug"]:  # the workers report their own errors; torchrun's log would repeat them
        import logging

        quiet = logging.getLogger("torch.distributed.elastic")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    try:
        run(parse_args(args))
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        raise typer.Exit(next((c if c > 0 else 128 - c for c in codes if c), 1)) from None
    except SignalException as exc:  # the workers were told too; they saved and stopped
        raise typer.Exit(128 + int(exc.sigval)) from None
    raise typer.Exit(0)
