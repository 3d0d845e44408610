"""Saving and restoring a run's state: everything that continues it exactly (weights, optimizer,
RNG and hidden states of every process, data position, losses) gathered into a checkpoint, and
checked against the run on resume (same corpus, same layout, best loss so far).

Functions of what they are given: the Trainer (trainer.py) calls them with its model, optimizer,
progress, hidden state and the description of its data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import numpy as np
import torch

from charrnn import __version__
from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.model import Hidden, hidden_from_list, hidden_to_list
from charrnn.store import checkpoint
from charrnn.store.metadata import CheckpointInfo, Corpus, Progress
from charrnn.store.run_folder import RunFolder
from charrnn.training.distributed import Dist, state_digest


@dataclasses.dataclass
class DataLayout:
    """What a checkpoint must match to continue: the streams of all processes and this process'
    block of them (`rows`), chunks per epoch, the corpus digest, and the training ids (for the
    digest of checkpoints from before prepared corpora)."""

    total_streams: int
    rows: slice
    chunks_per_epoch: int
    digest: str
    train_ids: np.ndarray


def gather_state(model, hidden: Hidden | None, progress: Progress, dist: Dist, device) -> dict[str, Any]:
    """What each process alone knows (hidden and random state, loss accumulators), from all of
    them, laid out as for one process with all the streams. A collective: every process calls it
    at the same step."""
    mine = {
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "hidden": hidden_to_list(hidden),
        "loss": (progress.loss_sum, progress.loss_count),
        "weights": state_digest(model.state_dict()) if dist.world > 1 else None,
    }
    parts = dist.gather(mine)
    digests = [part["weights"] for part in parts]
    if len(set(digests)) > 1:
        raise dist.error(f"the processes' weights differ (a bug, please report it): {digests}", exit_code=1)
    rng = {"torch": parts[0]["rng"]}
    if parts[0]["cuda_rng"] is not None:
        rng["cuda"] = parts[0]["cuda_rng"]
    for rank, part in enumerate(parts[1:], start=1):
        rng[f"torch.{rank}"] = part["rng"]
        if part["cuda_rng"] is not None:
            rng[f"cuda.{rank}"] = part["cuda_rng"]
    hidden_all = [torch.cat(tensors, dim=1) for tensors in zip(*(part["hidden"] for part in parts))]  # (L, B x P, H)
    loss = [sum(part["loss"][i] for part in parts) for i in (0, 1)]
    return {"rng": rng, "hidden": hidden_all, "loss": loss, "digests": digests}


def checkpoint_info(
    vocab: Vocab,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    progress: Progress,
    batch_size: int,
    world: int,
    corpus: Corpus,
    state: dict[str, Any],
) -> CheckpointInfo:
    """What a checkpoint of a run now says about itself; `state`: what `gather_state` gathered
    (the loss all processes accumulated, their weights' digests)."""
    return CheckpointInfo(
        charrnn_version=__version__,
        vocab=vocab,
        model=model_cfg,
        config=cfg,
        progress=dataclasses.replace(progress, loss_sum=state["loss"][0], loss_count=state["loss"][1]),
        batch_size=batch_size,
        world_size=world,
        corpus=corpus,
        saved_at=time.time(),
        weights_digests=state["digests"] if world > 1 else None,
    )


def restore(
    ckpt: checkpoint.Checkpoint, model, optimizer, data: DataLayout, dist: Dist, device, folder: RunFolder
) -> tuple[Progress, Hidden | None]:
    """Load a checkpoint of this run into `model` and `optimizer` (after checking it continues
    this corpus and layout), set this process' random state, and return where the run stands and
    this process' share of the carried hidden state."""
    info = ckpt.info
    if len(set(dist.gather(info.progress.step))) > 1:  # they would part ways at the first evaluation
        raise CharRNNError(
            "the processes were given different checkpoints to resume from (load it on rank 0 and share it)",
            exit_code=1,
        )
    if not same_corpus(info.corpus.digest, "world_size" in ckpt.meta, data) or info.streams != data.total_streams:
        raise dist.error(
            "cannot resume: the corpus (or the batch layout) differs from the one this run was "
            "trained on; use --init-from to fine-tune on a new corpus instead"
        )
    if info.progress.chunk >= data.chunks_per_epoch:  # (the same corpus and layout: never, unless edited)
        raise dist.error(
            f"cannot resume: the checkpoint is damaged: its position, chunk {info.progress.chunk:,}, "
            f"is past the end of an epoch ({data.chunks_per_epoch:,} chunks)"
        )
    model.load_state_dict(ckpt.model)
    if ckpt.optimizer:
        optimizer.load_state_dict(ckpt.optimizer)
    progress = dataclasses.replace(info.progress)
    if not dist.main:  # rank 0 carries on with the loss all the processes had accumulated
        progress.loss_sum, progress.loss_count = 0.0, 0
    rng, suffix = ckpt.rng or {}, "" if dist.main else f".{dist.rank}"
    if (dist.main or info.world_size == dist.world) and "torch" + suffix in rng:
        torch.set_rng_state(rng["torch" + suffix])
        if "cuda" + suffix in rng and device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda" + suffix], device)
    hidden = hidden_from_list([t[:, data.rows] for t in ckpt.hidden or []], info.model.cell, device)
    progress.best_loss = dist.from_main(lambda: best_loss_so_far(folder, progress))
    return progress, hidden


def same_corpus(digest: str, current_format: bool, data: DataLayout) -> bool:
    """Whether a checkpoint's corpus digest is this corpus'. Checkpoints from before prepared
    corpora (their metadata has no world_size) hashed the training ids whole: compare those the
    same way."""
    if digest == data.digest:
        return True
    return not current_format and digest == hashlib.sha1(np.ascontiguousarray(data.train_ids).tobytes()).hexdigest()


def best_loss_so_far(folder: RunFolder, progress: Progress) -> float:
    """The run's best loss on resume: best.pt may be newer than last.pt, so never replace it by a
    worse one. The metrics written after the checkpoint's step go (they will be redone)."""
    folder.truncate_metrics(progress.step)
    if folder.best.exists():
        try:
            return min(progress.best_loss, checkpoint.load(folder.best).info.progress.best_loss)
        except CharRNNError:
            pass
    return progress.best_loss
