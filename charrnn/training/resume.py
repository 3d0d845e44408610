"""Continuing a run: the streams each process takes to continue a checkpoint's run on another
number of processes, and a cheap fingerprint of a corpus, to tell whether a resumed run reads the
same one."""

from __future__ import annotations

import hashlib

import numpy as np

from charrnn.data.batches import even_share_of_streams
from charrnn.errors import CharRNNError
from charrnn.store.metadata import CheckpointInfo

SAMPLED_DIGEST_POINTS = 1 << 20


def ids_digest(ids: np.ndarray) -> str:
    """A cheap fingerprint of an id array of any size: its length, dtype and about a million ids
    spread evenly over it (a memory-mapped corpus of gigabytes is not read whole). The command
    line uses the prepared corpus' content hash instead; this is for ids from elsewhere."""
    h = hashlib.sha1(f"{len(ids)}:{ids.dtype}".encode())
    step = max(1, len(ids) // SAMPLED_DIGEST_POINTS)
    h.update(np.ascontiguousarray(ids[::step]).tobytes())
    h.update(np.ascontiguousarray(ids[-4096:]).tobytes())
    return h.hexdigest()


def layout_to_continue(saved: CheckpointInfo, world: int) -> tuple[int, str | None]:
    """Streams per process that continue the `saved` run on `world` processes (the same streams,
    from the same position; data/batches.even_share_of_streams does the sum), and a note when
    that is not how it was trained. A clear error when its streams cannot be split evenly over
    `world` processes. (The Trainer asks; `plan` asks first where torchrun is to start, so that
    an impossible layout is refused before any process is.)"""
    saved_batch, saved_world = saved.batch_size, saved.world_size
    if saved_world == world:
        return saved_batch, None
    batch = even_share_of_streams(saved_batch, saved_world, world)
    total = saved_batch * saved_world
    trained = f"{saved_world} process{'es' if saved_world > 1 else ''} x {saved_batch} streams"
    if batch is None:
        raise CharRNNError(
            f"cannot resume on {world} processes: the run was trained by {trained}, and its {total} "
            f"streams do not split evenly over {world}; resume with {saved_world} processes "
            f"(--nproc {saved_world}), or any number that divides {total}"
        )
    return batch, (
        f"the run was trained by {trained}; continuing on {world} x {batch}: the same {total} streams "
        f"from the same position (dropout draws other random numbers)"
    )
