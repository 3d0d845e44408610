"""`charrnn train` and `charrnn prepare`: their flags, and a driver over `charrnn.train()`
(charrnn/api/training.py) that makes every decision of a run; the console's side of it (signals,
the report, --nproc's hand-over to torchrun) is in training_run.py.

Every flag of `train` defaults to "not given" (None) and shows the real default; the help texts
and defaults are those of the fields of `TrainConfig` and `ReadConfig` (config.py), written once
there, so that a `--config FILE.toml` can fill what the command line leaves out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from charrnn.cli.console import TRAIN_DEFAULTS
from charrnn.cli.console import fail as _fail
from charrnn.cli.console import flag as _flag
from charrnn.cli.console import stderr as _stderr
from charrnn.config import ReadConfig, defaults, help_of
from charrnn.errors import CharRNNError, plural

MODEL, DATA, OPTIM, LENGTH, OUTPUT, RUN = (
    "Model",
    "Data",
    "Optimisation",
    "Length of training",
    "Evaluation and checkpoints",
    "Run",
)

READ = defaults(ReadConfig)  # how a corpus is read: encoding, errors, keep_newlines, separator
CACHE_HELP = "Where prepared corpora are kept. \\[default: $CHARRNN_CACHE or .charrnn-cache]"


def _read(name: str, panel: str | None = None) -> Any:
    """The flag of a read option (typer shows its default)."""
    return typer.Option(help=help_of(ReadConfig, name)[0], rich_help_panel=panel)


# ---------------------------------------------------------------------------------- train
def train(
    corpus: Annotated[
        list[Path],
        typer.Argument(
            help="Text to learn from: one or more files or directories (every file under them), joined with "
            "--separator.",
            show_default=False,
        ),
    ],
    cell: Annotated[str | None, _flag("cell", MODEL)] = None,
    layers: Annotated[int | None, _flag("layers", MODEL)] = None,
    hidden: Annotated[int | None, _flag("hidden", MODEL)] = None,
    embed: Annotated[int | None, _flag("embed", MODEL)] = None,
    dropout: Annotated[float | None, _flag("dropout", MODEL)] = None,
    dropout_mask: Annotated[str | None, _flag("dropout_mask", MODEL)] = None,
    tie_weights: Annotated[bool | None, _flag("tie_weights", MODEL)] = None,
    size: Annotated[str | None, _flag("size", MODEL)] = None,
    seq_len: Annotated[int | None, _flag("seq_len", DATA)] = None,
    batch_size: Annotated[int | None, _flag("batch_size", DATA)] = None,
    val_frac: Annotated[float | None, _flag("val_frac", DATA)] = None,
    carry_state: Annotated[bool | None, _flag("carry_state", DATA)] = None,
    encoding: Annotated[str, _read("encoding", DATA)] = READ["encoding"],
    errors: Annotated[str, _read("errors", DATA)] = READ["errors"],
    keep_newlines: Annotated[bool, _read("keep_newlines", DATA)] = READ["keep_newlines"],
    separator: Annotated[str, _read("separator", DATA)] = READ["separator"],
    cache_dir: Annotated[Path | None, typer.Option(help=CACHE_HELP, rich_help_panel=DATA, show_default=False)] = None,
    lr: Annotated[float | None, _flag("lr", OPTIM)] = None,
    lr_schedule: Annotated[str | None, _flag("lr_schedule", OPTIM)] = None,
    warmup: Annotated[int | None, _flag("warmup", OPTIM)] = None,
    min_lr_frac: Annotated[float | None, _flag("min_lr_frac", OPTIM)] = None,
    grad_clip: Annotated[float | None, _flag("grad_clip", OPTIM)] = None,
    weight_decay: Annotated[float | None, _flag("weight_decay", OPTIM)] = None,
    weight_drop: Annotated[float | None, _flag("weight_drop", OPTIM)] = None,
    average: Annotated[str | None, _flag("average", OPTIM)] = None,
    ema_decay: Annotated[float | None, _flag("ema_decay", OPTIM)] = None,
    swa_start: Annotated[float | None, _flag("swa_start", OPTIM)] = None,
    max_steps: Annotated[int | None, _flag("max_steps", LENGTH)] = None,
    max_epochs: Annotated[float | None, _flag("max_epochs", LENGTH)] = None,
    time_budget: Annotated[float | None, _flag("time_budget", LENGTH)] = None,
    eval_every: Annotated[int | None, _flag("eval_every", OUTPUT)] = None,
    eval_chars: Annotated[int | None, _flag("eval_chars", OUTPUT)] = None,
    eval_share: Annotated[float | None, _flag("eval_share", OUTPUT)] = None,
    save_every: Annotated[int | None, _flag("save_every", OUTPUT)] = None,
    sample_every: Annotated[int | None, _flag("sample_every", OUTPUT)] = None,
    sample_chars: Annotated[int | None, _flag("sample_chars", OUTPUT)] = None,
    sample_prime: Annotated[str | None, _flag("sample_prime", OUTPUT)] = None,
    name: Annotated[str | None, _flag("name", OUTPUT)] = None,
    out: Annotated[str | None, _flag("out", OUTPUT)] = None,
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
    precision: Annotated[str | None, _flag("precision", RUN)] = None,
    compile: Annotated[bool | None, _flag("compile", RUN)] = None,
    engine: Annotated[str | None, _flag("engine", RUN)] = None,
    seed: Annotated[int | None, _flag("seed", RUN)] = None,
    device: Annotated[str | None, _flag("device", RUN)] = None,
    threads: Annotated[str | None, _flag("threads", RUN)] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            help="Train data-parallel in this many processes on this machine (launches torchrun; --batch-size is "
            "per process).",
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
            help="Without a terminal (a log file, CI): print a progress line at least every this many seconds, "
            "besides one per evaluation; 0 = evaluations only.",
            rich_help_panel=OUTPUT,
        ),
    ] = 30.0,
    tensorboard: Annotated[
        Path | None,
        typer.Option(
            help="Also write the losses, learning rate and chars/s of each evaluation for TensorBoard in this "
            "folder (needs the tensorboard extra: pip install 'charrnn\\[tensorboard]').",
            rich_help_panel=OUTPUT,
            show_default=False,
        ),
    ] = None,
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
        run_options = dict(config=config, resume=resume, overwrite=overwrite, init_from=init_from, cache_dir=cache_dir)
        _train(corpus, {**given, **read_options, **run_options}, quiet, nproc, log_every, tensorboard)
    except CharRNNError as exc:
        _fail(exc)


def _threads_option(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise CharRNNError(f"--threads {value!r} must be auto or a number of threads (at least 1)")
    return int(value)


def _train(
    corpora: list[Path], options: dict, quiet: bool, nproc: int | None, log_every: float, tensorboard: Path | None
) -> None:
    """The run, by `charrnn.train()`, shown by the live display (and written for TensorBoard),
    stopped by SIGINT and SIGTERM; or with --nproc, prepared here and launched under torchrun."""
    from charrnn import STARTED
    from charrnn.api import training as api
    from charrnn.cli.display import TrainDisplay
    from charrnn.cli.training_run import SignalStop, launch, report, resume_hint

    api.check_processes(nproc)
    display = TrainDisplay(_stderr(), quiet=quiet, log_every=log_every)
    callbacks = [display]
    if tensorboard is not None:
        from charrnn.api.callbacks import TensorBoard

        callbacks.append(TensorBoard(tensorboard))
    options.update(callbacks=callbacks, started_at=STARTED)
    if nproc is not None and nproc > 1:  # check and prepare everything here, then hand over to torchrun
        with api.prepare_run(corpora, nproc, **options):
            launch(nproc, display)
    stop = SignalStop()
    run = api.train(corpora, stop=stop, resume_hint=resume_hint, **options)
    report(run, stop, display)


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
    encoding: Annotated[str, _read("encoding")] = READ["encoding"],
    errors: Annotated[str, _read("errors")] = READ["errors"],
    keep_newlines: Annotated[bool, _read("keep_newlines")] = READ["keep_newlines"],
    separator: Annotated[str, _read("separator")] = READ["separator"],
    cache_dir: Annotated[Path | None, typer.Option(help=CACHE_HELP, show_default=False)] = None,
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
