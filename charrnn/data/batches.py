"""Truncated-BPTT batching: B contiguous streams walked in chunks of T characters.

`batchify` lays the corpus out as B streams side by side (stream b is the b-th contiguous
B-th of the text), so that chunk k+1 of every stream continues exactly where chunk k stopped and
the hidden state carried from one chunk to the next is meaningful.

    ids:    a b c d e f g h i j k l m n o p q r s t u v w x   (B = 2)
    stream0 a b c d e f g h i j k l
    stream1 m n o p q r s t u v w x
    chunk 0 (T = 4): x = [abcd, mnop]  y = [bcde, nopq]
    chunk 1:         x = [efgh, qrst]  y = [fghi, rstu]

Across P processes (data-parallel training), the corpus is laid out as B x P streams and process
r takes its own contiguous block of B of them: together the processes walk exactly the streams
that one process with B x P streams would, so a run keeps its data position when it moves to a
different number of processes, as long as the total number of streams is the same.
"""

from __future__ import annotations

import mmap

import numpy as np
import torch


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """(N,) ids -> (B, N // B) streams; the last N mod B characters are dropped."""
    length = len(ids) // batch_size
    return np.asarray(ids[: batch_size * length]).reshape(batch_size, length)


def num_chunks(streams: np.ndarray, seq_len: int) -> int:
    """How many full chunks of `seq_len` inputs (each with its next-character target) fit."""
    return max(0, (streams.shape[1] - 1) // seq_len)


def get_chunk(streams: np.ndarray, index: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk `index`: inputs x and targets y (the next characters), each (B, T) int64."""
    start = index * seq_len
    block = torch.from_numpy(streams[:, start : start + seq_len + 1].astype(np.int64))
    return block[:, :-1], block[:, 1:]


def fit_batch_size(n_chars: int, seq_len: int, batch_size: int) -> int:
    """The largest batch size <= `batch_size` that gives at least one full chunk (0 if none)."""
    return min(batch_size, n_chars // (seq_len + 1))


def shard_rows(n_rows: int, rank: int, world: int) -> slice:
    """The contiguous block of the `n_rows` streams that process `rank` of `world` owns.

    Blocks differ in size by at most one, and may be empty when there are fewer rows than
    processes (a short validation split)."""
    per, extra = divmod(n_rows, world)
    start = rank * per + min(rank, extra)
    return slice(start, start + per + (1 if rank < extra else 0))


def even_share_of_streams(saved_batch: int, saved_world: int, world: int) -> int | None:
    """Streams per process that keep a run's saved_batch x saved_world streams on `world`
    processes, or None when they cannot be split evenly."""
    total = saved_batch * saved_world
    return total // world if total % world == 0 else None


def release_pages(ids: np.ndarray) -> None:
    """Unmap the pages of a memory-mapped id array that reading has brought in (they stay in the
    page cache, and come back on the next read): the process' resident memory then does not
    grow with the part of a large corpus it has walked. Anything else is left alone."""
    base = ids
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        try:
            base.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass
