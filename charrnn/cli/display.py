"""What people see on stderr: a live progress display on a terminal, plain log lines elsewhere.

`TrainDisplay` is the trainer's event callback. On a terminal it shows a rich progress bar with
step, epoch, losses (nats and bits/char), chars/s and ETA; when stderr is a file or a pipe
(Makefiles, CI) it prints one plain line per evaluation instead, and between them a heartbeat
line at least every `log_every` seconds (step, epoch, train loss, chars/s, threads, ETA), the
first one `log_every` seconds after the first step. Changes of the number of threads are one
line in both.

Live samples (the trainer's "sample" events) appear as one line under the progress bar on a
terminal, and as one log line (`sample @ step N: ...`) otherwise; newlines are shown as ↵.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from charrnn.cells import parameter_count
from charrnn.errors import plural
from charrnn.units import LN2



def _fmt_loss(nats: float | None) -> str:
    if nats is None or not math.isfinite(nats):
        return "-"
    if abs(nats) >= 1e4:  # a run that diverged
        return f"{nats:.4g} ({nats / LN2:.4g} bpc)"
    return f"{nats:.3f} ({nats / LN2:.3f} bpc)"



def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60:02d}:{seconds % 60:02d}"


def one_line(text: str) -> str:
    """A sample on one line: newlines as ↵, other control characters as ·."""
    return "".join("↵" if c == "\n" else c if c.isprintable() else "·" for c in text)


class _ProgressWithSample(Progress):
    """The progress bar with the latest live sample on the line below it."""

    sample: Text | None = None

    def get_renderables(self):
        yield from super().get_renderables()
        if self.sample is not None:
            yield self.sample


class TrainDisplay:
    def __init__(self, console: Console, quiet: bool = False, log_every: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.quiet = quiet
        self.live = console.is_terminal and not quiet
        self.log_every, self.clock = log_every, clock
        self._beat: tuple[float, int, float] | None = None  # (clock, chars seen, elapsed) at the last log line
        self._losses: list[float] = []  # training losses since then
        self.progress: Progress | None = None
        self.task = None
        self.val = None
        self.chars_per_sec = None
        self.epoch = 0.0

    # a context manager, so the live display is always closed
    def __enter__(self):
        if self.live:
            self.progress = _ProgressWithSample(
                TextColumn("[bold]step {task.fields[step]:>6}"),
                BarColumn(),
                TextColumn("epoch {task.fields[epoch]:.2f}"),
                TextColumn("train {task.fields[train]}"),
                TextColumn("val {task.fields[val]}"),
                TextColumn("{task.fields[speed]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.task = self.progress.add_task("train", total=1000, step=0, epoch=0.0, train="-", val="-", speed="")
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False

    @contextlib.contextmanager
    def preparing(self) -> Iterator[Callable[[str, int, int], None] | None]:
        """A progress callback for preparing a corpus: bars of bytes read and MB/s, one per pass,
        on a terminal (they vanish when done); nothing elsewhere."""
        if not self.live:
            yield None
            return
        bars = Progress(
            TextColumn("{task.description:<20}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=total)
            bars.update(tasks[phase], completed=done)

        with bars:
            yield update

    def warning(self, text: str) -> None:
        self({"event": "warning", "message": text})

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, soft_wrap=True, markup=False)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "warning":
            self.console.print(f"[yellow]warning:[/] {escape(event['message'])}", soft_wrap=True, markup=True)
        elif kind == "start":
            auto = f" of {event['cores']} usable, chosen by the load; --threads N pins it" if event.get("threads_auto") else ""
            self.message(
                f"training {event['parameters']:,} parameters on {event['device']} ({event['threads']} thread{'s' if event['threads'] != 1 else ''}{auto}"
                + (f" in each of {event['processes']} processes" if event.get("processes", 1) > 1 else "")
                + "), "
                f"batch {event['batch_size']}, {plural(event['chunks_per_epoch'], 'step')} per epoch"
                + (f", resuming at step {event['step']:,}" if event["step"] else "")
                + f"; run folder {event['run_dir']}"
            )
        elif kind == "step" and self.progress is None:
            self._heartbeat(event)
        elif kind == "threads" and event.get("message") and not self.quiet:
            self.console.print(event["message"], soft_wrap=True, markup=False, highlight=False)
        elif kind == "step" and self.progress is not None:
            self.epoch = event["epoch"]
            self.progress.update(
                self.task,
                completed=1000 * event["fraction"],
                step=event["step"],
                epoch=event["epoch"],
                train=f"{event['loss']:.3f}",
            )
        elif kind == "sample":
            self._show_sample(event)
        elif kind == "eval":
            self.val = event["val_loss"]
            if self.progress is not None:
                self.progress.update(
                    self.task,
                    val=_fmt_loss(self.val),
                    speed=f"{event['chars_per_sec']:,.0f} chars/s",
                )
            elif not self.quiet:
                self._beat, self._losses = (self.clock(), event["chars_seen"], event["elapsed_s"]), []
                self.console.print(
                    f"step {event['step']:>6} | epoch {event['epoch']:.2f} | train {_fmt_loss(event['train_loss'])} | "
                    f"val {_fmt_loss(event['val_loss'])}{' *' if event['best'] else ''} | "
                    f"{event['chars_per_sec']:,.0f} chars/s | lr {event['lr']:.2e} | {_clock(event['elapsed_s'])}",
                    soft_wrap=True,
                    highlight=False,
                )

    def _heartbeat(self, event: dict[str, Any]) -> None:
        """In a log: a plain line when `log_every` seconds passed since the last one."""
        if self.quiet or self.log_every <= 0:
            return
        self._losses.append(event["loss"])
        if self._beat is None:
            self._beat = (self.clock(), event["chars_seen"], event["elapsed_s"])
            return
        since, chars, elapsed = self._beat
        now = self.clock()
        if now - since < self.log_every:
            return
        speed = (event["chars_seen"] - chars) / max(event["elapsed_s"] - elapsed, 1e-9)
        done = event["fraction"]
        eta = _clock(event["elapsed_s"] * (1 - done) / done) if done > 0 else "?"
        loss = sum(self._losses) / len(self._losses)
        self.console.print(
            f"step {event['step']:>6} | epoch {event['epoch']:.2f} | train {_fmt_loss(loss)} | {speed:,.0f} chars/s | "
            f"{plural(event['threads'], 'thread')} | {_clock(event['elapsed_s'])}, ETA {eta}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
        self._beat, self._losses = (now, event["chars_seen"], event["elapsed_s"]), []

    def _show_sample(self, event: dict[str, Any]) -> None:
        prime, text = event.get("prime", ""), event["text"]
        if not text.startswith(prime):
            prime = ""
        if self.progress is not None:
            line = Text()
            line.append(f"sample @ {event['step']}: ", style="dim")
            line.append(one_line(prime), style="bold")
            line.append(one_line(text[len(prime) :]))
            self.progress.sample = line
            self.progress.refresh()
        elif not self.quiet:
            self.console.print(
                f"sample @ step {event['step']}: {one_line(text)}", soft_wrap=True, highlight=False, markup=False
            )

    def summary(self, summary: dict[str, Any]) -> None:
        self.console.print(
            f"done: {plural(summary['step'], 'step')}, {plural(summary['chars_seen'], 'character')} in {_clock(summary['elapsed_s'])}; "
            f"best loss {_fmt_loss(summary['best_loss'])}"
            + (f"; {plural(summary['skipped_steps'], 'non-finite step')} skipped" if summary["skipped_steps"] else "")
            + f"\nlast: {summary['last']}\nbest: "
            + (str(summary["best"]) if summary.get("best") and Path(summary["best"]).exists() else "none yet (no evaluation ran)"),
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


def checkpoint_table(path, ckpt) -> Table:
    """`charrnn info` as a two-column table."""
    meta = ckpt.meta
    model, cfg, prog = meta["model"], meta["config"], meta["progress"]
    n_params = parameter_count(ckpt.info.model)
    table = Table(title=str(path), show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    vocab = meta["vocab"]["chars"]
    rows = [
        ("model", f"{model['cell'].upper()} {model['layers']}×{model['hidden']}, embedding {model['embed']}, dropout {model['dropout']}"),
        ("parameters", f"{n_params:,}"),
        ("vocabulary", f"{plural(len(vocab), 'character')}: {''.join(c if c.isprintable() else '·' for c in vocab[:80])}{'…' if len(vocab) > 80 else ''}"),
        ("steps", f"{prog['step']:,} (epoch {prog['epoch']}, chunk {prog['chunk']})"),
        ("characters seen", f"{prog['chars_seen']:,}"),
        ("best loss", _fmt_loss(prog["best_loss"])),
        ("training time", _clock(prog["train_seconds"])),
        ("corpus", f"{meta['corpus']['path']} ({meta['corpus']['train_chars']:,} training characters)"),
        ("training config", ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None)),
        ("saved", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(meta["saved_at"]))),
        ("format", f"version {ckpt.format_version}, charrnn {meta['charrnn_version']}"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    return table



def bench_tables(result: dict) -> list[Table]:
    """`charrnn bench` as tables: one per section measured."""
    tables = _speed_tables(result) if "machine" in result else []
    if "load" in result:
        tables.append(load_table(result["load"]))
    if "serve" in result:
        from charrnn.bench.serve import serve_table

        tables.append(serve_table(result["serve"]))
    if "quality" in result:
        from charrnn.bench.quality import quality_table

        tables.append(quality_table(result["quality"]))
    return tables


def _speed_tables(result: dict) -> list[Table]:
    machine = result["machine"]
    title = f"{machine['cpu']} · {plural(machine['threads'], 'thread')} · {machine['device']} · torch {machine['torch']} · peak matmul {result['peak_gflops']:.1f} GFLOP/s" + (f" · medians of {result['rounds']} rounds" if result.get("rounds", 1) > 1 else "")
    train = Table(title=title, title_justify="left")
    for col in ("training", "chars/s", "GFLOP/s", "of peak", "vs reference"):
        train.add_column(col, justify="left" if col == "training" else "right")
    for row in result["training"]:
        train.add_row(row["what"], f"{row['chars_per_sec']:,.0f}", f"{row['gflops']:.1f}", f"{row['of_peak']:.0%}", f"{row['vs_reference']:.2f}×" if "vs_reference" in row else "")
    overheads = Table(title_justify="left")
    for col in ("during a run", "chars/s", "ratio or cost"):
        overheads.add_column(col, justify="left" if col == "during a run" else "right")
    for row in result.get("overheads", []):
        speed = f"{row['chars_per_sec']:,.0f}" if "chars_per_sec" in row else f"{row['seconds']:.2f} s"
        ratio = f"{row['vs_undisturbed']:.2f}× undisturbed" if "vs_undisturbed" in row else f"{row['cost']:.1%} of training time" if "cost" in row else ""
        overheads.add_row(row["what"], speed, ratio)
    sample = Table(title_justify="left")
    for col in ("sampling", "chars/s", "ratio"):
        sample.add_column(col, justify="left" if col == "sampling" else "right")
    for row in result["sampling"]:
        ratio = f"{row['vs_naive']:.1f}× naive, {row['vs_torch_stepper']:.1f}× torch" if "vs_torch_stepper" in row else f"{row['vs_naive']:.1f}× naive" if "vs_naive" in row else f"{row['vs_batch_1']:.1f}× batch 1" if "vs_batch_1" in row else ""
        sample.add_row(row["what"], f"{row['chars_per_sec']:,.0f}", ratio)
    other = Table(title_justify="left")
    other.add_column("other")
    other.add_column("result", justify="right")
    tok = result["tokenising"]
    other.add_row(tok["what"], f"{tok['mb_per_sec']:.1f} MB/s, peak RSS {tok['peak_rss_mb']:.0f} MB")
    other.add_row(result["startup"]["what"], f"{result['startup']['seconds']:.2f} s")
    return [train, overheads, sample, other] if result.get("overheads") else [train, sample, other]


def load_table(result: dict) -> Table:
    """`charrnn bench --load`: chars/s of each policy in each situation, and the ratio to alone."""
    table = Table(title=f"training the default model on a busy machine · {plural(result['cores'], 'core')} · {result['seconds']:g} s each", title_justify="left")
    for col in ("threads", "situation", "chars/s", "vs alone", "used"):
        table.add_column(col, justify="right" if col in ("chars/s", "vs alone") else "left")
    for row in result["rows"]:
        table.add_row(row["policy"], row["situation"], f"{row['chars_per_sec']:,.0f}", f"{row['vs_alone']:.0%}", " → ".join(str(n) for n in row["threads"]))
    table.caption = f"alone, charrnn's policy runs at {result['auto_vs_torch_alone']:.0%} of torch's defaults (torch, {result['cores']}: {result['cores']} threads, libgomp's default spin)"
    busy = result.get("busy_before")
    if busy is not None and busy > 0.3:
        table.caption += f"; the machine was not idle: other processes kept {busy:.1f} cores busy before it started, so 'alone' was not"
    return table
