"""`charrnn train` and `charrnn prepare`: their flags, and the steps of a training run from the
flags to the report (each step's console side: training_run.py).

Every flag of `train` defaults to "not given" (None) and shows the real default from
`TrainConfig`, so that a `--config FILE.toml` can fill what the command line leaves out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.console import TRAIN_DEFAULTS
from charrnn.cli.console import fail as _fail
from charrnn.cli.console import opt as _opt
from charrnn.cli.console import stderr as _stderr
from charrnn.config import DEFAULT_SEPARATOR, TrainConfig, build, read_toml
from charrnn.errors import CharRNNError, plural
from charrnn.train.runlock import RunLock

MODEL, DATA, OPTIM, LENGTH, OUTPUT, RUN = (
    "Model",
    "Data",
    "Optimisation",
    "Length of training",
    "Evaluation and checkpoints",
    "Run",
)


# ---------------------------------------------------------------------------------- train
def train(
    corpus: Annotated[
        list[Path],
        typer.Argument(
            help="Text to learn from: one or more files or directories (every file under them), joined with --separator.",
            show_default=False,
        ),
    ],
    cell: Annotated[str | None, _opt("cell", "Recurrent cell: lstm, gru or rnn.", MODEL)] = None,
    layers: Annotated[int | None, _opt("layers", "Number of stacked recurrent layers.", MODEL)] = None,
    hidden: Annotated[int | None, _opt("hidden", "Hidden units per layer.", MODEL)] = None,
    embed: Annotated[int | None, _opt("embed", "Size of the character embedding.", MODEL)] = None,
    dropout: Annotated[
        float | None,
        _opt(
            "dropout",
            "Dropout on the non-recurrent connections: the embedding's output, between layers and before the read-out.",
            MODEL,
        ),
    ] = None,
    tie_weights: Annotated[
        bool | None,
        _opt(
            "tie_weights",
            "Share one matrix between the embedding and the read-out (needs --embed equal to --hidden).",
            MODEL,
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            help="auto: choose --layers, --hidden, --embed, --batch-size and --dropout for this corpus, --time-budget (or epochs) and this machine's measured speed (the flags you give win); default: the fixed defaults shown here. \\[default: auto when none of those five flags is given, else default]",
            rich_help_panel=MODEL,
            show_default=False,
        ),
    ] = None,
    seq_len: Annotated[
        int | None,
        _opt(
            "seq_len",
            "Characters per truncated-BPTT chunk (the gradient is cut between chunks; the hidden state is carried).",
            DATA,
        ),
    ] = None,
    batch_size: Annotated[int | None, _opt("batch_size", "Parallel streams of the corpus per step.", DATA)] = None,
    val_frac: Annotated[
        float | None, _opt("val_frac", "Fraction of the corpus (its contiguous tail) held out for validation.", DATA)
    ] = None,
    carry_state: Annotated[
        bool | None,
        _opt(
            "carry_state",
            "Carry the hidden state from chunk to chunk (stateful truncated BPTT); --no-carry-state resets it every chunk, for comparison.",
            DATA,
        ),
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus.", rich_help_panel=DATA)] = "utf-8",
    errors: Annotated[
        str,
        typer.Option(
            help="On undecodable bytes: strict (error), replace (U+FFFD), ignore (drop them) or another Python error handler.",
            rich_help_panel=DATA,
        ),
    ] = "strict",
    keep_newlines: Annotated[
        bool,
        typer.Option(help="Keep \\r\\n and \\r line endings instead of turning them into \\n.", rich_help_panel=DATA),
    ] = False,
    separator: Annotated[
        str, typer.Option(help="Text put between the files of a corpus of several files.", rich_help_panel=DATA)
    ] = DEFAULT_SEPARATOR,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where prepared corpora are kept. \\[default: $CHARRNN_CACHE or .charrnn-cache]",
            rich_help_panel=DATA,
            show_default=False,
        ),
    ] = None,
    lr: Annotated[float | None, _opt("lr", "Peak learning rate (AdamW).", OPTIM)] = None,
    lr_schedule: Annotated[
        str | None, _opt("lr_schedule", "constant or cosine (decays to lr × min-lr-frac).", OPTIM)
    ] = None,
    warmup: Annotated[int | None, _opt("warmup", "Steps of linear learning-rate warm-up.", OPTIM)] = None,
    min_lr_frac: Annotated[
        float | None,
        _opt("min_lr_frac", "Final learning rate of the cosine schedule, as a fraction of --lr.", OPTIM),
    ] = None,
    grad_clip: Annotated[
        float | None, _opt("grad_clip", "Clip the global gradient norm to this; 0 = off.", OPTIM)
    ] = None,
    weight_decay: Annotated[float | None, _opt("weight_decay", "AdamW weight decay.", OPTIM)] = None,
    max_steps: Annotated[int | None, _opt("max_steps", "Stop after this many steps.", LENGTH)] = None,
    max_epochs: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many passes over the corpus. \\[default: 10 when neither --max-steps nor --time-budget is given]",
            rich_help_panel=LENGTH,
            show_default=False,
        ),
    ] = None,
    time_budget: Annotated[
        float | None,
        _opt(
            "time_budget",
            "Stop after this many seconds of wall clock: the whole command, start-up, evaluations and the final save included (the LR schedule follows the clock). With --resume, the run's total: the time it trained before counts.",
            LENGTH,
        ),
    ] = None,
    eval_every: Annotated[
        int | None, _opt("eval_every", "Evaluate on the validation split every N steps.", OUTPUT)
    ] = None,
    eval_chars: Annotated[
        int | None, _opt("eval_chars", "Validation characters per evaluation (0 = all).", OUTPUT)
    ] = None,
    save_every: Annotated[int | None, _opt("save_every", "Write last.pt every N steps.", OUTPUT)] = None,
    sample_every: Annotated[
        int | None,
        typer.Option(
            help="Show a short sample (fixed prime and seed, temperature 0.8) every N steps; 0 = never. \\[default: at each evaluation]",
            rich_help_panel=OUTPUT,
            show_default=False,
        ),
    ] = None,
    sample_chars: Annotated[int | None, _opt("sample_chars", "Characters per live sample.", OUTPUT)] = None,
    sample_prime: Annotated[
        str | None,
        typer.Option(
            help="Prime text of the live samples. \\[default: none: start as after a newline]",
            rich_help_panel=OUTPUT,
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Run name: the folder under --out. \\[default: the corpus file's name]", rich_help_panel=OUTPUT
        ),
    ] = None,
    out: Annotated[str | None, _opt("out", "Folder that holds the runs.", OUTPUT)] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the run in --out/--name exactly where last.pt left it.", rich_help_panel=OUTPUT
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run of the same name.", rich_help_panel=OUTPUT)
    ] = False,
    init_from: Annotated[
        Path | None,
        typer.Option(
            help="Fine-tune: start from this checkpoint's weights (the corpus must fit its vocabulary).",
            rich_help_panel=OUTPUT,
            show_default=False,
        ),
    ] = None,
    precision: Annotated[
        str | None,
        _opt(
            "precision",
            "fp32, bf16 or fp16: the forward pass under autocast (fp16 on CUDA only; falls back to fp32 with a warning).",
            RUN,
        ),
    ] = None,
    compile: Annotated[
        bool | None,
        _opt("compile", "torch.compile the model (needs a C++ compiler on the CPU; falls back with a warning).", RUN),
    ] = None,
    engine: Annotated[
        str | None,
        _opt(
            "engine",
            "Who computes the gradients: torch (autograd), or numpy: the hand-written BPTT of charrnn/numpy_ref.py, with everything else (AdamW, schedule, checkpoints) shared. numpy: CPU, fp32, no dropout; slow, for small models.",
            RUN,
        ),
    ] = None,
    seed: Annotated[int | None, _opt("seed", "Random seed (weights, dropout).", RUN)] = None,
    device: Annotated[str | None, _opt("device", "auto, cpu, cuda or mps.", RUN)] = None,
    threads: Annotated[
        str | None,
        typer.Option(
            help="CPU threads per process: auto chooses them from the cores that are free, and re-chooses while training when the load changes; a number pins it (exact resume needs the same number). \\[default: auto]",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            help="Train data-parallel in this many processes on this machine (launches torchrun; --batch-size is per process).",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="A TOML file of options (keys as the flags, e.g. hidden = 512); flags given here win.",
            rich_help_panel=RUN,
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors and the final summary.", rich_help_panel=RUN)
    ] = False,
    log_every: Annotated[
        float,
        typer.Option(
            help="Without a terminal (a log file, CI): print a progress line at least every this many seconds, besides one per evaluation; 0 = evaluations only.",
            rich_help_panel=OUTPUT,
        ),
    ] = 30.0,
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


def _train(
    corpora: list[Path],
    given: dict,
    config: Path | None,
    resume: bool,
    overwrite: bool,
    init_from: Path | None,
    quiet: bool,
    read_options: dict,
    cache_dir: Path | None,
    nproc: int | None,
    log_every: float = 30.0,
) -> None:
    from charrnn.cli.display import TrainDisplay
    from charrnn.cli.training_run import (
        choose_size,
        describe_corpus,
        fit_under_signals,
        make_trainer,
        prepare_and_launch,
        report,
    )
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
            return load_corpus(
                corpora,
                vocab=vocab,
                cache_dir=cache_dir or _default_cache(),
                progress=progress,
                warn=display.warning,
                **read_options,
            )

    def plan_run(world: int):
        return plan.plan_run(lock, run_dir, cfg, file_values, given, resume, overwrite, init_from, world)

    if nproc is not None and nproc > 1:  # check and prepare everything here, then hand over to torchrun
        prepare_and_launch(nproc, lock, plan_run, load, display)
    if dist.world > 1:  # (a single process picks its device in the Trainer, after checking the options)
        from charrnn.machine.device import pick_device

        dist.start(pick_device(cfg.device))
    try:
        planned = dist.from_main(lambda: plan_run(dist.world))
        data = dist.local_first(lambda: load(planned.vocab))
        planned, choice = choose_size(planned, data, set(given) | set(file_values), dist)
        trainer = make_trainer(planned, data, init_from, run_dir, display, dist)
        if overwrite and dist.main:  # only now that everything checked out: the old run is replaced, not lost to a typo
            plan.clear_for_overwrite(run_dir)
        describe_corpus(display, data, planned.cfg)
        if choice is not None:
            display.message(choice.describe(planned.cfg))
        summary, received = fit_under_signals(trainer, display, dist, run_dir)
    finally:
        dist.close()
        lock.release()
    report(trainer, summary, received, data, display, dist)


def _default_cache() -> Path:
    from charrnn.data.prepare import default_cache_dir

    return default_cache_dir()


# ---------------------------------------------------------------------------------- prepare
def prepare(
    corpus: Annotated[
        list[Path],
        typer.Argument(
            help="One or more files or directories (every file under them), joined with --separator.",
            show_default=False,
        ),
    ],
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus.")] = "utf-8",
    errors: Annotated[
        str,
        typer.Option(
            help="On undecodable bytes: strict (error), replace (U+FFFD), ignore (drop them) or another Python error handler."
        ),
    ] = "strict",
    keep_newlines: Annotated[
        bool, typer.Option(help="Keep \\r\\n and \\r line endings instead of turning them into \\n.")
    ] = False,
    separator: Annotated[
        str, typer.Option(help="Text put between the files of a corpus of several files.")
    ] = DEFAULT_SEPARATOR,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where prepared corpora are kept. \\[default: $CHARRNN_CACHE or .charrnn-cache]", show_default=False
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was prepared as JSON on stdout.")] = False,
) -> None:
    """Encode CORPUS into memory-mappable ids in the cache, as `train` does before it starts.

    The corpus is read in chunks (memory does not grow with its size); a second run, or a
    `train` on the same corpus with the same read options, finds it prepared."""
    try:
        _prepare(
            corpus,
            dict(encoding=encoding, errors=errors, keep_newlines=keep_newlines, separator=separator),
            cache_dir,
            json_out,
        )
    except CharRNNError as exc:
        _fail(exc)


def _prepare(corpora: list[Path], read_options: dict, cache_dir: Path | None, json_out: bool) -> None:
    import time

    from charrnn.cli.display import TrainDisplay
    from charrnn.data.prepare import load_corpus

    display = TrainDisplay(_stderr())
    started = time.perf_counter()
    with display.preparing() as progress:
        data = load_corpus(
            corpora, cache_dir=cache_dir or _default_cache(), progress=progress, warn=display.warning, **read_options
        )
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
