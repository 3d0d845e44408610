"""The two sampling engines and the choice between them (a model file is opened by
store/model_file.py).

    torch   `TorchStepper`: the CharRNN through torch, on any device (CPU, CUDA, MPS).
    numpy   `FusedStepper` (charrnn/sample/numpy_engine.py): NumPy only, on the CPU. No torch runs in its
            generation loop; from an .npz export (`charrnn export`) none is even imported.
    auto    numpy on the CPU, torch on a GPU. On the CPU the numpy engine measured several
            times faster at batch 1 (scripts/sampling_speed.py): a step of torch's costs more
            in per-call overhead than in arithmetic.

The two give the same text for the same seed: their logits agree to float32 precision and the
draw itself is engine-independent NumPy (charrnn/sample/generate.py).

Importing this module imports no torch; only the torch engine and .pt checkpoints need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.store.model_file import ModelFile, build_model, is_export, open_model_file, resolve_checkpoint

ENGINES = ("auto", "torch", "numpy")


def choose_engine(engine: str, device: str, path: Path) -> str:
    """The engine that will run: `engine` itself, or for auto the faster one for the device."""
    if engine not in ENGINES:
        raise CharRNNError(f"--engine {engine!r} is not one of: {', '.join(ENGINES)}")
    if engine == "numpy" and device not in ("auto", "cpu"):
        raise CharRNNError(f"--engine numpy runs on the CPU only: drop --device {device}, or use --engine torch")
    if engine != "auto":
        return engine
    if is_export(path) or device == "cpu":
        return "numpy"
    try:
        from charrnn.machine.device import pick_device
    except ImportError:  # no torch, so no GPU either
        return "numpy"
    return "numpy" if pick_device(device).type == "cpu" else "torch"


def newest(root: str | Path = "checkpoints") -> Path:
    """For `sample` without -c: the most recently written best.pt anywhere under `root`, or
    when there is none (no run has evaluated yet), the most recent last.pt."""
    root = Path(root)
    for filename in ("best.pt", "last.pt"):
        found = [p for p in root.rglob(filename) if p.is_file()] if root.is_dir() else []
        if found:
            return max(found, key=lambda p: p.stat().st_mtime_ns)
    raise CharRNNError(f"no checkpoint under {root}/: train a model first (charrnn train FILE) or pass --checkpoint")


def numpy_stepper(weights: dict[str, np.ndarray], cfg: ModelConfig):
    """The fused NumPy engine, from float32 weights (torch's names) and the model config."""
    from charrnn.sample.numpy_engine import FusedStepper

    return FusedStepper(weights, cfg.cell, cfg.layers, cfg.hidden)


def torch_stepper(record: ModelFile, device: str = "cpu"):
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise CharRNNError(f"--engine torch needs torch, which cannot be imported here ({exc}); use --engine numpy") from None

    from charrnn.machine.device import pick_device
    from charrnn.sample.torch_engine import TorchStepper

    torch_device = pick_device(device)
    return TorchStepper(build_model(record, torch_device), torch_device)


def open_stepper(path: Path, engine: str = "auto", device: str = "cpu"):
    """(stepper, vocabulary, the engine chosen) for sampling from a .pt, a run folder or an .npz."""
    path = resolve_checkpoint(path)
    chosen = choose_engine(engine, device, path)
    record = open_model_file(path)
    stepper = numpy_stepper(record.weights, record.model) if chosen == "numpy" else torch_stepper(record, device)
    return stepper, record.vocab, chosen
