"""Choosing the device (the number of CPU threads is charrnn/threads.py's)."""

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
