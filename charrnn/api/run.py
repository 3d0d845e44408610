"""What `charrnn.train()` returns and how a run is stopped: `Run` (its folder, summary, metrics and
model) and `Stop` (a request to end it after the current step)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.config import TrainConfig
from charrnn.store.run_folder import RunFolder


class Stop:
    """Asks a run to end after its current step: last.pt is saved and `train()` returns its `Run`
    as usual (`run.reason` says why). Call it from anywhere: a callback, another thread, a signal
    handler (it only sets attributes). A request made before training starts ends the run at its
    first step."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._trainer = None

    def __call__(self, reason: str = "stopped") -> None:
        self.reason = reason
        trainer = self._trainer
        if trainer is not None:
            trainer.stop(reason)

    @property
    def requested(self) -> bool:
        return self.reason is not None

    @contextlib.contextmanager
    def attached(self, trainer) -> Iterator[None]:
        """While `trainer` trains, requests reach it (one made before, at once). A subclass may
        add to it: the command line installs its signal handlers here, for the training only."""
        self._trainer = trainer
        if self.reason is not None:
            trainer.stop(self.reason)
        try:
            yield
        finally:
            self._trainer = None


@dataclass
class Run:
    """A finished (or stopped) training run: its folder, its summary and its final options."""

    folder: Path
    summary: dict[str, Any]  # the Trainer's: reason, step, chars_seen, best_loss, elapsed_s...
    config: TrainConfig

    @property
    def reason(self) -> str:
        """Why it ended: "done" (a limit reached), a `Stop`'s reason, or "stopped by another process"."""
        return self.summary["reason"]

    @property
    def last(self) -> Path:
        """last.pt: where the run stopped, everything needed to continue it (`resume=True`)."""
        return RunFolder(self.folder).last

    @property
    def best(self) -> Path | None:
        """best.pt (the evaluation with the lowest loss), None when no evaluation ran."""
        best = RunFolder(self.folder).best
        return best if best.is_file() else None

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl: one per evaluation (step, train_loss, val_loss, lr...)."""
        return RunFolder(self.folder).read_metrics()

    def model(self):
        """The run's best model (its last where none is best yet), as `charrnn.load` opens it."""
        from charrnn.api.model import load

        return load(self.best or self.last)
