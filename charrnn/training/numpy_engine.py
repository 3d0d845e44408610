"""`charrnn train --engine numpy`: the same training run, with every gradient computed by the
hand-written back-propagation through time of charrnn/numpy_ref.py instead of torch's autograd.

Only the gradient changes hands. For each chunk, `NumpyTrainer.gradients` runs
`numpy_ref.forward` -> `cross_entropy` -> `backward` -> `clip_grad_norm` on NumPy views of the
model's own weights (no copies) and hands the clipped gradients to the parameters' `.grad`.
Everything else is the torch engine's `Trainer`: the initial weights (the same seed gives the
same ones), AdamW, the learning-rate schedule, the carried hidden state, evaluation and the
checkpoints (so `sample`, `info` and `--resume` work as usual). Two runs with the same options
and seed therefore differ only in who computed the gradient: their metrics.jsonl can be read
side by side, and they drift apart only through float32 rounding.

The numpy engine runs on the CPU, in fp32, without dropout or torch.compile; it loops over time
steps in Python, so it is slow: meant for small models, to watch the equations learn.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from charrnn import numpy_ref
from charrnn.config import TrainConfig
from charrnn.errors import CharRNNError
from charrnn.model import hidden_from_list, hidden_to_list
from charrnn.training.trainer import Trainer


def check_supported(cfg: TrainConfig) -> None:
    """A CharRNNError listing every option the numpy engine cannot honour."""
    problems = []
    if cfg.device not in ("auto", "cpu"):
        problems.append(f"--device {cfg.device} (it runs on the CPU only)")
    if cfg.dropout > 0:
        problems.append(f"--dropout {cfg.dropout} (numpy_ref has no dropout; use --dropout 0)")
    if cfg.weight_drop > 0:
        problems.append(f"--weight-drop {cfg.weight_drop} (numpy_ref has no weight drop; use --weight-drop 0)")
    if cfg.tie_weights:
        problems.append("--tie-weights (numpy_ref's gradients are for separate embedding and read-out matrices)")
    if cfg.precision not in ("fp32", "auto"):
        problems.append(f"--precision {cfg.precision} (it computes in fp32)")
    if cfg.compile:
        problems.append("--compile (there is no torch graph to compile)")
    if problems:
        raise CharRNNError("--engine numpy does not support " + "; ".join(problems) + "; or use --engine torch")


def check_one_process(world: int) -> None:
    """The numpy engine's hand-written gradients are not averaged across processes."""
    if world > 1:
        raise CharRNNError(
            "--engine numpy trains in one process (its hand-written gradients are not averaged across "
            "processes): leave out --nproc, or use --engine torch"
        )


class NumpyTrainer(Trainer):
    """A Trainer whose gradients come from numpy_ref's BPTT; always on the CPU."""

    def __init__(self, cfg: TrainConfig, *args, **kwargs):
        check_supported(cfg)
        if kwargs.get("dist") is not None:
            check_one_process(kwargs["dist"].world)
        super().__init__(dataclasses.replace(cfg, device="cpu"), *args, **kwargs)

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, Any]:
        params = {name: p.detach().numpy() for name, p in self.model.named_parameters()}  # views
        state = tuple(h.numpy() for h in hidden_to_list(self.hidden)) or None  # carried (h,) or (h, c)
        logits, state, tape = numpy_ref.forward(params, self.cfg.cell, x.numpy(), state)
        loss, d_logits = numpy_ref.cross_entropy(logits, y.numpy())
        grads, _ = numpy_ref.backward(params, tape, d_logits)
        grad_norm = numpy_ref.clip_grad_norm(grads, self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf)
        for name, p in self.model.named_parameters():
            p.grad = torch.from_numpy(grads[name])
        hidden = hidden_from_list([torch.from_numpy(part) for part in state], self.cfg.cell, self.device)
        return loss, grad_norm, hidden
