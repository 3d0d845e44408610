"""Averaged weights (`train --average ema|swa`): evaluate, keep and sample an average of the
weights the run went through, not the last of them.

The last weights of a run are one point of a noisy walk; an average of the recent ones sits
nearer the middle of where the walk has been, and usually predicts held-out text better, for
the cost of one copy of the weights (Polyak averaging; AWD-LSTM's averaged SGD; SWA, Izmailov
et al. 2018):

    ema  an exponential moving average, updated after every step:
         avg <- avg + (1 - d) (w - avg), with d = min(--ema-decay, (1 + n) / (10 + n)) at the n-th
         step, so that the first steps, whose weights are far from the end, fade quickly: until
         about 9,000 steps the average spans roughly the last ninth of the run, after that about
         1 / (1 - d) steps.
    swa  the plain mean of the weights after every step from --swa-start (a fraction of the run)
         on; before that, the weights themselves. Once begun it goes on to the end, also when a
         resume with a higher limit makes the run's fraction smaller again.

The optimizer trains the weights as always; the average follows them. Evaluations, best.pt
and the live samples use the average (`swapped_in`); last.pt keeps the trained weights (to
go on training from) and the average beside them, so that a resumed run goes on with both,
bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from charrnn.config import AVERAGES as KINDS


class WeightAverage:
    def __init__(self, kind: str, model: torch.nn.Module, ema_decay: float = 0.999, swa_start: float = 0.5):
        if kind not in KINDS:
            raise ValueError(f"average {kind!r} is not one of {KINDS}")
        self.kind, self.ema_decay, self.swa_start = kind, ema_decay, swa_start
        self.params = list(model.parameters())  # (tied weights: once)
        # every name of every weight, as the state dict has them (tied weights: both names)
        self.index = {
            name: next(i for i, q in enumerate(self.params) if q is p)
            for name, p in model.named_parameters(remove_duplicate=False)
        }
        self.weights: list[torch.Tensor] | None = None  # the average, once there is one
        self.count = 0  # the steps averaged

    @property
    def active(self) -> bool:
        """Whether there is an average to use (none asked for, or swa before its start: none)."""
        return self.count > 0

    @torch.no_grad()
    def update(self, fraction_done: float) -> None:
        """After an optimizer step; `fraction_done`: how far the run is (0 to 1), for swa's start."""
        if self.kind == "none" or (self.kind == "swa" and self.count == 0 and fraction_done < self.swa_start):
            return  # (once begun, swa goes on every step: a resume with a higher limit moves the fraction back)
        self.count += 1
        if self.count == 1:
            self.weights = [p.detach().clone() for p in self.params]
        elif self.kind == "ema":
            keep = min(self.ema_decay, (1 + self.count) / (10 + self.count))
            torch._foreach_lerp_(self.weights, self.params, 1.0 - keep)
        else:
            torch._foreach_lerp_(self.weights, self.params, 1.0 / self.count)

    @contextmanager
    def swapped_in(self):
        """The model holds the average inside the block, and its trained weights again after it
        (exactly: they are copied aside and back)."""
        if not self.active:
            yield
            return
        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.weights):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(self.params, trained):
                    p.copy_(t)

    def state(self) -> dict[str, torch.Tensor] | None:
        """The average by parameter name, on the CPU (for last.pt); None when there is none."""
        if not self.active:
            return None
        return {name: self.weights[i].detach().cpu().clone() for name, i in self.index.items()}

    def load(self, weights: dict[str, torch.Tensor] | None, count: int) -> None:
        """The average a checkpoint kept (None: none yet), and the steps it averaged."""
        self.count = count if weights is not None else 0
        if weights is None:
            self.weights = None
            return
        saved: dict[int, torch.Tensor] = {}
        for name, i in self.index.items():  # (a tied weight: its first name)
            saved.setdefault(i, weights[name])
        self.weights = [saved[i].to(p.device, p.dtype).clone() for i, p in enumerate(self.params)]
