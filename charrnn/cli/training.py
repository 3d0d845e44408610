"""`charrnn train` and `charrnn prepare`: a run's flags, its progress on stderr, and how to go on
after a failure or an interruption.

Every flag of `train` defaults to "not given" (None) and shows the real default from
`TrainConfig`, so that a `--config FILE.toml` can fill what the command line leaves out."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.config import DEFAULT_SEPARATOR, TrainConfig, build, read_toml
from charrnn.errors import CharRNNError, WriteError, plural
from charrnn.train.runlock import LOCK_HOLDER, RunLock
from charrnn.cli.console import TRAIN_DEFAULTS, fail as _fail, opt as _opt, state as _state, stderr as _stderr

LAUNCHED_AS = "CHARRNN_LAUNCHED_AS"  # set for the processes `train --nproc` starts: the user's command
MODEL, DATA, OPTIM, LENGTH, OUTPUT, RUN = "Model", "Data", "Optimisation", "Length of training", "Evaluation and checkpoints", "Run"


# ---------------------------------------------------------------------------------- train
def train(
    corpus: Annotated[list[Path], typer.Argument(help="Text to learn from: one or more files or directories (every file under them), joined with --separator.", show_default=False)],
    cell: Annotated[Optional[str], _opt("cell", "Recurrent cell: lstm, gru or rnn.", MODEL)] = None,
    layers: Annotated[Optional[int], _opt("layers", "Number of stacked recurrent layers.", MODEL)] = None,
    hidden: Annotated[Optional[int], _opt("hidden", "Hidden units per layer.", MODEL)] = None,
    embed: Annotated[Optional[int], _opt("embed", "Size of the character embedding.", MODEL)] = None,
    dropout: Annotated[Optional[float], _opt("dropout", "Dropout between layers and before the output.", MODEL)] = None,
    seq_len: Annotated[Optional[int], _opt("seq_len", "Characters per truncated-BPTT chunk (the gradient is cut between chunks; the hidden state is carried).", DATA)] = None,
    batch_size: Annotated[Optional[int], _opt("batch_size", "Parallel streams of the corpus per step.", DATA)] = None,
    val_frac: Annotated[Optional[float], _opt("val_frac", "Fraction of the corpus (its contiguous tail) held out for validation.", DATA)] = None,
    carry_state: Annotated[Optional[bool], _opt("carry_state", "Carry the hidden state from chunk to chunk (stateful truncated BPTT); --no-carry-state resets it every chunk, for comparison.", DATA)] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus.", rich_help_panel=DATA)] = "utf-8",
    errors: Annotated[str, typer.Option(help="On undecodable bytes: strict (error), replace (U+FFFD), ignore (drop them) or another Python error handler.", rich_help_panel=DATA)] = "strict",
    keep_newlines: Annotated[bool, typer.Option(help="Keep \\r\\n and \\r line endings instead of turning them into \\n.", rich_help_panel=DATA)] = False,
    separator: Annotated[str, typer.Option(help="Text put between the files of a corpus of several files.", rich_help_panel=DATA)] = DEFAULT_SEPARATOR,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where prepared corpora are kept. \\[default: $CHARRNN_CACHE or .charrnn-cache]", rich_help_panel=DATA, show_default=False)] = None,
    lr: Annotated[Optional[float], _opt("lr", "Peak learning rate (AdamW).", OPTIM)] = None,
    lr_schedule: Annotated[Optional[str], _opt("lr_schedule", "constant or cosine (decays to lr × min-lr-frac).", OPTIM)] = None,
    warmup: Annotated[Optional[int], _opt("warmup", "Steps of linear learning-rate warm-up.", OPTIM)] = None,
    min_lr_frac: Annotated[Optional[float], _opt("min_lr_frac", "Final learning rate of the cosine schedule, as a fraction of --lr.", OPTIM)] = None,
    grad_clip: Annotated[Optional[float], _opt("grad_clip", "Clip the global gradient norm to this; 0 = off.", OPTIM)] = None,
    weight_decay: Annotated[Optional[float], _opt("weight_decay", "AdamW weight decay.", OPTIM)] = None,
    max_steps: Annotated[Optional[int], _opt("max_steps", "Stop after this many steps.", LENGTH)] = None,
    max_epochs: Annotated[Optional[float], _opt("max_epochs", "Stop after this many passes over the corpus.", LENGTH)] = None,
    time_budget: Annotated[Optional[float], _opt("time_budget", "Stop after this many seconds of wall clock: the whole command, start-up, evaluations and the final save included (the LR schedule follows the clock). With --resume, the run's total: the time it trained before counts.", LENGTH)] = None,
    eval_every: Annotated[Optional[int], _opt("eval_every", "Evaluate on the validation split every N steps.", OUTPUT)] = None,
    eval_chars: Annotated[Optional[int], _opt("eval_chars", "Validation characters per evaluation (0 = all).", OUTPUT)] = None,
    save_every: Annotated[Optional[int], _opt("save_every", "Write last.pt every N steps.", OUTPUT)] = None,
    sample_every: Annotated[Optional[int], typer.Option(help="Show a short sample (fixed prime and seed, temperature 0.8) every N steps; 0 = never. \\[default: at each evaluation]", rich_help_panel=OUTPUT, show_default=False)] = None,
    sample_chars: Annotated[Optional[int], _opt("sample_chars", "Characters per live sample.", OUTPUT)] = None,
    sample_prime: Annotated[Optional[str], typer.Option(help="Prime text of the live samples. \\[default: none: start as after a newline]", rich_help_panel=OUTPUT, show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name: the folder under --out. \\[default: the corpus file's name]", rich_help_panel=OUTPUT)] = None,
    out: Annotated[Optional[str], _opt("out", "Folder that holds the runs.", OUTPUT)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out/--name exactly where last.pt left it.", rich_help_panel=OUTPUT)] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run of the same name.", rich_help_panel=OUTPUT)] = False,
    init_from: Annotated[Optional[Path], typer.Option(help="Fine-tune: start from this checkpoint's weights (the corpus must fit its vocabulary).", rich_help_panel=OUTPUT, show_default=False)] = None,
    precision: Annotated[Optional[str], _opt("precision", "fp32, bf16 or fp16: the forward pass under autocast (fp16 on CUDA only; falls back to fp32 with a warning).", RUN)] = None,
    compile: Annotated[Optional[bool], _opt("compile", "torch.compile the model (needs a C++ compiler on the CPU; falls back with a warning).", RUN)] = None,
    engine: Annotated[Optional[str], _opt("engine", "Who computes the gradients: torch (autograd), or numpy: the hand-written BPTT of charrnn/numpy_ref.py, with everything else (AdamW, schedule, checkpoints) shared. numpy: CPU, fp32, no dropout; slow, for small models.", RUN)] = None,
    seed: Annotated[Optional[int], _opt("seed", "Random seed (weights, dropout).", RUN)] = None,
    device: Annotated[Optional[str], _opt("device", "auto, cpu, cuda or mps.", RUN)] = None,
    threads: Annotated[Optional[str], typer.Option(help="CPU threads per process: auto chooses them from the cores that are free, and re-chooses while training when the load changes; a number pins it (exact resume needs the same number). \\[default: auto]", rich_help_panel=RUN, show_default=False)] = None,
    nproc: Annotated[Optional[int], typer.Option(help="Train data-parallel in this many processes on this machine (launches torchrun; --batch-size is per process).", rich_help_panel=RUN, show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option(help="A TOML file of options (keys as the flags, e.g. hidden = 512); flags given here win.", rich_help_panel=RUN, show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors and the final summary.", rich_help_panel=RUN)] = False,
    log_every: Annotated[float, typer.Option(help="Without a terminal (a log file, CI): print a progress line at least every this many seconds, besides one per evaluation; 0 = evaluations only.", rich_help_panel=OUTPUT)] = 30.0,
) -> None:
    """Train a model on CORPUS and write checkpoints to --out/--name/{last,best}.pt.

    Under torchrun (or with --nproc) it trains data-parallel, one process per CPU share or GPU.
    """
    given = {k: v for k, v in locals().items() if k in TRAIN_DEFAULTS and v is not None}
    read_options = dict(encoding=encoding, errors=errors, keep_newlines=keep_newlines, separator=separator)
    try:
        if threads is not None:
            given["threads"] = _threads_option(threads)
        if not log_every >= 0:
            raise CharRNNError(f"--log-every {log_every!r} must be 0 (evaluations only) or more seconds")
        _train(corpus, given, config, resume, overwrite, init_from, quiet, read_options, cache_dir, nproc, log_every)
    except CharRNNError as exc:
        _fail(exc)


def _threads_option(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise CharRNNError(f"--threads {value!r} must be auto or a number of threads (at least 1)")
    return int(value)


def _train(corpora: list[Path], given: dict, config: Path | None, resume: bool, overwrite: bool, init_from: Path | None, quiet: bool, read_options: dict, cache_dir: Path | None, nproc: int | None, log_every: float = 30.0) -> None:
    from charrnn.cli.display import TrainDisplay
    from charrnn.train import plan
    from charrnn.train.distributed import Dist

    dist = Dist.from_env()
    plan.check_flags(resume, overwrite, init_from, nproc, dist.world)
    file_values = read_toml(config, TrainConfig) if config else {}
    cfg = build(TrainConfig, file_values, given)
    run_dir = plan.run_folder(cfg, corpora)
    lock = RunLock(run_dir)  # taken by plan_run, on the process that writes the run folder
    display = TrainDisplay(_stderr(), quiet=quiet or not dist.main, log_every=log_every)

    def load(vocab):
        from charrnn.data.prepare import load_corpus

        with display.preparing() as progress:
            return load_corpus(corpora, vocab=vocab, cache_dir=cache_dir or _default_cache(), progress=progress, warn=display.warning, **read_options)

    def plan_run(world: int):
        return plan.plan_run(lock, run_dir, cfg, file_values, given, resume, overwrite, init_from, world)

    if nproc is not None and nproc > 1:  # check and prepare everything here, then hand over to torchrun
        _prepare_and_launch(nproc, lock, plan_run, load, display)
    if dist.world > 1:  # (a single process picks its device in the Trainer, after checking the options)
        from charrnn.machine.device import pick_device

        dist.start(pick_device(cfg.device))
    try:
        planned = dist.from_main(lambda: plan_run(dist.world))
        data = dist.local_first(lambda: load(planned.vocab))
        trainer = _make_trainer(planned, data, init_from, run_dir, display, dist)
        if overwrite and dist.main:  # only now that everything checked out: the old run is replaced, not lost to a typo
            plan.clear_for_overwrite(run_dir)
        _describe(display, data, planned.cfg)
        summary, received = _fit(trainer, display, dist, run_dir)
    finally:
        dist.close()
        lock.release()
    _after_fit(trainer, summary, received, data, display, dist)


def _prepare_and_launch(nproc: int, lock: RunLock, plan_run, load, display) -> None:
    """`train --nproc N`: plan the run and prepare the corpus here, then start the processes."""
    from charrnn.machine.device import pick_device

    with lock:  # held for the workers until they end (their rank 0 finds it held by us)
        planned = plan_run(nproc)
        pick_device(planned.cfg.device)  # a device that is not here: one error now, not one per process
        load(planned.vocab)  # the processes find it in the cache
        _launch(nproc, display)


def _make_trainer(planned, data, init_from: Path | None, run_dir: Path, display, dist):
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
        return Trainer(cfg, data.vocab, train_ids, val_ids, run_dir, events=display, resume_from=planned.resume_ckpt, init_from=planned.init_ckpt,
                       corpus_path=data.path, corpus_digest=data.digest, dist=dist, started_at=command_started(STARTED))
    except CorpusTooShort:
        forget(data)  # a refused corpus leaves no cache entry behind
        raise


def _fit(trainer, display, dist, run_dir: Path) -> tuple[dict, list[int]]:
    """Train, with SIGINT and SIGTERM asking the trainer to stop (a second one, in a single
    process, ends at once); the summary and the signals received."""
    from charrnn.train import plan

    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        trainer.stop(signal.Signals(signum).name)
        if dist.world == 1:  # a second one ends at once (torchrun repeats signals, and kills after 30 s)
            signal.signal(signum, signal.SIG_DFL)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        with display:
            return trainer.fit(), received
    except WriteError as exc:
        raise plan.after_failed_write(exc, run_dir, lambda resume: _resume_hint(dist, resume)) from None
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _after_fit(trainer, summary: dict, received: list[int], data, display, dist) -> None:
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
    if received or summary["reason"] == "stopped by another process":
        why = signal.Signals(received[0]).name if received else "a signal to another process"
        display.console.print(f"stopped by {why}; progress saved in {summary['last']}\n{_resume_hint(dist)}", soft_wrap=True, markup=False)
        if received:
            raise typer.Exit(128 + received[0])


def _resume_hint(dist, resume: bool = True) -> str:
    """The command that goes on: the user's own, with --resume (or, for a run that kept nothing,
    without: it starts again)."""
    launched = os.environ.get(LAUNCHED_AS)  # the command the user typed, when --nproc started torchrun
    argv = json.loads(launched) if launched else sys.argv[1:]
    argv = shlex.join(a for a in argv if a not in ("--overwrite", "--resume"))
    if not resume:
        return f"start again with{' the same torchrun command' if dist.world > 1 and not launched else ''}: charrnn {argv}"
    if dist.world > 1 and not launched:
        return f"resume with the same torchrun command, adding --resume to: charrnn {argv}"
    return f"resume with: charrnn {argv} --resume"


def _default_cache() -> Path:
    from charrnn.data.prepare import default_cache_dir

    return default_cache_dir()


def _describe(display, data, cfg: TrainConfig) -> None:
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
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    from charrnn.train.distributed import launch_command

    import time

    from charrnn import STARTED

    from charrnn.machine.threads import cores_here

    args, env = launch_command(sys.argv[1:], nproc, cores_here(), started_wall=time.time() - (time.monotonic() - STARTED))
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


# ---------------------------------------------------------------------------------- prepare
def prepare(
    corpus: Annotated[list[Path], typer.Argument(help="One or more files or directories (every file under them), joined with --separator.", show_default=False)],
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus.")] = "utf-8",
    errors: Annotated[str, typer.Option(help="On undecodable bytes: strict (error), replace (U+FFFD), ignore (drop them) or another Python error handler.")] = "strict",
    keep_newlines: Annotated[bool, typer.Option(help="Keep \\r\\n and \\r line endings instead of turning them into \\n.")] = False,
    separator: Annotated[str, typer.Option(help="Text put between the files of a corpus of several files.")] = DEFAULT_SEPARATOR,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where prepared corpora are kept. \\[default: $CHARRNN_CACHE or .charrnn-cache]", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was prepared as JSON on stdout.")] = False,
) -> None:
    """Encode CORPUS into memory-mappable ids in the cache, as `train` does before it starts.

    The corpus is read in chunks (memory does not grow with its size); a second run, or a
    `train` on the same corpus with the same read options, finds it prepared."""
    try:
        _prepare(corpus, dict(encoding=encoding, errors=errors, keep_newlines=keep_newlines, separator=separator), cache_dir, json_out)
    except CharRNNError as exc:
        _fail(exc)


def _prepare(corpora: list[Path], read_options: dict, cache_dir: Path | None, json_out: bool) -> None:
    import time

    from charrnn.data.prepare import load_corpus
    from charrnn.cli.display import TrainDisplay

    display = TrainDisplay(_stderr())
    started = time.perf_counter()
    with display.preparing() as progress:
        data = load_corpus(corpora, cache_dir=cache_dir or _default_cache(), progress=progress, warn=display.warning, **read_options)
    seconds = time.perf_counter() - started
    info = data.info or {}
    mb_per_s = info.get("bytes", 0) / 1e6 / max(seconds, 1e-9)
    files = info.get("files", 1)
    display.console.print(
        f"{data.path}: {plural(len(data.ids), 'character')}, {len(data.vocab):,} distinct, ids as {data.ids.dtype}"
        + (f" ({files:,} files)" if files > 1 else ""),
        soft_wrap=True,
        markup=False,
    )
    done = "already prepared" if info.get("cached") else f"prepared in {seconds:.1f} s ({mb_per_s:.1f} MB/s)"
    display.console.print(f"{done}: {info.get('entry')}", soft_wrap=True, markup=False)
    if json_out:
        result = {
            "corpus": [str(p) for p in corpora],
            "files": files,
            "bytes": info.get("bytes"),
            "chars": len(data.ids),
            "distinct": len(data.vocab),
            "dtype": str(data.ids.dtype),
            "entry": info.get("entry"),
            "cached": bool(info.get("cached")),
            "seconds": round(seconds, 3),
            "mb_per_s": round(mb_per_s, 2),
        }
        typer.echo(json.dumps(result))


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(prepare)
