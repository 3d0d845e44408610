"""The rows a run reports, as plain dicts: the "start", "step" and "end" events, and an
evaluation's row (of metrics.jsonl and of the "eval" event). The Trainer sends them; the command
line shows them."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from charrnn.store.metadata import Progress
from charrnn.units import LN2


def eval_row(
    progress: Progress,
    chunks_per_epoch: int,
    train_loss: float,
    val_loss: float | None,
    lr: float,
    chars_per_sec: float,
    threads: int,
) -> dict[str, Any]:
    """The row of an evaluation now: losses in nats and bits per character, where the run stands."""
    p = progress
    return {
        "step": p.step,
        "epoch": round(p.epoch + p.chunk / chunks_per_epoch, 4),
        "chars_seen": p.chars_seen,
        "train_loss": train_loss,
        "train_bpc": train_loss / LN2,
        "val_loss": val_loss,
        "val_bpc": None if val_loss is None else val_loss / LN2,
        "lr": lr,
        "chars_per_sec": round(chars_per_sec, 1),
        "elapsed_s": round(p.train_seconds, 2),
        "skipped_steps": p.skipped_steps,
        "threads": threads,
    }


def step_event(
    progress: Progress, chunks_per_epoch: int, loss: float, lr: float, fraction: float, threads: int
) -> dict[str, Any]:
    """A step done: its loss and learning rate, and how far the run is (`fraction` of its limits)."""
    p = progress
    return {
        "event": "step",
        "step": p.step,
        "epoch": p.epoch + p.chunk / chunks_per_epoch,
        "loss": loss,
        "lr": lr,
        "fraction": fraction,
        "chars_seen": p.chars_seen,
        "elapsed_s": p.train_seconds,
        "threads": threads,
    }


def end_summary(reason: str, progress: Progress, last: Path, best: Path, elapsed: float) -> dict[str, Any]:
    """The summary of a run that ended (for `reason`), what `Trainer.fit` returns."""
    p = progress
    return {
        "event": "end",
        "reason": reason,
        "step": p.step,
        "chars_seen": p.chars_seen,
        "best_loss": p.best_loss,
        "last": str(last),
        "best": str(best),
        "skipped_steps": p.skipped_steps,
        "elapsed_s": elapsed,
    }


def start_event(trainer) -> dict[str, Any]:
    """What a run starts with: the model's size, where and how it trains, its data."""
    policy = trainer.thread_use.policy
    return {
        "event": "start",
        "parameters": trainer.budget.parameters,
        "device": str(trainer.device),
        # the forward pass's precision as it runs (fp32 where --precision fell back with a warning)
        "precision": "fp32" if trainer.autocast is contextlib.nullcontext else trainer.cfg.precision,
        "threads": trainer.thread_use.threads,
        "threads_auto": policy is not None,
        "cores": policy.cores if policy else None,
        "others": policy.others if policy else None,
        "batch_size": trainer.batch_size,
        "processes": trainer.dist.world,
        "chunks_per_epoch": trainer.chunks_per_epoch,
        "train_chars": trainer.corpus.train_chars,
        "val_chars": len(trainer.val_ids),
        "step": trainer.progress.step,
        "run_dir": str(trainer.run_dir),
    }
