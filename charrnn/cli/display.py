"""What people see on stderr: a live progress display on a terminal, plain log lines elsewhere.

`TrainDisplay` is the callback of the runs `charrnn train` starts (charrnn/api/training.py): it
shows the Trainer's events and those of the run around them (the corpus being prepared and
described, what --size auto chose, the summary when done). On a terminal it shows a rich
progress bar with step, epoch, losses (nats and bits/char), chars/s and ETA; when stderr is a file or a pipe
(Makefiles, CI) it prints one plain line per evaluation instead, and between them a heartbeat
line at least every `log_every` seconds (step, epoch, train loss, chars/s, threads, ETA), the
first one `log_every` seconds after the first step. Changes of the number of threads are one
line in both.

Live samples (the trainer's "sample" events) appear as one line under the progress bar on a
terminal, and as one log line (`sample @ step N: ...`) otherwise; newlines are shown as ↵.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from charrnn.cli.formats import fmt_clock, fmt_loss, one_line
from charrnn.cli.tables import bench_tables  # noqa: F401  (imported from here by cli/benchmark.py)
from charrnn.errors import plural

# The events of a run (charrnn/api/training.py) that carry a line for people, shown as they come.
NOTES = ("engine", "corpus", "sized", "precision", "verdict", "stopping")


class _ProgressWithSample(Progress):
    """The progress bar with the latest live sample on the line below it."""

    sample: Text | None = None

    def get_renderables(self):
        yield from super().get_renderables()
        if self.sample is not None:
            yield self.sample


class TrainDisplay:
    def __init__(
        self,
        console: Console,
        quiet: bool = False,
        log_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
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
        self._bars = None  # the bars of a corpus being prepared (see _preparing)
        self._update: Callable[[str, int, int], None] | None = None

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

    def _preparing(self, event: dict[str, Any]) -> None:
        """A run's corpus being prepared: `preparing`'s bars from the first "preparing" event to
        the "prepared" one."""
        if event["event"] == "prepared":
            if self._bars is not None:
                self._bars.__exit__(None, None, None)
                self._bars, self._update = None, None
            return
        if self._bars is None:
            self._bars = self.preparing()
            self._update = self._bars.__enter__()
        if self._update is not None:
            self._update(event["phase"], event["done"], event["total"])

    def warning(self, text: str) -> None:
        self({"event": "warning", "message": text})

    def message(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, soft_wrap=True, markup=False)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind in NOTES:
            self.message(event["message"])
        elif kind in ("preparing", "prepared"):
            self._preparing(event)
        elif kind == "done":
            self.summary(event)
        elif kind == "warning":
            self.console.print(f"[yellow]warning:[/] {escape(event['message'])}", soft_wrap=True, markup=True)
        elif kind == "start":
            self.message(_start_line(event))
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
                    val=fmt_loss(self.val),
                    speed=f"{event['chars_per_sec']:,.0f} chars/s",
                )
            elif not self.quiet:
                self._beat, self._losses = (self.clock(), event["chars_seen"], event["elapsed_s"]), []
                self.console.print(
                    f"step {event['step']:>6} | epoch {event['epoch']:.2f} | train {fmt_loss(event['train_loss'])} | "
                    f"val {fmt_loss(event['val_loss'])}{' *' if event['best'] else ''} | "
                    f"{event['chars_per_sec']:,.0f} chars/s | lr {event['lr']:.2e} | {fmt_clock(event['elapsed_s'])}",
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
        eta = fmt_clock(event["elapsed_s"] * (1 - done) / done) if done > 0 else "?"
        loss = sum(self._losses) / len(self._losses)
        self.console.print(
            f"step {event['step']:>6} | epoch {event['epoch']:.2f} | train {fmt_loss(loss)} | {speed:,.0f} chars/s | "
            f"{plural(event['threads'], 'thread')} | {fmt_clock(event['elapsed_s'])}, ETA {eta}",
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
            f"done: {plural(summary['step'], 'step')}, {plural(summary['chars_seen'], 'character')} in "
            f"{fmt_clock(summary['elapsed_s'])}; best loss {fmt_loss(summary['best_loss'])}"
            + (f"; {plural(summary['skipped_steps'], 'non-finite step')} skipped" if summary["skipped_steps"] else "")
            + f"\nlast: {summary['last']}\nbest: "
            + (
                str(summary["best"])
                if summary.get("best") and Path(summary["best"]).exists()
                else "none yet (no evaluation ran)"
            ),
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


def _start_line(event: dict[str, Any]) -> str:
    """What trains where: the "start" event on one line."""
    auto = f" of {event['cores']} usable, chosen by the load; --threads N pins it" if event.get("threads_auto") else ""
    processes = f" in each of {event['processes']} processes" if event.get("processes", 1) > 1 else ""
    return (
        f"training {event['parameters']:,} parameters on {event['device']}"
        + (f" in {event['precision']}" if event.get("precision", "fp32") != "fp32" else "")
        + f" ({plural(event['threads'], 'thread')}"
        f"{auto}{processes}), batch {event['batch_size']}, {plural(event['chunks_per_epoch'], 'step')} per epoch"
        + (f", resuming at step {event['step']:,}" if event["step"] else "")
        + f"; run folder {event['run_dir']}"
    )
