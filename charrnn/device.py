"""Choosing the device and the number of CPU threads."""

from __future__ import annotations

import os

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


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None, share: int = 1) -> int:
    """Use `threads` CPU threads, or this process' share of the cores it may run on (when
    `share` processes train side by side on one machine)."""
    if threads is None:
        threads = max(1, available_cores() // share)
    torch.set_num_threads(threads)
    return threads


def memory_bytes(device: torch.device) -> int | None:
    """All the memory `device` has: a CUDA GPU's own, else the machine's RAM (which Apple's MPS
    shares); None where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # (no sysconf on Windows)
        return None
