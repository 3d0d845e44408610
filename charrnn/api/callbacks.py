"""Callbacks for `charrnn.train(callbacks=[...])`: what to do with a run's events.

A callback is any callable taking one event dict (see charrnn/api/training.py for the events).
Two are here: `PlainProgress`, plain lines for a notebook or a log (one per evaluation), and
`TensorBoard`, the losses, learning rate and speed for TensorBoard (`charrnn train --tensorboard
DIR` adds it). The command line's live display (charrnn/cli/display.py) is a third.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, TextIO

from charrnn.errors import CharRNNError
from charrnn.units import LN2


def _loss(nats: float | None) -> str:
    """A loss in nats and bits per character ("-" where there is none)."""
    if nats is None or not math.isfinite(nats):
        return "-"
    return f"{nats:.3f} ({nats / LN2:.3f} bpc)"


class PlainProgress:
    """One plain line per evaluation (step, epoch, losses, speed, learning rate), the warnings and
    the run's notes, and a last line when it is done, to `file` (default: sys.stderr, looked up
    when a line is written, so that a notebook's redirection applies)."""

    def __init__(self, file: TextIO | None = None):
        self.file = file

    def _print(self, line: str) -> None:
        print(line, file=self.file or sys.stderr, flush=True)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "eval":
            self._print(
                f"step {event['step']} | epoch {event['epoch']:.2f} | train {_loss(event['train_loss'])} | "
                f"val {_loss(event['val_loss'])}{' *' if event['best'] else ''} | "
                f"{event['chars_per_sec']:,.0f} chars/s | lr {event['lr']:.2e}"
            )
        elif kind == "warning":
            self._print(f"warning: {event['message']}")
        elif kind in ("engine", "corpus", "sized", "precision", "verdict", "stopping"):
            self._print(event["message"])
        elif kind == "done":
            self._print(
                f"done ({event['reason']}): {event['step']:,} steps, best loss {_loss(event['best_loss'])}; "
                f"last: {event['last']}"
            )


class TensorBoard:
    """Writes each evaluation's training and validation loss (nats per character), learning rate
    and training speed (characters per second) to a TensorBoard event file in `logdir`, at the
    evaluation's step: `tensorboard --logdir DIR` shows them. Needs the `tensorboard` package
    (`pip install charrnn[tensorboard]`); torch writes the file (torch.utils.tensorboard).

    The file is opened at the first event and closed when the run ends (or at `close()`); used
    as a context manager (as `train()` does), it is closed even when the run fails."""

    TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "lr": "lr", "chars_per_sec": "chars_per_sec"}

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self._writer = None
        _summary_writer()  # a missing package: an error now, before any training

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "eval":
            if self._writer is None:
                self._writer = _summary_writer()(log_dir=str(self.logdir))
            for key, tag in self.TAGS.items():
                if event.get(key) is not None:
                    self._writer.add_scalar(tag, event[key], event["step"])
            self._writer.flush()
        elif event["event"] in ("end", "done"):
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _summary_writer():
    """torch's SummaryWriter, or a CharRNNError naming the extra that installs what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CharRNNError(
            "--tensorboard needs the tensorboard package: pip install 'charrnn[tensorboard]' (or tensorboard)"
        ) from None
    return SummaryWriter
