"""The runs under a checkpoints folder, summarised from their checkpoints and metrics.

A run is any folder below the root that holds `last.pt`, `best.pt` or `metrics.jsonl` (found,
named and read through store/run_folder.py, the run folder's one home). Its
model and progress come from the checkpoint's metadata (`last.pt`, else `best.pt`, read through
`checkpoint.load`, which never runs code), its best validation loss from `metrics.jsonl`, read a
row at a time (store/run_folder.py's reader leaves out overlong lines and losses no run writes,
such as a tampered 1e-320). A run whose files cannot be read is still listed, with the problem
instead of the numbers.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from charrnn.cells import parameter_count
from charrnn.errors import CharRNNError
from charrnn.store import checkpoint, run_folder
from charrnn.store.run_folder import RunFolder, iter_metrics
from charrnn.units import LN2


@dataclass
class RunSummary:
    name: str  # path relative to the root
    path: str
    cell: str | None = None
    layers: int | None = None
    hidden: int | None = None
    parameters: int | None = None
    steps: int | None = None
    chars_seen: int | None = None
    best_val_loss: float | None = None  # nats/char, the lowest of metrics.jsonl
    modified: float = 0.0  # seconds since the epoch: the newest of the run's files
    problem: str | None = None

    @property
    def best_val_bpc(self) -> float | None:
        return None if self.best_val_loss is None else self.best_val_loss / LN2

    @property
    def model(self) -> str:
        return f"{self.cell.upper()} {self.layers}×{self.hidden}" if self.cell else "?"

    def to_json(self) -> dict:
        out = asdict(self)
        out["best_val_bpc"] = self.best_val_bpc
        out["modified"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.modified))
        return out


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder under `root` (itself included), sorted; a one-line error when `root` is
    not a folder."""
    root = Path(root)
    if not root.is_dir():
        if root.exists():
            raise CharRNNError(f"{root}: a file, not a folder of runs (give --root a folder such as checkpoints)")
        raise CharRNNError(f"{root}: no such folder (train a model first: charrnn train FILE)")
    return run_folder.find_runs(root)


def summarise(folder: Path, root: Path) -> RunSummary:
    files = [folder / name for name in RunFolder(folder).existing()]  # last.pt, best.pt, metrics.jsonl
    run = RunSummary(
        name=str(folder.relative_to(root)) if folder != root else folder.name,
        path=str(folder),
        modified=max(f.stat().st_mtime for f in files),
    )
    problems = []
    ckpt_path = next((f for f in files if f.suffix == ".pt"), None)
    if ckpt_path is not None:
        try:
            ckpt = checkpoint.load(ckpt_path)
            model, progress = ckpt.info.model, ckpt.info.progress
            run.cell, run.layers, run.hidden = model.cell, model.layers, model.hidden
            run.steps, run.chars_seen = progress.step, progress.chars_seen
            run.parameters = parameter_count(ckpt.info.model)
        except CharRNNError as exc:  # (the metadata is checked as it is read: typed, whole)
            problems.append(str(exc))
    metrics = RunFolder(folder).metrics
    if metrics.is_file():
        last = None
        try:
            for last in iter_metrics(metrics):  # one row at a time: memory does not grow with the file
                loss = last.get("val_loss")  # (None where the file holds no loss a run writes)
                if finite(loss) and (run.best_val_loss is None or loss < run.best_val_loss):
                    run.best_val_loss = loss
        except CharRNNError as exc:
            problems.append(str(exc))
        if last is not None and run.steps is None:
            run.steps, run.chars_seen = count(last.get("step")), count(last.get("chars_seen"))
    run.problem = "; ".join(problems) or None
    return run


def list_runs(root: str | Path = "checkpoints") -> list[RunSummary]:
    """The runs under `root`, the most recently modified first."""
    root = Path(root)
    runs = [summarise(folder, root) for folder in find_runs(root)]
    return sorted(runs, key=lambda r: r.modified, reverse=True)


def human(n: float) -> str:
    """1234567 -> '1.23M': short numbers for tables and axes."""
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.3g}"


def finite(value) -> bool:
    """Whether a value read from metrics.jsonl is a usable number (not a bool, NaN or infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def count(value) -> int | None:
    """A count read from metrics.jsonl (a step, characters seen), or None when it is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def age(seconds_ago: float) -> str:
    """How long ago, briefly: '40s ago', '5m ago', '3h ago', '12d ago'."""
    for size, suffix in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds_ago >= size:
            return f"{int(seconds_ago // size)}{suffix} ago"
    return f"{max(0, int(seconds_ago))}s ago"


def runs_table(runs: list[RunSummary], root: str | Path, now: float | None = None):
    """`charrnn runs` as a rich table (numbers shortened; --json has them in full). "val loss" is
    the best validation loss in nats per character, "bpc" the same in bits."""
    from rich import box
    from rich.table import Table

    now = time.time() if now is None else now
    table = Table(
        title=f"runs under {root}/", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    table.add_column("run", overflow="fold", min_width=min(12, max(len(r.name) for r in runs)))
    for name in ("model", "params", "steps", "chars", "val loss", "bpc", "modified"):
        table.add_column(name, justify="left" if name == "model" else "right", no_wrap=True)
    for r in runs:
        model = r.model if r.problem is None else f"[red]{'unreadable' if r.cell is None else r.model}[/]"
        table.add_row(
            r.name,
            model,
            "-" if r.parameters is None else human(r.parameters),
            "-" if r.steps is None else f"{r.steps:,}",
            "-" if r.chars_seen is None else human(r.chars_seen),
            "-" if r.best_val_loss is None else f"{r.best_val_loss:.3f}",
            "-" if r.best_val_bpc is None else f"{r.best_val_bpc:.3f}",
            age(now - r.modified),
        )
    return table
