"""The run folder: one home for its file names and for reading and writing them.

A run folder (`checkpoints/NAME/`) holds what one training run wrote:

- `last.pt`: everything needed to continue exactly (weights, optimizer, position, random states);
- `best.pt`: the same, at the evaluation with the lowest validation loss so far;
- `metrics.jsonl`: one JSON object a line, an evaluation each (rows with an "event" key are notes
  about the run, such as a change of threads).

Every part of charrnn that names these files or reads the metrics does it here: train, plan,
insight, bench, sample and serve. The checkpoints themselves are written by `store.checkpoint`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from charrnn.errors import CharRNNError

LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"
RUN_FILES = (LAST, BEST, METRICS)
# What a user means by a run folder where one model is wanted: its best checkpoint, else its last.
MODEL_FILES = (BEST, LAST)


class RunFolder:
    """The files of one run folder. Nothing is created until something is written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def existing(self) -> list[str]:
        """The run files already here, in RUN_FILES' order."""
        return [name for name in RUN_FILES if (self.path / name).is_file()]

    def model_file(self) -> Path | None:
        """The checkpoint a user means by this folder: best.pt, else last.pt; None if neither."""
        for name in MODEL_FILES:
            if (self.path / name).is_file():
                return self.path / name
        return None

    def append_metrics(self, row: dict[str, Any]) -> None:
        """Add one row to metrics.jsonl (a write failure is an OSError, for the caller to word)."""
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def read_metrics(self, notes: bool = False) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl (see `read_metrics`); [] when there is none."""
        if not self.metrics.is_file():
            return []
        return read_metrics(self.metrics, notes=notes)

    def truncate_metrics(self, step: int) -> None:
        """Drop the rows written after `step` (a resumed run redoes them); notes of those steps too.
        A torn or unreadable line goes as well."""
        if not self.metrics.exists():
            return
        keep = [row for row in read_metrics(self.metrics, notes=True) if _step(row) is not None and _step(row) <= step]
        self.metrics.write_text("".join(json.dumps(row) + "\n" for row in keep), encoding="utf-8")


def _step(row: dict[str, Any]) -> int | None:
    step = row.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def read_metrics(path: str | Path, notes: bool = False) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl, in order (`iter_metrics`, as a list)."""
    return list(iter_metrics(path, notes))


def iter_metrics(path: str | Path, notes: bool = False) -> Iterator[dict[str, Any]]:
    """The rows of a metrics.jsonl, in order, one at a time (a summary of a huge file holds one
    row, not all of them). Lines that are not JSON objects (a torn last line, after a crash or a
    full disk) are skipped; so are lines longer than MAX_LINE (an evaluation's row is a few
    hundred bytes: a longer line was not written by a run, and is passed over in chunks, never
    held whole) and notes about the run (rows with an "event" key) unless `notes`. A loss that
    no run writes (see `plausible_loss`) reads as None, unknown. A missing or unreadable file is
    a CharRNNError."""
    try:
        with open(path, "rb") as fh:
            for line in _bounded_lines(fh):
                try:
                    row = json.loads(line.decode("utf-8"))
                except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
                    continue
                if isinstance(row, dict) and (notes or "event" not in row):
                    yield _plausible_losses(row)
    except FileNotFoundError:
        raise CharRNNError(f"{path}: no such file") from None
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read: {exc.strerror or exc}") from None


def metrics_path(path: str | Path) -> Path:
    """A run folder's metrics.jsonl, or `path` itself when it names a metrics.jsonl."""
    path = Path(path)
    return path if path.name == METRICS else path / METRICS


def find_runs(root: str | Path) -> list[Path]:
    """Every folder under `root` (itself included) that holds a run file, sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted({p.parent for name in RUN_FILES for p in root.rglob(name) if p.is_file()})


def newest_model(root: str | Path = "checkpoints") -> Path:
    """For `sample` and `serve` without a model named: the most recently written best.pt anywhere
    under `root`, or when there is none (no run has evaluated yet) the most recent last.pt."""
    root = Path(root)
    for name in MODEL_FILES:
        found = [p for p in root.rglob(name) if p.is_file()] if root.is_dir() else []
        if found:
            return max(found, key=lambda p: p.stat().st_mtime_ns)
    raise CharRNNError(f"no checkpoint under {root}/: train a model first (charrnn train FILE) or pass --checkpoint")


MAX_LINE = 64 << 10  # bytes: a row of metrics.jsonl is a few hundred; a longer line is skipped


def _bounded_lines(fh: BinaryIO) -> Iterator[bytes]:
    """The lines of `fh` up to MAX_LINE bytes each; a longer one is read past in MAX_LINE chunks
    and left out, so a 300 MB line costs 64 KB of memory, not a gigabyte."""
    while line := fh.readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = fh.readline(MAX_LINE)


# A loss in nats per character that a run can write: 1e-6 nats is a character in a million
# mispredicted; far below it (a tampered 1e-320) or negative, or not finite, is no loss a
# model reached, and would show as the best of a table of runs.
LOSS_RANGE = (1e-6, 1e4)
LOSS_KEYS = ("train_loss", "val_loss", "train_bpc", "val_bpc")


def plausible_loss(value: Any) -> bool:
    """Whether `value` (read from metrics.jsonl) is a loss a run could have written: a number
    (not a bool) within LOSS_RANGE."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and LOSS_RANGE[0] <= value <= LOSS_RANGE[1]
    )


def _plausible_losses(row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every loss that is not `plausible_loss` made None (unknown)."""
    for key in LOSS_KEYS:
        if row.get(key) is not None and not plausible_loss(row[key]):
            row[key] = None
    return row
