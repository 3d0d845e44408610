"""How well a run does: its validation loss (the one loss over a stream, shared out over the
processes), and whether it learned more than counting characters would give."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from charrnn.config import TrainConfig
from charrnn.data.batches import batchify, fit_batch_size, num_chunks, release_pages, shard_rows
from charrnn.model import CharRNN, stream_loss


def unigram_entropy(ids: np.ndarray, chunk: int = 1 << 20) -> float:
    """The loss (nats/char) of predicting every character by its frequency in `ids` alone: what a
    model that learned nothing of the order of characters reaches. Counted a chunk at a time, and
    the pages of a memory-mapped corpus let go after, so memory does not grow with the corpus."""
    counts = np.zeros(0, dtype=np.int64)
    for start in range(0, len(ids), chunk):
        c = np.bincount(ids[start : start + chunk])
        counts = np.pad(counts, (0, max(0, len(c) - len(counts))))
        counts[: len(c)] += c
    release_pages(ids)
    p = counts[counts > 0] / max(1, counts.sum())
    return float(-(p * np.log(p)).sum())


def learned_nothing(last_eval: dict[str, Any], ids: np.ndarray, vocab_size: int) -> str | None:
    """A warning when a run's last evaluation (validation loss, else training loss) is above its
    corpus' unigram entropy: it learned nothing that counting characters would not give (a --lr
    far too high, or far too few steps); None when it did better."""
    loss = last_eval["val_loss"] if last_eval["val_loss"] is not None else last_eval["train_loss"]
    floor = unigram_entropy(ids)
    if loss <= floor:
        return None
    diverged = not loss <= 2 * math.log(vocab_size)  # (or nan) far worse than an untrained model's guess
    advice = "try a lower --lr" if diverged else "train longer, or try a lower --lr"
    return (
        f"the model did not learn: its loss {loss:.4g} is above the corpus' unigram entropy {floor:.3f} nats/char "
        f"(the loss of predicting characters by their frequency alone); {advice}"
    )


def evaluate_sum(
    model: CharRNN,
    ids: np.ndarray,
    batch_size: int,
    seq_len: int,
    device,
    carry_state: bool = True,
    rank: int = 0,
    world: int = 1,
    deadline: float | None = None,
    clock=time.perf_counter,
) -> tuple[float, int]:
    """Summed cross-entropy (nats) and the number of characters it covers, over this process'
    share of `ids`: the ids are laid out as `batch_size` x `world` streams, and process `rank`
    evaluates its block of them with carried state (unless told not to). At `deadline` (a
    reading of `clock`) it stops after the chunk in hand: the loss of the first chunks."""
    streams, seq_len = _streams(ids, batch_size, seq_len, rank, world)
    if not len(streams):
        return 0.0, 0
    return stream_loss(model, streams, seq_len, device, carry_state, deadline=deadline, clock=clock)


def _streams(ids: np.ndarray, batch_size: int, seq_len: int, rank: int, world: int) -> tuple[np.ndarray, int]:
    """This process' streams of `ids` for an evaluation, and the chunk length it reads them in."""
    seq_len = min(seq_len, len(ids) - 1)
    n_streams = max(1, fit_batch_size(len(ids), seq_len, batch_size * world))
    return batchify(ids, n_streams)[shard_rows(n_streams, rank, world)], seq_len


def validation_sum(
    model: CharRNN, val_ids: np.ndarray, batch_size: int, cfg: TrainConfig, device, dist, deadline, clock
) -> tuple[float, int, bool]:
    """A training run's evaluation, this process' share (see `evaluate_sum`; `deadline` a reading
    of `clock`): summed loss, characters, and whether the deadline cut it short; nothing without
    a validation split."""
    if not len(val_ids):
        return 0.0, 0, False
    streams, seq_len = _streams(val_ids, batch_size, cfg.seq_len, dist.rank, dist.world)
    if not len(streams):
        return 0.0, 0, False
    total, count = stream_loss(model, streams, seq_len, device, cfg.carry_state, deadline=deadline, clock=clock)
    return total, count, count < len(streams) * num_chunks(streams, seq_len) * seq_len  # (whole, if late: not cut)


def evaluate(model: CharRNN, ids: np.ndarray, batch_size: int, seq_len: int, device, carry_state: bool = True) -> float:
    """Mean cross-entropy (nats/char) over `ids`, streaming with carried state (unless told not to)."""
    total, count = evaluate_sum(model, ids, batch_size, seq_len, device, carry_state)
    return total / max(count, 1)
