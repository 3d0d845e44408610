"""Checkpoints: one versioned, self-contained format; atomic saves; loads that run no code.

A checkpoint is a `torch.save` of a dict holding only tensors, numbers, strings, lists and dicts:
the model weights, the optimizer state, RNG states, the carried hidden state, and a JSON string
`meta` (format version, vocabulary, model and training config, step, data position, losses).
It is read back with `torch.load(weights_only=True)`, whose unpickler refuses every class and
function that is not a plain container or tensor, so a crafted file cannot execute code.

A save writes a temporary file in the same folder, fsyncs it and renames it over the old file,
so a crash at any moment leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charrnn.errors import CharRNNError
from charrnn.files import atomic_write, file_kind

FORMAT = "charrnn-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    meta: dict[str, Any]  # JSON-able: format, vocab, model, config, progress
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] | None = None
    hidden: list[torch.Tensor] | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "meta": json.dumps(self.meta),
            "model": self.model,
            "optimizer": self.optimizer,
            "rng": self.rng,
            "hidden": self.hidden or [],
        }
        data["sha256"] = digest(data)
        return data


def digest(data: Any) -> str:
    """A SHA-256 over everything in a checkpoint dict (but the digest itself), in a fixed order.

    The zip container torch writes does not check its contents when read, so a flipped bit in
    the weights would otherwise load silently.
    """
    h = hashlib.sha256()

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            h.update(f"T{value.dtype}{tuple(value.shape)}".encode())
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if key != "sha256":
                    h.update(f"K{key!r}".encode())
                    walk(value[key])
        elif isinstance(value, (list, tuple)):
            h.update(f"L{len(value)}".encode())
            for item in value:
                walk(item)
        else:
            h.update(f"V{value!r}".encode())

    walk(data)
    return h.hexdigest()


def save(ckpt: Checkpoint, path: str | Path) -> None:
    """Write atomically (files.atomic_write): the previous file stays whole if anything fails."""
    path = Path(path)
    with atomic_write(path, "checkpoint", f". The previous {path.name} is untouched" if path.exists() else "") as fh:
        torch.save(ckpt.to_dict(), fh)


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete temporary files left by a save that was killed before its rename."""
    for tmp in Path(folder).glob(".*.pt.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint safely; every way a file can be wrong is a CharRNNError."""
    path = Path(path)
    if not path.exists():
        raise CharRNNError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise CharRNNError(f"{path}: is a directory; give a .pt file (e.g. {path}/best.pt)")
    if path.suffix == ".npz":
        raise CharRNNError(f"{path}: an .npz export holds only weights and vocabulary for `charrnn sample`; give the .pt checkpoint it came from")
    kind = file_kind(path)
    if kind in ("empty", "npy", "other"):
        why = {"empty": "the file is empty", "npy": "a NumPy array file"}.get(kind, "not a file torch.save writes")
        raise CharRNNError(f"{path}: not a readable charrnn checkpoint: {why}")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before refusing them
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage, or a pickle asking for forbidden globals
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it asks to load Python objects, which charrnn never does (refused, nothing run)"
        elif kind == "zip" and not zipfile.is_zipfile(path):
            reason = "truncated or damaged (its zip archive is incomplete)"
        raise CharRNNError(f"{path}: not a readable charrnn checkpoint: {reason[:300]}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CharRNNError(f"{path}: not a charrnn checkpoint")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CharRNNError(
            f"{path}: checkpoint format version {version} is newer than this charrnn reads "
            f"({FORMAT_VERSION}); upgrade charrnn"
        )
    if data.get("sha256") != digest(data):
        raise CharRNNError(f"{path}: damaged charrnn checkpoint (its contents do not match their checksum)")
    try:
        meta = json.loads(data["meta"])
        model = data["model"]
        assert isinstance(meta, dict) and isinstance(model, dict)
        assert all(isinstance(v, torch.Tensor) for v in model.values())
    except Exception:
        raise CharRNNError(f"{path}: damaged charrnn checkpoint (bad metadata)") from None
    return Checkpoint(
        meta=meta,
        model=model,
        optimizer=data.get("optimizer"),
        rng=data.get("rng"),
        hidden=data.get("hidden") or [],
        format_version=version,
    )

