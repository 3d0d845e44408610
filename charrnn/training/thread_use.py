"""Threads while training: --threads N pins them; auto follows the free cores of this process'
share of the machine, with a policy fed with each step's time (machine/thread_policy.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from charrnn.machine.thread_policy import ThreadPolicy
from charrnn.machine.threads import METER, cores_here


class ThreadUse:
    """The threads this process trains with (`threads`), set in torch, and the notes about their
    changes that the run keeps (rows for the events and metrics.jsonl)."""

    def __init__(self, threads: int | str | None, device: torch.device, world: int, local_world: int, chars: int):
        """`threads`: --threads (a number, or None / "auto"); `world`, `local_world`: processes
        of the run and of this machine; `chars`: characters of one training step."""
        self.policy = self._policy(threads, device, world, local_world, chars)
        self.threads = self.policy.threads if self.policy else threads
        torch.set_num_threads(self.threads)

    @staticmethod
    def _policy(threads, device: torch.device, world: int, local_world: int, chars: int) -> ThreadPolicy | None:
        """--threads N pins the count (no policy); auto follows the free cores of this process'
        share of the machine, probing other counts while training on a CPU in a single process
        (the processes of a distributed run, whose steps wait for each other, follow the load
        alone)."""
        if threads not in (None, "auto"):
            return None
        return ThreadPolicy(
            max(1, cores_here() // local_world),
            METER,
            probe=device.type == "cpu" and world == 1,
            siblings=local_world - 1,
            chars_per_step=chars,
        )

    @property
    def settled(self) -> int:
        """The count the run trains with (during a probe, the count it started from, not the
        candidate it measures)."""
        return self.policy.settled if self.policy else self.threads

    @contextlib.contextmanager
    def between_steps(self) -> Iterator[None]:
        """Work between training steps (an evaluation, a live sample) at the settled count."""
        count = self.settled
        if count == self.threads:
            yield
            return
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(self.threads)
            self.policy.interrupted()

    def start_note(self, step: int) -> dict[str, Any] | None:
        """The note a run starts with under --threads auto (None when they are pinned)."""
        if self.policy is None:
            return None
        p = self.policy
        return {
            "event": "threads",
            "step": step,
            "threads": self.threads,
            "reason": "start",
            "cores": p.cores,
            "others": p.others,
        }

    def step_done(self, seconds: float, step: int) -> dict[str, Any] | None:
        """A step took `seconds`: follow the policy's choice; a note when it changed the count
        (or measured for the first time), else None."""
        if self.policy is None:
            return None
        threads = self.policy.step_done(seconds)
        if threads is not None and threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        decision = self.policy.take_decision()
        if decision is None or (decision.threads == decision.previous and decision.reason != "first measurement"):
            return None
        return {
            "event": "threads",
            "step": step,
            "threads": decision.threads,
            "previous": decision.previous,
            "reason": decision.reason,
            "others": decision.others,
            "chars_per_sec": decision.rates,
            "message": decision.describe(),
        }
