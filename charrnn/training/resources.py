"""What training needs of the device: memory for a model of a given shape (checked before a run
starts), the precision its forward pass can run in, and the loss scale that fp16 needs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from charrnn.cells import CELLS, parameter_count
from charrnn.config import ModelConfig
from charrnn.machine.device import memory_bytes
from charrnn.model import CharRNN


def training_bytes(model_cfg: ModelConfig, batch_size: int, seq_len: int) -> tuple[int, int]:
    """(parameters, bytes) to train a model of this shape, at least: 16 bytes a parameter (fp32
    weights, gradients and AdamW's two moments) and the activations that one chunk of
    `batch_size` x `seq_len` characters keeps for back-propagation (the embedding, each layer's
    gates and states, the logits and their gradient). Computed from the shapes, allocating
    nothing."""
    params = parameter_count(model_cfg)
    layer = (CELLS[model_cfg.cell].gates + 2) * model_cfg.hidden
    per_char = model_cfg.embed + model_cfg.layers * layer + 3 * model_cfg.vocab_size
    return params, 4 * (4 * params + batch_size * seq_len * per_char)


def memory_problem(
    model_cfg: ModelConfig, batch_size: int, seq_len: int, device: torch.device, processes: int = 1
) -> str | None:
    """Why a model cannot be trained on `device` (shared by `processes` processes when it is the
    machine's memory), or None when it may fit."""
    params, need = training_bytes(model_cfg, batch_size, seq_len)
    have = memory_bytes(device)
    share = processes if device.type != "cuda" else 1
    if have is None or need * share <= have:
        return None
    where = "the GPU" if device.type == "cuda" else "this machine"
    each = f" in each of {share} processes" if share > 1 else ""
    return (
        f"the model is too large to train here: {params:,} parameters need about {need * share / 1e9:,.1f} GB "
        f"(weights, gradients, optimizer state and activations{each}), "
        f"and {where} has {have / 1e9:,.1f} GB; choose a smaller --hidden, --layers, --embed or --batch-size"
    )


def autocast_for(precision: str, model: CharRNN, device: torch.device, warn: Callable[[str], None]):
    """A context-manager factory that runs the forward pass in `precision` (autocast), or in
    fp32 with a warning where this device cannot (fp16 on a CPU; bf16 RNN kernels on CPUs
    without bf16 support, found by a one-off probe that touches no state or RNG). "auto" is
    decided when a run is planned (plan.size_model); a Trainer built with it directly trains in fp32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    if device.type == "cpu" and dtype is torch.float16:
        warn("--precision fp16 is not supported on the CPU; training in fp32 (try bf16)")
        return contextlib.nullcontext
    factory = lambda: torch.autocast(device_type=device.type, dtype=dtype)  # noqa: E731
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), factory():
            model(torch.zeros(1, 2, dtype=torch.long, device=device))
    except RuntimeError as exc:
        warn(f"--precision {precision} is not supported here ({str(exc).splitlines()[0][:120]}); training in fp32")
        return contextlib.nullcontext
    finally:
        model.train(was_training)
    return factory


def scales_gradients(precision: str, device: torch.device, autocast) -> bool:
    """Whether a step needs a loss scale: fp16 autocast on CUDA (fp16's smallest normal number is
    6e-5, so small gradients would underflow to zero; bf16 has fp32's range and needs none).
    `autocast`: what `autocast_for` gave (contextlib.nullcontext where it fell back to fp32)."""
    return precision == "fp16" and device.type == "cuda" and autocast is not contextlib.nullcontext


def grad_scaler_for(precision: str, device: torch.device, autocast) -> torch.amp.GradScaler:
    """The step's GradScaler: enabled where `scales_gradients`, else one that changes nothing
    (scale() returns the loss, unscale_() and update() do nothing, step() is optimizer.step()),
    so that a step has one code path."""
    return torch.amp.GradScaler(device.type, enabled=scales_gradients(precision, device, autocast))


class CompiledForward:
    """--compile: the torch.compile'd forward of `module`; where compiling fails (no compiler, an
    unsupported device, a recompilation later on), warn once and go on in eager mode from the
    same state."""

    def __init__(self, module: torch.nn.Module, warn: Callable[[str], None]):
        self.module, self.warn, self.compiled, self.failed = module, warn, None, False

    def __call__(self, x: torch.Tensor, hidden):
        if self.failed:
            return self.module(x, hidden)
        try:
            if self.compiled is None:
                self.compiled = torch.compile(self.module)
            return self.compiled(x, hidden)
        except Exception as exc:  # compilation errors come in many types
            self.warn(f"--compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); training without it")
            self.failed = True
            return self.module(x, hidden)
