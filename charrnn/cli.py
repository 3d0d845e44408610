"""The command line: flags, help, progress on stderr, data on stdout, exit codes. No ML here.

Every flag of `train` defaults to "not given" (None) and shows the real default from
`TrainConfig`, so that a `--config FILE.toml` can fill what the command line leaves out.
torch is imported only inside the commands that need it, so `charrnn --help` starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from charrnn import __version__
from charrnn.cli_insight import register as register_insight_commands
from charrnn.config import DEFAULT_SEPARATOR, SampleConfig, TrainConfig, build, defaults, read_toml
from charrnn.errors import CharRNNError, WriteError, plural
from charrnn.runlock import LOCK_HOLDER, RunLock
from charrnn.serve.command import register as register_serve_command
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

_state = {"debug": False}
LAUNCHED_AS = "CHARRNN_LAUNCHED_AS"  # set for the processes `train --nproc` starts: the user's command
register_insight_commands(app)  # eval, plot, neurons, runs (in their own help panel)
register_serve_command(app)  # serve (charrnn/serve/)

MODEL, DATA, OPTIM, LENGTH, OUTPUT, RUN = "Model", "Data", "Optimisation", "Length of training", "Evaluation and checkpoints", "Run"
TRAIN_DEFAULTS = defaults(TrainConfig)
SAMPLE_DEFAULTS = defaults(SampleConfig)


def _opt(name: str, help: str, panel: str, table: dict = TRAIN_DEFAULTS, **kw) -> Any:
    default = table.get(name)
    if default is not None:
        help += f" [dim]\\[default: {default}][/]"
    return typer.Option(help=help, show_default=False, rich_help_panel=panel, **kw)


def _stderr():
    from rich.console import Console

    console = Console(stderr=True, highlight=False, markup=False)  # paths and text may hold [brackets]
    console.on_broken_pipe = lambda: _stderr_gone(console)  # (rich's own ends the program: exit 1)
    return console


def _stderr_gone(console) -> None:
    """The reader of stderr went away (`2>&1 | head`, a killed `tee`): what is for people is
    dropped from then on, and the work goes on (a training to its end and its last.pt)."""
    console.quiet = True
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stderr.fileno())  # (Python's own writes, at exit too)


def _fail(exc: CharRNNError) -> None:
    if _state["debug"]:
        raise exc
    if exc.elsewhere:  # another process of a distributed run prints it
        import time

        time.sleep(1.0)  # torchrun stops all processes when one ends: give that one time to print
        raise typer.Exit(exc.exit_code)
    from rich.markup import escape

    _stderr().print(f"[bold red]charrnn: error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
) -> None:
    _state["debug"] = debug


# ---------------------------------------------------------------------------------- train
@app.command()
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


# Options that may change when a run is resumed: they do not change the model or the data.
RESUMABLE = {"max_steps", "max_epochs", "time_budget", "eval_every", "eval_chars", "save_every", "device", "threads", "precision", "compile", "engine", "name", "out"}

RESUMABLE |= {"sample_every", "sample_chars", "sample_prime"}  # live samples change nothing of the run


def _threads_option(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise CharRNNError(f"--threads {value!r} must be auto or a number of threads (at least 1)")
    return int(value)


def _train(corpora: list[Path], given: dict, config: Path | None, resume: bool, overwrite: bool, init_from: Path | None, quiet: bool, read_options: dict, cache_dir: Path | None, nproc: int | None, log_every: float = 30.0) -> None:
    from charrnn.corpus import load_corpus
    from charrnn.display import TrainDisplay
    from charrnn.distributed import Dist
    from charrnn.prepare import forget
    from charrnn.train import CorpusTooShort

    dist = Dist.from_env()
    if nproc is not None and nproc < 1:
        raise CharRNNError(f"--nproc {nproc} must be at least 1")
    if nproc is not None and dist.world > 1:
        raise CharRNNError("--nproc launches torchrun; this process already runs under torchrun: leave --nproc out")
    if resume and overwrite:
        raise CharRNNError("--resume and --overwrite contradict each other: choose one")
    if resume and init_from:
        raise CharRNNError("--resume continues a run; --init-from starts a new one from weights: choose one")
    file_values = read_toml(config, TrainConfig) if config else {}
    cfg = build(TrainConfig, file_values, given)
    run_dir = Path(cfg.out) / (cfg.name or _corpus_name(corpora))
    lock = RunLock(run_dir)  # taken by _plan_run, on the process that writes the run folder
    display = TrainDisplay(_stderr(), quiet=quiet or not dist.main, log_every=log_every)

    def load(vocab):
        with display.preparing() as progress:
            return load_corpus(corpora, vocab=vocab, cache_dir=cache_dir or _default_cache(), progress=progress, warn=display.warning, **read_options)

    if nproc is not None and nproc > 1:  # check and prepare everything here, then hand over to torchrun
        with lock:  # held for the workers until they end (their rank 0 finds it held by us)
            cfg, _, _, vocab = _plan_run(lock, run_dir, cfg, file_values, given, resume, overwrite, init_from, nproc)
            from charrnn.device import pick_device

            pick_device(cfg.device)  # a device that is not here: one error now, not one per process
            load(vocab)  # the processes find it in the cache
            _launch(nproc, display)

    if dist.world > 1:  # (a single process picks its device in the Trainer, after checking the options)
        from charrnn.device import pick_device

        dist.start(pick_device(cfg.device))
    try:
        cfg, resume_ckpt, init_ckpt, vocab = dist.from_main(lambda: _plan_run(lock, run_dir, cfg, file_values, given, resume, overwrite, init_from, dist.world))
        data = dist.local_first(lambda: load(vocab))
        if init_ckpt is not None and len(data.vocab) != init_ckpt.meta["model"]["vocab_size"]:
            raise CharRNNError(f"--init-from {init_from}: damaged checkpoint (vocabulary and model disagree)")
        train_ids, val_ids = data.split(cfg.val_frac)

        if cfg.engine == "numpy":
            from charrnn.numpy_train import NumpyTrainer as Trainer

            display.message("engine numpy: gradients by the hand-written BPTT of charrnn/numpy_ref.py")
        else:
            from charrnn.train import Trainer

        from charrnn import STARTED
        from charrnn.distributed import command_started

        try:
            trainer = Trainer(cfg, data.vocab, train_ids, val_ids, run_dir, events=display, resume_from=resume_ckpt, init_from=init_ckpt,
                              corpus_path=data.path, corpus_digest=data.digest, dist=dist, started_at=command_started(STARTED))
        except CorpusTooShort:
            forget(data)  # a refused corpus leaves no cache entry behind
            raise
        if overwrite and dist.main:  # only now that everything checked out: the old run is replaced, not lost to a typo
            for f in ("last.pt", "best.pt", "metrics.jsonl"):
                (run_dir / f).unlink(missing_ok=True)
        _describe(display, data, cfg)
        received: list[int] = []

        def on_signal(signum, frame):
            received.append(signum)
            trainer.stop(signal.Signals(signum).name)
            if dist.world == 1:  # a second one ends at once (torchrun repeats signals, and kills after 30 s)
                signal.signal(signum, signal.SIG_DFL)

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN}
        try:
            with display:
                summary = trainer.fit()
        except WriteError as exc:
            raise _after_failed_write(exc, run_dir, dist) from None
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
    finally:
        dist.close()
        lock.release()
    if not dist.main:
        if received:
            raise typer.Exit(128 + received[0])
        return
    display.summary(summary)
    if summary["reason"] == "done" and trainer.last_eval is not None:
        from charrnn.train import learned_nothing

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


def _after_failed_write(exc: WriteError, run_dir: Path, dist) -> WriteError:
    """A write failed during training (a full disk): leave the run folder resumable, or clean if
    nothing of the run can be resumed, and say the one command that goes on once there is room."""
    last, best = run_dir / "last.pt", run_dir / "best.pt"
    if not last.exists() and best.exists():  # best.pt is a whole checkpoint: the run resumes from its step
        try:
            os.link(best, last)  # a second name takes no room on a full disk
        except OSError:
            with contextlib.suppress(OSError):
                os.replace(best, last)
    if last.exists():
        return WriteError(f"{exc}; once there is room, {_resume_hint(dist)}")
    for name in ("best.pt", "metrics.jsonl"):  # a new run with nothing to resume from: leave no trace
        with contextlib.suppress(OSError):
            (run_dir / name).unlink(missing_ok=True)
    return WriteError(f"{exc}; nothing of this run was kept: once there is room, {_resume_hint(dist, resume=False)}")


def _plan_run(lock: RunLock, run_dir: Path, cfg: TrainConfig, file_values: dict, given: dict, resume: bool, overwrite: bool, init_from: Path | None, world: int):
    """Lock the run folder, check it and read the checkpoint to continue or start from (on
    `world` processes): (config, checkpoint to resume, checkpoint to initialise from, vocabulary
    or None)."""
    lock.acquire()  # before anything in the folder is read: one writer per run folder
    planned = _read_run(run_dir, cfg, file_values, given, resume, overwrite, init_from, world)
    if planned[0].engine == "numpy" and world > 1:
        raise CharRNNError("--engine numpy trains in one process (its hand-written gradients are not averaged across processes): leave out --nproc, or use --engine torch")
    return planned


def _read_run(run_dir: Path, cfg: TrainConfig, file_values: dict, given: dict, resume: bool, overwrite: bool, init_from: Path | None, world: int):
    from charrnn import checkpoint
    from charrnn.train import resumed_batch_size
    from charrnn.vocab import Vocab

    if resume:
        last = run_dir / "last.pt"
        if not last.exists():
            raise CharRNNError(f"--resume: there is no {last} to continue (train without --resume first)")
        resume_ckpt = checkpoint.load(last)
        saved = TrainConfig(**resume_ckpt.meta["config"])
        changed = sorted(k for k, v in {**file_values, **given}.items() if k not in RESUMABLE and getattr(saved, k) != v)
        if changed:
            raise CharRNNError(f"--resume continues the run as it was: cannot change {', '.join('--' + k.replace('_', '-') for k in changed)}")
        cfg = build(TrainConfig, {**resume_ckpt.meta["config"], **file_values}, given)
        resumed_batch_size(resume_ckpt.meta, world, cfg.batch_size)  # can the run go on with this many processes?
        return cfg, resume_ckpt, None, Vocab.from_json(resume_ckpt.meta["vocab"])
    existing = [f for f in ("last.pt", "best.pt", "metrics.jsonl") if (run_dir / f).exists()]
    if existing and not overwrite:
        raise CharRNNError(
            f"{run_dir} already holds a run ({', '.join(existing)}): use --resume to continue it, "
            f"--overwrite to replace it, or --name to start another"
        )
    if not init_from:
        return cfg, None, None, None
    init_ckpt = checkpoint.load(init_from)
    shape = {k: init_ckpt.meta["model"][k] for k in ("cell", "layers", "hidden", "embed")}
    clash = sorted(k for k, v in shape.items() if k in given and given[k] != v)
    if clash:
        raise CharRNNError(f"--init-from {init_from}: the model's shape is fixed by the checkpoint; drop {', '.join('--' + k for k in clash)}")
    cfg = build(TrainConfig, {**file_values, **shape}, given)
    return cfg, None, init_ckpt, Vocab.from_json(init_ckpt.meta["vocab"])


def _corpus_name(corpora: list[Path]) -> str:
    first = corpora[0]
    return (first.resolve().name if first.is_dir() else first.stem) or "corpus"


def _default_cache() -> Path:
    from charrnn.prepare import default_cache_dir

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

    import time

    from charrnn import STARTED
    from charrnn.distributed import launch_command
    from charrnn.threads import cores_here

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
@app.command()
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

    from charrnn.corpus import load_corpus
    from charrnn.display import TrainDisplay

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


# ---------------------------------------------------------------------------------- sample
@app.command()
def sample(
    checkpoint_path: Annotated[Optional[Path], typer.Option("--checkpoint", "-c", help="Checkpoint (.pt), run folder (its best.pt, else last.pt) or export (.npz, see `charrnn export`) to sample from. \\[default: the newest best.pt under checkpoints/, else the newest last.pt]", show_default=False)] = None,
    length: Annotated[int, _opt("length", "Characters to generate (after the prime).", "Text", SAMPLE_DEFAULTS)] = SAMPLE_DEFAULTS["length"],
    temp: Annotated[float, _opt("temp", "Temperature: lower is safer, higher is wilder, 0 always takes the most likely character.", "Text", SAMPLE_DEFAULTS)] = SAMPLE_DEFAULTS["temp"],
    top_k: Annotated[int, _opt("top_k", "Sample only among the k most likely characters (0 = off).", "Text", SAMPLE_DEFAULTS)] = SAMPLE_DEFAULTS["top_k"],
    top_p: Annotated[float, _opt("top_p", "Sample only among the most likely characters whose mass reaches p (1 = off).", "Text", SAMPLE_DEFAULTS)] = SAMPLE_DEFAULTS["top_p"],
    prime: Annotated[Optional[str], typer.Option(help="Text to start from (echoed, then continued).", rich_help_panel="Text", show_default=False)] = None,
    prime_file: Annotated[Optional[Path], typer.Option(help="Read the prime text from this UTF-8 file.", rich_help_panel="Text", show_default=False)] = None,
    unknown: Annotated[str, typer.Option(help="Prime characters the model never saw: error, or skip them with a warning.", rich_help_panel="Text")] = "error",
    stop: Annotated[Optional[list[str]], typer.Option(help="End a sample right after this string appears (repeatable).", rich_help_panel="Text", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed: the same seed gives the same text. \\[default: random]", rich_help_panel="Text", show_default=False)] = None,
    num_samples: Annotated[int, _opt("num_samples", "Generate this many samples together (one batch), printed one after the other, the first as it is generated.", "Text", SAMPLE_DEFAULTS)] = SAMPLE_DEFAULTS["num_samples"],
    separator: Annotated[str, typer.Option(help="Printed between samples when --num-samples > 1.", rich_help_panel="Text")] = "\n\n",
    echo_prime: Annotated[bool, typer.Option(help="Print the prime before its continuation.", rich_help_panel="Text")] = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel="Run")] = "cpu",
    engine: Annotated[str, typer.Option(help="What computes the logits: numpy (NumPy only, CPU; no torch needed for an .npz), torch (any device), or auto: numpy on the CPU, where it is the faster, torch on a GPU. Both give the same text for the same seed.", rich_help_panel="Run")] = "auto",
    beam: Annotated[int, typer.Option(help="Beam search of this width instead of sampling: the most likely continuation, the same every time (--temp, --top-k, --top-p and --seed do not apply); with --num-samples K (at most the width), the K best, best first. 0 = sample.", rich_help_panel="Beam search")] = 0,
    beam_norm: Annotated[float, typer.Option(help="Compare beams by log-probability / length^this, so that beams ended early by --stop are not preferred for being short; 0 = plain log-probability.", rich_help_panel="Beam search")] = 0.0,
) -> None:
    """Generate text from a trained model and stream it to stdout."""
    try:
        _sample(checkpoint_path, length, temp, top_k, top_p, prime, prime_file, unknown, stop or [], seed, num_samples, separator, echo_prime, device, engine, beam, beam_norm)
    except CharRNNError as exc:
        _fail(exc)


def _sample(checkpoint_path, length, temp, top_k, top_p, prime, prime_file, unknown, stop, seed, num_samples, separator, echo_prime, device, engine="auto", beam=0, beam_norm=0.0) -> None:
    if prime is not None and prime_file is not None:
        raise CharRNNError("give --prime or --prime-file, not both")
    if unknown not in ("error", "skip"):
        raise CharRNNError(f"--unknown {unknown!r} is not one of: error, skip")
    if prime_file is not None:
        from charrnn.corpus import read_text

        prime = read_text(prime_file, flags=(), what="the prime file")
    cfg = SampleConfig(length=length, temp=temp, top_k=top_k, top_p=top_p, prime=prime or "", seed=seed, num_samples=num_samples, stop=stop, beam=beam, beam_norm=beam_norm).validate()

    from charrnn.threads import limit_blas_threads, threads_for_command, use_threads

    # One stream is matrix-vector products, which a second thread does not speed up and a busy
    # neighbour slows down several times over (measured: see README, Busy machines); several
    # streams are matrix products: the free cores.
    threads = 1 if max(num_samples, beam) == 1 else threads_for_command()
    limit_blas_threads(threads)
    from charrnn.engines import open_stepper  # imports torch only if the engine or a .pt needs it
    from charrnn.sample import OneAfterAnother, generate, prime_ids

    if checkpoint_path is None:
        from charrnn.engines import newest

        checkpoint_path = newest("checkpoints")
        _stderr().print(f"sampling from {checkpoint_path} (the newest {checkpoint_path.name} under checkpoints/; -c to choose)", soft_wrap=True)
    stepper, vocab, chosen = open_stepper(checkpoint_path, engine, device)
    if chosen == "torch":
        use_threads(threads)
    _, _, dropped = prime_ids(vocab, cfg.prime, unknown)
    if dropped:
        from charrnn.vocab import describe_chars

        _stderr().print(f"warning: dropped prime characters the model never saw: {describe_chars(dropped)}", soft_wrap=True)
    out = _Stdout()
    if beam:  # (the best beam is known only at the end: nothing to stream)
        from charrnn.beam import beam_texts

        out.write(separator.join(beam_texts(stepper, vocab, cfg, unknown, echo_prime)))
        out.close()
        return
    samples = OneAfterAnother(out.write, num_samples, separator)  # the first streams at once
    for b, piece in generate(stepper, vocab, cfg, unknown, echo_prime, on_end=samples.end):
        samples.piece(b, piece)
    samples.close()
    out.close()


# ---------------------------------------------------------------------------------- play
@app.command()
def play(
    checkpoint_path: Annotated[Optional[Path], typer.Argument(metavar="CHECKPOINT", help="Checkpoint (.pt), run folder or export (.npz). \\[default: the newest best.pt under checkpoints/]", show_default=False)] = None,
    engine: Annotated[str, typer.Option(help="numpy, torch or auto, as for sample.")] = "auto",
) -> None:
    """Talk to a model: type a prime, read its continuation; :help lists the settings.

    Ctrl-C stops a text and stays; Ctrl-D leaves. Needs a terminal: in scripts, use `sample`."""
    try:
        if not sys.stdin.isatty():
            raise CharRNNError("play needs a terminal on stdin (it reads what you type); in scripts and pipes use: charrnn sample --prime TEXT")
        from charrnn.threads import limit_blas_threads

        limit_blas_threads(1)  # one stream
        from charrnn.engines import newest, open_stepper
        from charrnn.play import Session, run_session

        path = checkpoint_path or newest("checkpoints")
        stepper, vocab, chosen = open_stepper(path, engine, "cpu")
        if chosen == "torch":
            from charrnn.threads import use_threads

            use_threads(1)
        try:
            import readline  # noqa: F401  (history on the arrow keys, where Python has it)
        except ImportError:
            pass
        out = _Stdout()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C stops a text, not the session
        _stderr().print(f"model: {path}", soft_wrap=True)
        run_session(Session(stepper, vocab), input, out.write, lambda text: _stderr().print(text, style="dim", soft_wrap=True))
    except CharRNNError as exc:
        _fail(exc)


class _Stdout:
    """UTF-8 text to stdout whatever the locale; flushed per character on a terminal; a closed
    pipe (`| head`) ends the program quietly. On a terminal the text ends with a newline, so the
    shell's prompt starts on a line of its own; into a pipe or file, the bytes are the sample's."""

    def __init__(self):
        self.stream = sys.stdout.buffer
        self.tty = sys.stdout.isatty()
        self.ends_line = True

    def write(self, text: str) -> None:
        if not text:
            return
        try:
            self.stream.write(text.encode("utf-8", "surrogatepass"))
            self.ends_line = text.endswith("\n")
            if self.tty or "\n" in text:
                self.stream.flush()
        except BrokenPipeError:
            self._closed_pipe()

    def close(self) -> None:
        try:
            if self.tty and not self.ends_line:
                self.stream.write(b"\n")
            self.stream.flush()
        except BrokenPipeError:
            self._closed_pipe()

    @staticmethod
    def _closed_pipe() -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so Python's exit-time flush does not complain
        raise typer.Exit(0)


# ---------------------------------------------------------------------------------- info
@app.command()
def info(
    checkpoint_path: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt checkpoint (or a run folder: its best.pt, else last.pt).", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print the checkpoint's metadata as JSON on stdout.")] = False,
) -> None:
    """Describe a checkpoint: model, vocabulary, training config and progress."""
    try:
        from charrnn import checkpoint
        from charrnn.display import checkpoint_table
        from charrnn.engines import resolve_checkpoint

        path = resolve_checkpoint(checkpoint_path)
        ckpt = checkpoint.load(path)
        if json_out:
            import json

            typer.echo(json.dumps({"path": str(path), "format_version": checkpoint.FORMAT_VERSION, **ckpt.meta}, indent=2))
            return
        from rich.console import Console

        Console(highlight=False).print(checkpoint_table(path, ckpt))
    except CharRNNError as exc:
        _fail(exc)


# ---------------------------------------------------------------------------------- export
@app.command()
def export(
    checkpoint_path: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt checkpoint (or a run folder: its best.pt, else last.pt).", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="npz: the weights as NumPy arrays (torch's names) and the vocabulary and model as JSON; `charrnn sample -c FILE.npz` reads it without torch.")] = "npz",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write. \\[default: CHECKPOINT with the format's suffix]", show_default=False)] = None,
) -> None:
    """Write a checkpoint's weights and vocabulary in a form that needs no torch to read."""
    try:
        if fmt != "npz":
            raise CharRNNError(f"--format {fmt!r} is not one of: npz")
        from charrnn.engines import resolve_checkpoint
        from charrnn.export import export_npz

        path = resolve_checkpoint(checkpoint_path)
        written = export_npz(path, out or path.with_suffix(".npz"))
        _stderr().print(f"wrote {written} ({written.stat().st_size:,} bytes); sample from it with: charrnn sample -c {shlex.quote(str(written))}", soft_wrap=True)
    except CharRNNError as exc:
        _fail(exc)


# ---------------------------------------------------------------------------------- bench
@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="A one-minute version: fewer steps, smaller corpus.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    precision: Annotated[str, typer.Option(help="Training precision to measure: fp32, bf16 or fp16.")] = "fp32",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "cpu",
    rounds: Annotated[Optional[int], typer.Option(help="Measure peak, training and sampling this many times, interleaved, and report medians. \\[default: 3, 1 with --quick]", show_default=False)] = None,
    quality: Annotated[Optional[Path], typer.Option(help="Also train the default model on this corpus for --quality-seconds and report its validation loss.", show_default=False)] = None,
    quality_seconds: Annotated[float, typer.Option(help="Wall time of the --quality run.")] = 600.0,
    load: Annotated[bool, typer.Option("--load", help="Also train the default model alone, beside a busy core and as two trainings at once, with charrnn's thread policy and with torch's defaults.")] = False,
    load_seconds: Annotated[float, typer.Option(help="Training time of each --load run.")] = 30.0,
    speed: Annotated[bool, typer.Option("--speed/--no-speed", help="Measure the speed tables (peak, training, sampling, tokenising); --no-speed with --load, --serve or --quality runs only those.")] = True,
    serve: Annotated[bool, typer.Option("--serve", help="Also measure `charrnn serve`: requests per second and p50/p99 latency of 200-character samples with 1, 4 and 16 clients at once.")] = False,
    serve_seconds: Annotated[float, typer.Option(help="Time of each --serve row.")] = 10.0,
) -> None:
    """Measure training, sampling and tokenising speed against this machine and a textbook loop.

    Peak matmul, training, the reference loop and sampling are measured in interleaved rounds of one run and reported as medians. A table on stderr; --json on stdout."""
    try:
        from charrnn import bench as benchmark
        from charrnn.display import bench_tables

        console = _stderr()
        if rounds is not None and rounds < 1:
            raise CharRNNError(f"--rounds {rounds} must be at least 1")
        if not (speed or load or quality or serve):
            raise CharRNNError("--no-speed leaves nothing to measure: add --load, --serve or --quality FILE")
        if serve and not serve_seconds > 0:
            raise CharRNNError(f"--serve-seconds {serve_seconds:g} must be positive")
        if load and not load_seconds >= 10:
            raise CharRNNError(f"--load-seconds {load_seconds:g} must be at least 10 (the policy measures over a few seconds)")
        say = lambda what: console.print(f"measuring {what}…")  # noqa: E731
        result = benchmark.run(quick=quick, precision=precision, device=device, rounds=rounds, progress=say) if speed else {}
        if load:
            from charrnn.bench_load import run_load

            result["load"] = run_load(load_seconds, progress=say)
        if serve:
            from charrnn.bench_serve import run_serve

            result["serve"] = run_serve(serve_seconds, progress=say)
        if quality is not None:
            console.print(f"training the default model on {quality} for {quality_seconds:.0f} s…", soft_wrap=True)
            result["quality"] = benchmark.quality(quality, quality_seconds)
        for table in bench_tables(result):
            console.print(table)
        if json_out:
            typer.echo(benchmark.to_json(result))
    except CharRNNError as exc:
        _fail(exc)


def main() -> None:
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit becomes a write error we can report, not a crash
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    quit_quietly_on_signals()  # (again: main() may be called without __main__); training installs gentler ones
    try:
        app()
    except SystemExit as exc:
        if "torch" in sys.modules and not _state["debug"]:
            _exit_now(exc.code)
        raise


def _exit_now(code) -> None:
    """End a process that loaded torch without the interpreter's teardown, once everything is
    written and flushed. torch's teardown takes 1-2 s here (more on a busy machine), which
    --time-budget, the whole command's wall clock, would not see; and in a process that ran
    torch.distributed (a torchrun worker, `train --nproc`'s launcher) gloo's and the rendezvous
    store's C++ threads can abort it ("terminate called without an active exception", exit 134:
    about 1 run in 6 of tests/test_distributed.py on a busy machine, before this session's
    changes too; pytorch/pytorch#179291 describes the cause)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    main()
