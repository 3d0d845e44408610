"""A training run on the console, once `train` has planned it: the Trainer of the planned run,
training under SIGINT and SIGTERM, what is printed before and after, the command that goes on
after a failure or an interruption, and `--nproc`'s hand-over to torchrun."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path

import typer

from charrnn.cli.console import state as _state
from charrnn.config import TrainConfig
from charrnn.errors import WriteError, plural
from charrnn.train.runlock import LOCK_HOLDER, RunLock

LAUNCHED_AS = "CHARRNN_LAUNCHED_AS"  # set for the processes `train --nproc` starts: the user's command


def prepare_and_launch(nproc: int, lock: RunLock, plan_run, load, display) -> None:
    """`train --nproc N`: plan the run and prepare the corpus here, then start the processes."""
    from charrnn.machine.device import pick_device

    with lock:  # held for the workers until they end (their rank 0 finds it held by us)
        planned = plan_run(nproc)
        pick_device(planned.cfg.device)  # a device that is not here: one error now, not one per process
        load(planned.vocab)  # the processes find it in the cache
        _launch(nproc, display)


def choose_size(planned, data, given: set[str], dist):
    """--size auto (train/sizing.py), decided by rank 0 for every process: the plan with the
    chosen model options, and the choice (None when nothing was chosen)."""
    import dataclasses

    from charrnn import STARTED
    from charrnn.train import plan
    from charrnn.train.distributed import command_started

    train_chars = len(data.split(planned.cfg.val_frac)[0])
    cfg, choice = dist.from_main(
        lambda: plan.size_model(
            planned, given, train_chars, len(data.vocab), command_started(STARTED), dist.local_world
        )
    )
    return dataclasses.replace(planned, cfg=cfg), choice


def make_trainer(planned, data, init_from: Path | None, run_dir: Path, display, dist):
    """The Trainer of the planned run on the loaded corpus (a corpus too short for it leaves no
    cache entry behind)."""
    from charrnn import STARTED
    from charrnn.data.prepare import forget
    from charrnn.train import plan
    from charrnn.train.distributed import command_started
    from charrnn.train.trainer import CorpusTooShort

    cfg = planned.cfg
    plan.check_init_vocab(planned, len(data.vocab), init_from)
    train_ids, val_ids = data.split(cfg.val_frac)
    Trainer = plan.trainer_class(cfg)
    if cfg.engine == "numpy":
        display.message("engine numpy: gradients by the hand-written BPTT of charrnn/numpy_ref.py")
    try:
        return Trainer(
            cfg,
            data.vocab,
            train_ids,
            val_ids,
            run_dir,
            events=display,
            resume_from=planned.resume_ckpt,
            init_from=planned.init_ckpt,
            corpus_path=data.path,
            corpus_digest=data.digest,
            dist=dist,
            started_at=command_started(STARTED),
        )
    except CorpusTooShort:
        forget(data)  # a refused corpus leaves no cache entry behind
        raise


def fit_under_signals(trainer, display, dist, run_dir: Path) -> tuple[dict, list[int]]:
    """Train, with SIGINT and SIGTERM asking the trainer to stop (a second one, in a single
    process, ends at once); the summary and the signals received."""
    from charrnn.train import plan

    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        trainer.stop(signal.Signals(signum).name)
        if dist.world == 1:  # a second one ends at once (torchrun repeats signals, and kills after 30 s)
            signal.signal(signum, signal.SIG_DFL)

    old = {
        s: signal.signal(s, on_signal)
        for s in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(s) is not signal.SIG_IGN
    }
    try:
        with display:
            return trainer.fit(), received
    except WriteError as exc:
        raise plan.after_failed_write(exc, run_dir, lambda resume: _resume_hint(dist, resume)) from None
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def report(trainer, summary: dict, received: list[int], data, display, dist) -> None:
    """The summary (rank 0), a warning if the model learned nothing, and after a signal how to go
    on and its exit code."""
    if not dist.main:
        if received:
            raise typer.Exit(128 + received[0])
        return
    display.summary(summary)
    if summary["reason"] == "done" and trainer.last_eval is not None:
        from charrnn.train.evaluation import learned_nothing

        warning = learned_nothing(trainer.last_eval, data.ids, len(data.vocab))
        if warning:
            display({"event": "warning", "message": warning})
        elif trainer.last_eval["val_loss"] is not None:
            from charrnn.train.expected import run_verdict

            line = run_verdict(summary["best_loss"], summary["chars_seen"], data.vocab.chars, data.ids)
            if line:
                display.message(line)
    if received or summary["reason"] == "stopped by another process":
        why = signal.Signals(received[0]).name if received else "a signal to another process"
        display.console.print(
            f"stopped by {why}; progress saved in {summary['last']}\n{_resume_hint(dist)}", soft_wrap=True, markup=False
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


def describe_corpus(display, data, cfg: TrainConfig) -> None:
    train_ids, val_ids = data.split(cfg.val_frac)
    display.message(
        f"{data.path}: {plural(len(data.ids), 'character')}, {len(data.vocab):,} distinct{_prepared(data.info)}; "
        f"{len(train_ids):,} to train on, {len(val_ids):,} for validation"
    )


def _prepared(info: dict | None) -> str:
    if not info or info.get("cached"):
        return ""
    seconds = (info.get("counted_s") or 0) + (info.get("encoded_s") or 0)
    return f" (prepared in {seconds:.1f} s)" if seconds >= 0.5 else ""


def _launch(nproc: int, display) -> None:
    """Run the same command in `nproc` processes under torchrun (in this process, so that its
    failures become an exit code and the workers' one-line errors are all that is printed)."""
    import time

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from charrnn import STARTED
    from charrnn.machine.threads import cores_here
    from charrnn.train.distributed import launch_command

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
