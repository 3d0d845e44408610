"""Choosing the device (the number of CPU threads is charrnn/machine/threads.py's)."""

from __future__ import annotations

import torch

from charrnn.errors import CharRNNError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' takes CUDA if present, else Apple's MPS, else the CPU. Asking for a missing one fails."""
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise CharRNNError("--device cuda: no CUDA GPU is available here (use --device auto or cpu)")
    if name == "mps" and not mps:
        raise CharRNNError("--device mps: Apple MPS is not available here (use --device auto or cpu)")
    return torch.device(name)


def memory_bytes(device: torch.device) -> int | None:
    """All the memory `device` has: a CUDA GPU's own, else the machine's RAM (which Apple's MPS
    shares); None where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    from charrnn.machine.memory import physical_memory

    return physical_memory()
