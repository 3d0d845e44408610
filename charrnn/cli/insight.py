"""The commands that look inside models and runs: eval, plot, neurons, runs.

They are registered on the main Typer app by `register(app)` (see `app.py`) and follow its
conventions: data on stdout, messages on stderr, a user's mistake is one line and exit code 2.
Like the other command modules, this one imports torch, numpy and the library only inside the commands, so
`charrnn --help` stays fast; the work itself is done by `evaluate`, `plot`, `neurons` and `runs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.console import fail as _fail
from charrnn.cli.console import stderr as _stderr
from charrnn.config import DYNAMIC_LR, DYNAMIC_SEGMENT
from charrnn.errors import CharRNNError, plural

PANEL = "Insight"
CKPT_HELP = "A .pt checkpoint (or a run folder: its best.pt, else last.pt)."
# Reading one stream (batch 1), the matrix products are small: more CPU threads gain little and,
# on a busy machine, cost a lot (threads waiting for each other), so 1 is the default.
THREADS_HELP = "CPU threads (batch-1 streaming gains little from more)."


def register(app: typer.Typer) -> None:
    app.command("eval", rich_help_panel=PANEL)(eval_command)
    app.command("plot", rich_help_panel=PANEL)(plot_command)
    app.command("neurons", rich_help_panel=PANEL)(neurons_command)
    app.command("runs", rich_help_panel=PANEL)(runs_command)


def _stdout():
    from rich.console import Console

    return Console(highlight=False)


def _load_model(path: Path, device: str = "cpu", threads: int = 1):
    from charrnn.machine.device import pick_device
    from charrnn.machine.threads import use_threads
    from charrnn.store.model_file import build_model, open_model_file

    if threads < 1:
        raise CharRNNError(f"--threads {threads} must be at least 1")
    use_threads(threads)
    torch_device = pick_device(device)
    record = open_model_file(path)
    return record.path, build_model(record, torch_device), record.vocab, torch_device


def _read(path: Path, encoding: str) -> str:
    from charrnn.data.corpus import read_text

    return read_text(path, encoding=encoding, flags=("--encoding",), what="the text")


def _unknown_note(unknown: dict[str, int]) -> str:
    from charrnn.data.vocab import describe_chars

    shown = describe_chars(list(unknown), limit=10)
    counts = ", ".join(f"{n:,}" for n in list(unknown.values())[:10])
    times = "once" if list(unknown.values())[:10] == [1] else f"{counts} times"
    return f"skipped {plural(sum(unknown.values()), 'character')} the model never saw: {shown} (seen {times})"


# ---------------------------------------------------------------------------------- eval
def eval_command(
    checkpoint_path: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help=CKPT_HELP, show_default=False)],
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A text to score.", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    encoding: Annotated[str, typer.Option(help="Text encoding of FILE.")] = "utf-8",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    threads: Annotated[int, typer.Option(help=THREADS_HELP)] = 1,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic",
            help="Also score it by dynamic evaluation: after each segment, a gradient step on that segment, "
            "so the model adapts to the text as it reads it (reported beside the plain loss; the model file is "
            "not changed).",
        ),
    ] = False,
    dynamic_lr: Annotated[
        float,
        typer.Option(help="Dynamic evaluation's step size (RMS-normalised: about how far each weight moves a step)."),
    ] = DYNAMIC_LR,
    dynamic_segment: Annotated[
        int, typer.Option(help="Dynamic evaluation's segment: characters scored before each step.")
    ] = DYNAMIC_SEGMENT,
) -> None:
    """Score FILE with a model: loss in nats/char, bits/char and perplexity.

    The text streams through the model in chunks with the hidden state carried, so the result is
    that of one pass over the whole text, in bounded memory. Characters the model never saw are
    dropped, counted and reported.
    """
    try:
        from charrnn.insight.scores import check_dynamic, score_text

        settings = (dynamic_lr, dynamic_segment) if dynamic else None
        if settings:
            check_dynamic(*settings)
        path, model, vocab, torch_device = _load_model(checkpoint_path, device, threads)
        text = _read(file, encoding)
        with _EvalProgress(len(text)) as progress:
            score = score_text(model, vocab, text, torch_device, on_progress=progress, dynamic=settings)
        if json_out:
            if score.unknown:
                _stderr().print(f"warning: {_unknown_note(score.unknown)}", soft_wrap=True, markup=False)
            typer.echo(json.dumps({"checkpoint": str(path), "file": str(file), **score.to_json()}, indent=2))
            return
        lines = [
            f"checkpoint  {path}",
            f"text        {file}: {plural(score.chars, 'character')}, {score.chars_scored:,} scored",
            f"loss        {score.loss_nats:.4f} nats/char",
            f"            {score.bpc:.4f} bits/char",
            f"perplexity  {score.perplexity:.3f}",
        ]
        if score.dynamic is not None:
            d = score.dynamic
            gain = score.loss_nats - d.loss_nats
            lines.append(
                f"dynamic     {d.loss_nats:.4f} nats/char, {d.bpc:.4f} bits/char: {abs(gain):.4f} nats/char "
                f"{'below' if gain >= 0 else 'above'} the plain loss "
                f"(--dynamic-lr {d.lr:g}, --dynamic-segment {d.segment})"
            )
        if score.unknown:
            lines.append(f"unknown     {_unknown_note(score.unknown)}")
        typer.echo("\n".join(lines))
    except CharRNNError as exc:
        _fail(exc)


class _EvalProgress:
    """A transient progress bar on stderr for long texts on a terminal; nothing otherwise."""

    def __init__(self, n_chars: int):
        self.progress = None
        console = _stderr()
        if console.is_terminal and n_chars > 200_000:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("scoring"), BarColumn(), TimeRemainingColumn(), console=console, transient=True
            )
            self.task = self.progress.add_task("eval", total=n_chars)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False


# ---------------------------------------------------------------------------------- plot
def plot_command(
    runs: Annotated[
        list[Path],
        typer.Argument(
            metavar="RUN_DIR...",
            help="Run folders (checkpoints/NAME) or their metrics.jsonl files.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the plot to this .png or .svg file (needs matplotlib) instead of drawing it in the terminal.",
            show_default=False,
        ),
    ] = None,
    bpc: Annotated[bool, typer.Option("--bpc", help="Loss in bits per character instead of nats.")] = False,
    width: Annotated[
        int | None,
        typer.Option(
            help="Width of the terminal plot in characters. \\[default: the terminal's, at most 100]",
            show_default=False,
        ),
    ] = None,
    height: Annotated[int, typer.Option(help="Height of the terminal plot in lines.")] = 16,
) -> None:
    """Plot train and validation loss against characters seen, for one or several runs.

    Validation loss is a solid line and training loss a dotted one (dashed in files), one colour
    per run.
    """
    try:
        from charrnn.insight.plot import load_curves, save_figure, terminal_chart

        unit = "bits/char" if bpc else "nats/char"
        curves = load_curves(runs, bpc=bpc)
        if out is not None:
            written = save_figure(curves, out, unit)
            _stderr().print(f"wrote {written}", markup=False, soft_wrap=True)
            return
        console = _stdout()
        console.print(terminal_chart(curves, width or min(console.width, 100), height, unit), end="")
    except CharRNNError as exc:
        _fail(exc)


# ---------------------------------------------------------------------------------- neurons
def neurons_command(
    checkpoint_path: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help=CKPT_HELP, show_default=False)],
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A text to read with the model.", show_default=False)],
    layer: Annotated[
        int | None,
        typer.Option(
            help="Recurrent layer, from 0 (the lowest); -1 is the top. With --find: search only this layer. "
            "\\[default: the top layer; --find: all]",
            show_default=False,
        ),
    ] = None,
    unit: Annotated[int, typer.Option(help="Unit of the layer to show, from 0.")] = 0,
    state: Annotated[
        str | None,
        typer.Option(
            help="LSTM: c shows tanh(cell state), h the output h = o·tanh(c). GRU and RNN have h only. "
            "\\[default: c for an LSTM, else h]",
            show_default=False,
        ),
    ] = None,
    find: Annotated[
        bool,
        typer.Option(
            "--find",
            help="Rank the units whose activation best tracks simple features of the text (inside quotes or brackets, "
            "position in the line, start of a word) and show the best ones.",
        ),
    ] = False,
    top: Annotated[int, typer.Option(help="With --find: units listed per feature.")] = 3,
    max_chars: Annotated[int, typer.Option(help="Read only the first N characters of FILE.")] = 2000,
    html_out: Annotated[
        Path | None,
        typer.Option("--html", help="Also write the view as an HTML page to this file.", show_default=False),
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of FILE.")] = "utf-8",
    threads: Annotated[int, typer.Option(help=THREADS_HELP)] = 1,
) -> None:
    """Colour each character of FILE by one unit's activation (red -1, white 0, blue +1).

    The cell-activation view of Karpathy's "The Unreasonable Effectiveness of Recurrent Neural
    Networks": the model reads the text one character at a time, and each character is coloured
    by the chosen unit's state after reading it. --find looks for the units that follow the
    structure of the text.
    """
    try:
        _neurons(checkpoint_path, file, layer, unit, state, find, top, max_chars, html_out, encoding, threads)
    except CharRNNError as exc:
        _fail(exc)


FIND_EXCERPT = 600  # characters of text shown per unit in the terminal with --find


def _neurons(checkpoint_path, file, layer, unit, state, find, top, max_chars, html_out, encoding, threads) -> None:
    from charrnn.insight.neurons import activations, check_choice, rank_units, text_features
    from charrnn.insight.neurons_view import Section, html_page, legend, ranking_table, rich_text
    from charrnn.insight.scores import drop_unknown

    if max_chars < 1 or top < 1:
        raise CharRNNError("--max-chars and --top must be at least 1")
    path, model, vocab, _ = _load_model(checkpoint_path, "cpu", threads)
    layer_index, state = check_choice(model, layer, unit, state)
    text, unknown = drop_unknown(vocab, _read(file, encoding)[:max_chars])
    if unknown:
        _stderr().print(f"warning: {_unknown_note(unknown)}", soft_wrap=True, markup=False)
    acts = activations(model, vocab, text, state)  # (T, L, H)
    what = "tanh(c)" if state == "c" else "h"
    console = _stdout()
    matches = None
    if find:
        matches, absent = rank_units(acts, text_features(text), top, None if layer is None else layer_index)
        console.print(ranking_table(matches, absent))
        best: dict = {}
        for m in matches:  # best first within each feature
            best.setdefault(m.feature, m)
        sections = [
            Section(
                f"{m.feature}: layer {m.layer}, unit {m.unit} ({what}), correlation {m.correlation:+.3f}",
                text,
                acts[:, m.layer, m.unit],
            )
            for m in best.values()
        ]
        for s in sections:
            console.print(f"\n[bold]{s.title}[/]", highlight=False)
            console.print(rich_text(s.text[:FIND_EXCERPT], s.values), soft_wrap=True)
    else:
        sections = [Section(f"layer {layer_index}, unit {unit} ({what})", text, acts[:, layer_index, unit])]
        console.print(f"[bold]{sections[0].title}[/]", highlight=False)
        console.print(rich_text(text, sections[0].values), soft_wrap=True)
    if console.is_terminal:
        console.print(legend())
    if html_out is not None:
        cfg = model.cfg
        note = f"{path}: {cfg.cell.upper()} {cfg.layers}×{cfg.hidden}; text: {file} ({plural(len(text), 'character')})"
        try:
            html_out.write_text(html_page(f"charrnn neurons: {path}", note, sections, matches), encoding="utf-8")
        except OSError as exc:
            raise CharRNNError(f"--html {html_out}: cannot write: {exc.strerror or exc}") from None
        _stderr().print(f"wrote {html_out}", markup=False, soft_wrap=True)


# ---------------------------------------------------------------------------------- runs
def runs_command(
    root: Annotated[Path, typer.Option("--root", help="Folder that holds the runs (train's --out).")] = Path(
        "checkpoints"
    ),
    json_out: Annotated[bool, typer.Option("--json", help="Print the runs as JSON on stdout.")] = False,
) -> None:
    """List the training runs under --root: model, steps, characters seen, best validation loss."""
    try:
        from charrnn.insight.runs import list_runs, runs_table

        runs = list_runs(root)
        if json_out:
            typer.echo(json.dumps([r.to_json() for r in runs], indent=2))
        elif not runs:
            _stderr().print(f"no runs under {root}/ (train one with: charrnn train FILE)", markup=False, soft_wrap=True)
        else:
            _stdout().print(runs_table(runs, root))
        for run in runs:
            if run.problem:
                _stderr().print(f"warning: {run.name}: {run.problem}", soft_wrap=True, markup=False)
    except CharRNNError as exc:
        _fail(exc)
