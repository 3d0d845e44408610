"""The two sampling engines, the choice between them, and loading a model for either.

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
from charrnn.store.export import load_npz
from charrnn.data.vocab import Vocab

ENGINES = ("auto", "torch", "numpy")


def is_export(path: Path) -> bool:
    return Path(path).suffix == ".npz"


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


def resolve_checkpoint(path: Path) -> Path:
    """The file a user means by `path`: itself, or for a run folder its best.pt (its last.pt
    when no validation ever wrote a best one)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            return path / name
    raise CharRNNError(f"{path}: a folder with no best.pt or last.pt in it; give a run folder (checkpoints/NAME) or a .pt file")


def newest(root: str | Path = "checkpoints") -> Path:
    """For `sample` without -c: the most recently written best.pt anywhere under `root`, or
    when there is none (no run has evaluated yet), the most recent last.pt."""
    root = Path(root)
    for filename in ("best.pt", "last.pt"):
        found = [p for p in root.rglob(filename) if p.is_file()] if root.is_dir() else []
        if found:
            return max(found, key=lambda p: p.stat().st_mtime_ns)
    raise CharRNNError(f"no checkpoint under {root}/: train a model first (charrnn train FILE) or pass --checkpoint")


def load_model(path: Path) -> tuple[dict[str, np.ndarray], Vocab, ModelConfig]:
    """The weights (NumPy arrays, torch's names), vocabulary and model config of a .pt
    checkpoint or an .npz export."""
    path = Path(path)
    if is_export(path):
        return load_npz(path)
    try:
        from charrnn.store import checkpoint
    except ImportError as exc:
        raise CharRNNError(
            f"{path}: reading a .pt checkpoint needs torch, which cannot be imported here ({exc}); "
            f"where torch is installed, run `charrnn export {path}` and sample from the .npz"
        ) from None
    ckpt = checkpoint.load(path)  # checked: weights, vocabulary and model agree
    weights = {name: tensor.detach().float().cpu().numpy() for name, tensor in ckpt.model.items()}
    return weights, ckpt.info.vocab, ckpt.info.model


def numpy_stepper(weights: dict[str, np.ndarray], cfg: ModelConfig):
    from charrnn.sample.numpy_engine import FusedStepper

    return FusedStepper(weights, cfg.cell, cfg.layers, cfg.hidden)


def torch_stepper(weights: dict[str, np.ndarray], cfg: ModelConfig, device: str = "cpu"):
    try:
        import torch
    except ImportError as exc:
        raise CharRNNError(f"--engine torch needs torch, which cannot be imported here ({exc}); use --engine numpy") from None

    from charrnn.machine.device import pick_device
    from charrnn.model import CharRNN
    from charrnn.sample.torch_engine import TorchStepper

    torch_device = pick_device(device)
    model = CharRNN(cfg)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()})
    return TorchStepper(model.to(torch_device).eval(), torch_device)


def open_stepper(path: Path, engine: str = "auto", device: str = "cpu"):
    """(stepper, vocabulary, the engine chosen) for sampling from a .pt, a run folder or an .npz."""
    path = resolve_checkpoint(path)
    chosen = choose_engine(engine, device, path)
    weights, vocab, cfg = load_model(path)
    stepper = numpy_stepper(weights, cfg) if chosen == "numpy" else torch_stepper(weights, cfg, device)
    return stepper, vocab, chosen
