"""One training step: truncated BPTT on the next chunk (forward, loss, backward, clipping,
AdamW), a non-finite step skipped on every process and too many in a row ended, and
torch.compile with its fallback to eager mode."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from charrnn.data.batches import get_chunk
from charrnn.model import detach_hidden

MAX_BAD_STEPS = 10  # consecutive non-finite losses/gradients before giving up


class Step:
    """A part of `Trainer` (see trainer.py), split out by idea; it uses the trainer's attributes."""

    def _compiled_forward(self, x, hidden):
        """torch.compile'd forward; if compiling fails (no compiler, unsupported device), warn
        once and go on in eager mode."""
        try:
            if not hasattr(self, "_compiled"):
                self._compiled = torch.compile(self.train_model)
            return self._compiled(x, hidden)
        except Exception as exc:  # compilation errors come in many types
            self._warn(
                f"--compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); training without it"
            )
            self._forward = self.train_model
            return self.train_model(x, hidden)

    def train_step(self) -> tuple[float, float]:
        """One truncated-BPTT step on the next chunk; returns (loss in nats, learning rate).

        A step whose loss or gradient is not finite changes no weight: it is counted and
        skipped, and only MAX_BAD_STEPS of them in a row end training.
        """
        cfg, p = self.cfg, self.progress
        if p.chunk == 0 or not cfg.carry_state:
            self.hidden = None  # a new epoch (or, without carried state, every chunk) starts from zero
        lr = self.lr_at(p.step, self.fraction_done())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = (t.to(self.device, non_blocking=True) for t in get_chunk(self.streams, p.chunk, cfg.seq_len))
        loss_value, grad_norm, hidden = self.gradients(x, y)
        if self._all_finite(math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self.optimizer.step()
            self.hidden = detach_hidden(hidden)
            p.loss_sum += loss_value
            p.loss_count += 1
            self._bad_in_a_row = 0
        else:
            p.skipped_steps += 1
            self._bad_in_a_row += 1
            self.hidden = None  # the carried state may be poisoned too
            self._warn(f"step {p.step + 1}: non-finite loss or gradient, update skipped")
            if self._bad_in_a_row >= MAX_BAD_STEPS:
                raise self._error(
                    f"training diverged: {MAX_BAD_STEPS} steps in a row had a non-finite loss "
                    f"or gradient; the last good checkpoint is in {self.run_dir} "
                    f"(try a lower --lr or --grad-clip)",
                    exit_code=1,
                )
        p.step += 1
        p.chunk += 1
        p.chars_seen += x.numel() * self.dist.world
        if p.chunk >= self.chunks_per_epoch:
            p.chunk, p.epoch = 0, p.epoch + 1
        return loss_value, lr

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, Any]:
        """Forward, loss, backward and clipping on one chunk (x, y: (B, T) ids): sets every
        parameter's .grad and returns (loss in nats, gradient norm before clipping, new hidden
        state). `charrnn train --engine numpy` replaces this method, and only this one. Under
        DDP, backward() also averages the gradients over the processes."""
        with self.autocast():
            logits, hidden = self._forward(x, self.hidden)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        return loss.item(), grad_norm.item(), hidden
