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
from pathlib import Path
from typing import Any

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
    """The rows of a metrics.jsonl, in order. Lines that are not JSON objects (a torn last line,
    after a crash or a full disk) are skipped; so are notes about the run (rows with an "event"
    key) unless `notes`. A missing or unreadable file is a CharRNNError."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CharRNNError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CharRNNError(f"{path}: cannot read: {exc}") from None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and (notes or "event" not in row):
            rows.append(row)
    return rows


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
