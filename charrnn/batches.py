"""Truncated-BPTT batching: B contiguous streams walked in chunks of T characters.

`batchify` lays the corpus out as B streams side by side (stream b is the b-th contiguous
B-th of the text), so that chunk k+1 of every stream continues exactly where chunk k stopped and
the hidden state carried from one chunk to the next is meaningful.

    ids:    a b c d e f g h i j k l m n o p q r s t u v w x   (B = 2)
    stream0 a b c d e f g h i j k l
    stream1 m n o p q r s t u v w x
    chunk 0 (T = 4): x = [abcd, mnop]  y = [bcde, nopq]
    chunk 1:         x = [efgh, qrst]  y = [fghi, rstu]
"""

from __future__ import annotations

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
