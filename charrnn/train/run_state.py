"""Saving and restoring a run's state: everything that continues it exactly (weights, optimizer,
RNG and hidden states of every process, data position, losses) gathered into a checkpoint with
its typed metadata, and checked against the run on resume (same corpus, best loss so far)."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn import __version__
from charrnn.errors import CharRNNError
from charrnn.model import hidden_from_list, hidden_to_list
from charrnn.store import checkpoint
from charrnn.store.metadata import CheckpointInfo, Corpus, Progress
from charrnn.train.distributed import state_digest


class RunState:
    """A part of `Trainer` (see trainer.py), split out by idea; it uses the trainer's attributes."""

    def _gather_state(self) -> dict[str, Any]:
        """What each process alone knows (hidden and random state, loss accumulators), from all
        of them, laid out as for one process with all the streams. A collective: every process
        calls it at the same step."""
        mine = {
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "hidden": hidden_to_list(self.hidden),
            "loss": (self.progress.loss_sum, self.progress.loss_count),
            "weights": state_digest(self.model.state_dict()) if self.dist.world > 1 else None,
        }
        parts = self.dist.gather(mine)
        digests = [part["weights"] for part in parts]
        if len(set(digests)) > 1:
            raise self._error(f"the processes' weights differ (a bug, please report it): {digests}", exit_code=1)
        rng = {"torch": parts[0]["rng"]}
        if parts[0]["cuda_rng"] is not None:
            rng["cuda"] = parts[0]["cuda_rng"]
        for rank, part in enumerate(parts[1:], start=1):
            rng[f"torch.{rank}"] = part["rng"]
            if part["cuda_rng"] is not None:
                rng[f"cuda.{rank}"] = part["cuda_rng"]
        hidden = [torch.cat(tensors, dim=1) for tensors in zip(*(part["hidden"] for part in parts))]  # (L, B x P, H)
        loss = [sum(part["loss"][i] for part in parts) for i in (0, 1)]
        return {"rng": rng, "hidden": hidden, "loss": loss, "digests": digests}

    def meta(self, state: dict[str, Any] | None = None) -> dict[str, Any]:
        progress = dataclasses.replace(self.progress)
        if state is not None:  # the loss accumulated by all processes
            progress.loss_sum, progress.loss_count = state["loss"]
        return CheckpointInfo(
            charrnn_version=__version__,
            vocab=self.vocab,
            model=self.model_cfg,
            config=self.cfg,
            progress=progress,
            batch_size=self.batch_size,
            world_size=self.dist.world,
            corpus=Corpus(path=self.corpus_path, train_chars=self.train_chars, digest=self.data_digest),
            saved_at=time.time(),
            weights_digests=state["digests"] if state is not None and self.dist.world > 1 else None,
        ).to_meta()

    def save(self, filename: str) -> Path:
        """Write a checkpoint (rank 0; every process must call this at the same step)."""
        path = self.run_dir / filename
        state = self._gather_state()
        if not self.dist.main:
            return path
        ckpt = checkpoint.Checkpoint(
            meta=self.meta(state),
            model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            rng=state["rng"],
            hidden=state["hidden"],
        )
        started = self.clock()
        checkpoint.save(ckpt, path)
        self.costs.save = self.clock() - started
        self.events({"event": "save", "path": str(path), "step": self.progress.step})
        return path

    def _restore(self, ckpt: checkpoint.Checkpoint) -> None:
        meta, d = ckpt.meta, self.dist
        if len(set(d.gather(meta["progress"]["step"]))) > 1:  # they would part ways at the first evaluation
            raise CharRNNError(
                "the processes were given different checkpoints to resume from (load it on rank 0 and share it)",
                exit_code=1,
            )
        saved_total = meta.get("batch_size", 0) * meta.get("world_size", 1)
        if (
            not self._same_corpus(meta["corpus"]["digest"], "world_size" in meta)
            or saved_total != self.batch_size * d.world
        ):
            raise self._error(
                "cannot resume: the corpus (or the batch layout) differs from the one this run was "
                "trained on; use --init-from to fine-tune on a new corpus instead"
            )
        if meta["progress"]["chunk"] >= self.chunks_per_epoch:  # (the same corpus and layout: never, unless edited)
            raise self._error(
                f"cannot resume: the checkpoint is damaged: its position, chunk {meta['progress']['chunk']:,}, is past the end of an epoch ({self.chunks_per_epoch:,} chunks)"
            )
        self.model.load_state_dict(ckpt.model)
        if ckpt.optimizer:
            self.optimizer.load_state_dict(ckpt.optimizer)
        self.progress = Progress(**meta["progress"])
        if not d.main:  # rank 0 carries on with the loss all the processes had accumulated
            self.progress.loss_sum, self.progress.loss_count = 0.0, 0
        rng = ckpt.rng or {}
        same_world = meta.get("world_size", 1) == d.world
        suffix = "" if d.main else f".{d.rank}"
        if (d.main or same_world) and "torch" + suffix in rng:
            torch.set_rng_state(rng["torch" + suffix])
            if "cuda" + suffix in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda" + suffix], self.device)
        hidden = [t[:, self.rows] for t in ckpt.hidden or []]  # this process' streams of all of them
        self.hidden = hidden_from_list(hidden, self.model_cfg.cell, self.device)
        self.progress.best_loss = d.from_main(lambda: self._best_loss_so_far(self.progress.best_loss))

    def _same_corpus(self, digest: str, current_format: bool) -> bool:
        """Whether a checkpoint's corpus digest is this corpus'. Checkpoints from before prepared
        corpora (no world_size) hashed the training ids whole: compare those the same way."""
        if digest == self.data_digest:
            return True
        return (
            not current_format and digest == hashlib.sha1(np.ascontiguousarray(self._train_ids).tobytes()).hexdigest()
        )

    def _best_loss_so_far(self, best_loss: float) -> float:
        """best.pt may be newer than last.pt: never replace it by a worse one."""
        self._truncate_metrics(self.progress.step)
        best = self.run_dir / "best.pt"
        if best.exists():
            try:
                return min(best_loss, checkpoint.load(best).meta["progress"]["best_loss"])
            except (CharRNNError, KeyError, TypeError):
                pass
        return best_loss
