"""The sampling engines and the choice between them (a model file is opened by
store/model_file.py).

    packed  `PackedStepper` (packed_engine.py): the fused NumPy step with its batched products
            run by oneDNN (through torch) on weights packed once; CPU. The fastest for a batch
            of streams, and a stream's text does not depend on the other streams beside it.
    numpy   `FusedStepper` (numpy_engine.py): NumPy only, on the CPU. No torch runs in its
            generation loop; from an .npz export or a model folder (`charrnn export`) none is
            even imported.
    torch   `TorchStepper`: the CharRNN through torch, on any device (CPU, CUDA, MPS).
    auto    packed on the CPU where torch has oneDNN (numpy where it has not, and for an export),
            torch on a GPU. At batch 1 packed and numpy run the same NumPy matrix-vector product
            (several times faster than torch's per-call overhead: scripts/sampling_speed.py).

The engines give the same text for the same seed up to float32 rounding: their logits agree to
float32 precision and the draw itself is engine-independent NumPy (charrnn/sample/generate.py).

Importing this module imports no torch; only the torch and packed engines and .pt checkpoints need it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.sample.packed_engine import packed_available
from charrnn.store.model_file import ModelFile, build_model, is_export, open_model_file, resolve_checkpoint
from charrnn.store.run_folder import newest_model

ENGINES = ("auto", "packed", "numpy", "torch")


def choose_engine(engine: str, device: str, path: Path) -> str:
    """The engine that will run: `engine` itself, or for auto the faster one for the device."""
    if engine not in ENGINES:
        raise CharRNNError(f"--engine {engine!r} is not one of: {', '.join(ENGINES)}")
    if engine in ("numpy", "packed") and device not in ("auto", "cpu"):
        raise CharRNNError(f"--engine {engine} runs on the CPU only: drop --device {device}, or use --engine torch")
    if engine == "packed" and not packed_available():
        raise CharRNNError(
            "--engine packed needs torch with oneDNN (torch's CPU wheels have it), which is not here; "
            "use --engine numpy"
        )
    if engine != "auto":
        return engine
    if device != "cpu":  # (a GPU asked for runs any model file, exports included)
        try:
            from charrnn.machine.device import pick_device
        except ImportError:  # no torch, so no GPU either
            return "numpy"
        if pick_device(device).type != "cpu":
            return "torch"
    if is_export(path):
        return "numpy"
    return "packed" if packed_available() else "numpy"


def newest(root: str | Path = "checkpoints") -> Path:
    """For `sample` and `serve` without -c: the newest best.pt under `root`, else the newest
    last.pt (the run folder's rule, store/run_folder.newest_model)."""
    return newest_model(root)


def numpy_stepper(weights: dict[str, np.ndarray], cfg: ModelConfig):
    """The fused NumPy engine, from float32 weights (torch's names) and the model config."""
    from charrnn.sample.numpy_engine import FusedStepper

    return FusedStepper(weights, cfg.cell, cfg.layers, cfg.hidden)


def packed_stepper(weights: dict[str, np.ndarray], cfg: ModelConfig):
    """The packed engine (packed_engine.py), from float32 weights (torch's names) and the config."""
    from charrnn.sample.packed_engine import PackedStepper

    return PackedStepper(weights, cfg.cell, cfg.layers, cfg.hidden)


def cpu_stepper(weights: dict[str, np.ndarray], cfg: ModelConfig):
    """The fastest CPU engine here: packed where torch has oneDNN, else the NumPy step."""
    return packed_stepper(weights, cfg) if packed_available() else numpy_stepper(weights, cfg)


def torch_stepper(record: ModelFile, device: str = "cpu"):
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise CharRNNError(
            f"--engine torch needs torch, which cannot be imported here ({exc}); use --engine numpy"
        ) from None

    from charrnn.machine.device import pick_device
    from charrnn.sample.torch_engine import TorchStepper

    torch_device = pick_device(device)
    return TorchStepper(build_model(record, torch_device), torch_device)


def open_stepper(path: Path, engine: str = "auto", device: str = "cpu"):
    """(stepper, vocabulary, the engine chosen) for sampling from a .pt, a run folder, an .npz or
    a model folder."""
    path = resolve_checkpoint(path)
    chosen = choose_engine(engine, device, path)
    record = open_model_file(path)
    makers = {"numpy": numpy_stepper, "packed": packed_stepper}
    stepper = makers[chosen](record.weights, record.model) if chosen in makers else torch_stepper(record, device)
    return stepper, record.vocab, chosen
