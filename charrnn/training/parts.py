"""What a Trainer is built from, checked before anything is allocated: the streams each process
trains on (--batch-size, or the resumed run's, cut down for a short corpus), the live samples'
prime, and the model (checked to fit in memory) with its DDP wrapper and optimizer."""

from __future__ import annotations

from collections.abc import Callable

import torch

from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.batches import fit_batch_size
from charrnn.data.vocab import Vocab, describe_chars
from charrnn.errors import CharRNNError, plural
from charrnn.model import CharRNN
from charrnn.store.metadata import CheckpointInfo
from charrnn.training.distributed import Dist
from charrnn.training.resources import memory_problem
from charrnn.training.resume import layout_to_continue


class CorpusTooShort(CharRNNError):
    """The corpus has not one chunk of --seq-len to train on (the command line forgets its cache entry)."""


def batch_size_per_process(
    cfg: TrainConfig,
    dist: Dist,
    train_chars: int,
    resumed: CheckpointInfo | None,
    corpus_path: str,
    warn: Callable[[str], None],
) -> int:
    """--batch-size (or the streams that continue the `resumed` run), cut down where the corpus
    is too short for as many streams of one chunk each; an error where it is too short for one."""
    world, wanted = dist.world, cfg.batch_size
    if resumed is not None:
        try:
            wanted, note = layout_to_continue(resumed, world)
        except CharRNNError as exc:
            raise dist.error(str(exc)) from None
        if note:
            warn(note)
    batch_size = fit_batch_size(train_chars, cfg.seq_len, wanted * world) // world  # per process
    if batch_size < 1:
        raise dist.error(
            f"{corpus_path or 'corpus'}: too short: the training split has {plural(train_chars, 'character')}, "
            f"at least {(cfg.seq_len + 1) * world} are needed for one chunk of --seq-len {cfg.seq_len}"
            + (f" in each of {world} processes" if world > 1 else ""),
            kind=CorpusTooShort,
        )
    if batch_size < wanted:
        warn(
            f"the corpus is short: using --batch-size {batch_size} instead of {wanted} "
            f"so that every stream holds a chunk of {cfg.seq_len}"
        )
    return batch_size


def check_sample_prime(prime: str, vocab: Vocab, dist: Dist) -> None:
    unknown = vocab.unknown(prime)
    if unknown:
        raise dist.error(f"--sample-prime has characters that are not in the corpus: {describe_chars(unknown)}")


def build_model(
    cfg: TrainConfig, model_cfg: ModelConfig, batch_size: int, device: torch.device, dist: Dist, init_from=None
) -> tuple[CharRNN, torch.nn.Module, torch.optim.Optimizer]:
    """The model (checked to fit in memory first; the same initial weights on every process, or
    the weights of the `init_from` checkpoint), what a step calls (the model or its DDP wrapper)
    and AdamW."""
    torch.manual_seed(cfg.seed)  # the same on every process: the same initial weights
    too_large = memory_problem(model_cfg, batch_size, cfg.seq_len, device, dist.local_world)
    if too_large:  # (before allocating it: a --hidden 1000000 would ask for terabytes)
        raise dist.error(too_large)
    model = CharRNN(model_cfg).to(device)
    model.weight_drop = cfg.weight_drop
    model.dropout_mask = cfg.dropout_mask
    if init_from is not None:
        model.load_state_dict(init_from.model)
    train_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        torch.manual_seed(cfg.seed + dist.rank)  # but each its own dropout
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    return model, train_model, optimizer
