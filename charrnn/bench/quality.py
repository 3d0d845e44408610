"""`charrnn bench --quality FILE`: validation loss against time, for the default recipe and for
the defaults charrnn had before it (2 x 256 LSTM, embedding 64, no dropout, fp32), in one run.

Each recipe is a real `charrnn train FILE --time-budget N` process, one after the other, so that
each has the whole machine, as a user's training would: start-up, the --size auto probe,
evaluations and saves count against the budget. The curve is the validation loss of each
evaluation in metrics.jsonl against the seconds elapsed; the result is the best of them (the
loss of best.pt, what `sample` uses).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charrnn.errors import CharRNNError
from charrnn.store.run_folder import RunFolder

# The recipe of charrnn 0.1 before --size auto: the fixed model every run got.
PREVIOUS = {
    "size": "default",
    "layers": 2,
    "hidden": 256,
    "embed": 64,
    "dropout": 0.0,
    "batch_size": 32,
    "seq_len": 128,
    "lr": 0.003,
    "weight_decay": 0.0,  # (0.1 since 2026-12-07)
    "grad_clip": 1.0,  # (5 since 2026-12-07)
    "warmup": 50,
    "precision": "fp32",  # (--precision auto, bf16 where the CPU has it natively, came on 2026-12-06)
}
RECIPES = {"default recipe": {}, "previous defaults": PREVIOUS}


def flags(options: dict[str, Any]) -> list[str]:
    return [arg for name, value in options.items() for arg in ("--" + name.replace("_", "-"), str(value))]


def train_for(
    corpus: Path, seconds: float, options: dict[str, Any], folder: Path, extra: list[str] = ()
) -> dict[str, Any]:
    """One `charrnn train` for `seconds`; its evaluations (seconds, characters read, losses) and
    the model it trained."""
    log = folder / "train.log"
    args = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(corpus),
        "--time-budget",
        f"{seconds:g}",
        "--out",
        str(folder),
        "--name",
        "run",
        "--log-every",
        "0",
        "--cache-dir",
        str(folder / "cache"),
        *flags(options),
        "--eval-share",  # (the loss at 25/50/75% of the run comes from evaluations every --eval-every)
        "0",
        *extra,
    ]
    with open(log, "w", encoding="utf-8") as err:
        code = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=err).returncode
    text = log.read_text(encoding="utf-8", errors="replace")
    if code != 0:
        raise CharRNNError(f"a --quality training failed (exit {code}): {text[-800:]}", exit_code=1)
    run = RunFolder(folder / "run")
    evals = [r for r in run.read_metrics() if r.get("val_loss") is not None]
    if not evals:
        raise CharRNNError(
            f"a --quality training evaluated nothing in {seconds:g} s (start-up took it all?): give more --seconds; "
            f"its log: {text[-800:]}",
            exit_code=1,
        )
    from charrnn.store import checkpoint  # (torch: the benchmark trains with it anyway)

    info = checkpoint.load(run.model_file()).info  # checked, typed
    model = info.model
    best = min(evals, key=lambda r: r["val_loss"])
    return {
        "model": f"{model.cell.upper()} {model.layers}×{model.hidden}, embed {model.embed}, "
        f"dropout {model.dropout:g}, batch {info.config.batch_size}",
        "curve": [
            {
                "seconds": r["elapsed_s"],
                "chars_seen": r["chars_seen"],
                "val_loss": r["val_loss"],
                "train_loss": r["train_loss"],
            }
            for r in evals
        ],
        "best_val_loss": best["val_loss"],
        "train_loss_at_best": best["train_loss"],
        "chars_seen": evals[-1]["chars_seen"],
        "steps": evals[-1]["step"],
        "expected": next((line for line in text.splitlines() if line.startswith("expected:")), None),
        "size_line": next((line for line in text.splitlines() if line.startswith("--size auto:")), None),
    }


def run_quality(
    corpus: str | Path,
    seconds: float,
    progress: Callable[[str], None] = lambda s: None,
    recipes: dict[str, dict] = RECIPES,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Every recipe for `seconds` on `corpus`, one after the other; with `keep`, each run's
    folder stays there (KEEP/<corpus>-<recipe>/run: `charrnn plot` draws them)."""
    corpus = Path(corpus)
    result: dict[str, Any] = {"corpus": str(corpus), "seconds": seconds, "recipes": {}}
    for name, options in recipes.items():
        progress(f"{name} on {corpus.name} for {seconds:g} s")
        if keep is not None:
            folder = Path(keep) / f"{corpus.stem}-{name.replace(' ', '-')}"
            folder.mkdir(parents=True, exist_ok=True)
            result["recipes"][name] = train_for(corpus, seconds, options, folder, ["--overwrite"])
            continue
        with tempfile.TemporaryDirectory(prefix="charrnn-quality-") as tmp:
            result["recipes"][name] = train_for(corpus, seconds, options, Path(tmp))
    return result


def quality_table(result: dict[str, Any]):
    """The recipes side by side: the model, characters read, the best validation loss, and the
    loss at a quarter, half and three quarters of the time."""
    from rich.table import Table

    table = Table(
        title=f"validation loss (nats/char) on the last 10% of {Path(result['corpus']).name} · "
        f"{result['seconds']:g} s each",
        title_justify="left",
    )
    for col in ("recipe", "model", "chars read", "at 25%", "at 50%", "at 75%", "best", "train at best"):
        table.add_column(col, justify="left" if col in ("recipe", "model") else "right")
    for name, run in result["recipes"].items():
        table.add_row(
            name,
            run["model"],
            f"{run['chars_seen'] / 1e6:,.1f} M",
            *(_at(run["curve"], result["seconds"] * f) for f in (0.25, 0.5, 0.75)),
            f"{run['best_val_loss']:.3f}",
            f"{run['train_loss_at_best']:.3f}",
        )
    return table


def _at(curve: list[dict], seconds: float) -> str:
    """The best validation loss of the evaluations up to `seconds`."""
    seen = [row["val_loss"] for row in curve if row["seconds"] <= seconds]
    return f"{min(seen):.3f}" if seen else "–"
