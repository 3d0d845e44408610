"""Threads while training: the policy that adapts their number to a busy machine, fed with each
step's time."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from charrnn.cells import parameter_count
from charrnn.machine.thread_policy import ThreadPolicy
from charrnn.machine.threads import METER, cores_here


class ThreadUse:
    """A part of `Trainer` (see trainer.py), split out by idea; it uses the trainer's attributes."""

    def _thread_policy(self) -> ThreadPolicy | None:
        """--threads N pins the count; auto (None) follows the free cores of this process' share
        of the machine, probing other counts while training on a CPU in a single process (the
        processes of a distributed run, whose steps wait for each other, follow the load alone)."""
        if self.cfg.threads not in (None, "auto"):
            return None
        local = self.dist.local_world
        cores = max(1, cores_here() // local)
        return ThreadPolicy(
            cores,
            METER,
            probe=self.device.type == "cpu" and self.dist.world == 1,
            siblings=local - 1,
            chars_per_step=self.batch_size * self.cfg.seq_len,
        )

    def _adapt_threads(self, step_seconds: float) -> None:
        if self.policy is None:
            return
        threads = self.policy.step_done(step_seconds)
        if threads is not None and threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        decision = self.policy.take_decision()
        if decision is not None and (decision.threads != decision.previous or decision.reason == "first measurement"):
            self._note(
                {
                    "event": "threads",
                    "step": self.progress.step,
                    "threads": decision.threads,
                    "previous": decision.previous,
                    "reason": decision.reason,
                    "others": decision.others,
                    "chars_per_sec": decision.rates,
                    "message": decision.describe(),
                }
            )

    def _note(self, row: dict[str, Any]) -> None:
        """A note about the run (not an evaluation): shown, and kept in metrics.jsonl."""
        self.events(row)
        if self.dist.main:
            self._append_metrics({k: v for k, v in row.items() if k != "message"})

    def _measured_step(self, seconds: float) -> None:
        """Also the guesses for what has not run yet: a save writes the weights and two AdamW
        moments (at a modest 200 MB/s); a live sample's character costs about a forward time
        step of the batch, a third of a training step over seq_len (at least 0.5 ms)."""
        c = self.costs
        self._recent_steps.append(seconds)
        c.step = float(np.median(self._recent_steps))  # one slow step under load would swing the reserve
        c.guess_save = 0.01 + 12 * parameter_count(self.model.cfg) / 200e6
        c.guess_sample_per_char = max(seconds / (3 * self.cfg.seq_len), 5e-4)
