"""Exports: a model's weights and vocabulary as a NumPy `.npz` that needs no torch to read.

`charrnn export CKPT --format npz` writes one; `charrnn sample --checkpoint MODEL.npz` samples
from it with the numpy engine, on a machine where torch is not even installed.

Layout of the .npz (a zip of .npy arrays; `np.load(path, allow_pickle=False)` reads it all):

    meta                 0-d unicode array: a JSON object with "format": "charrnn-npz",
                         "format_version", "charrnn_version", "vocab" ({"chars": ...}),
                         "model" (vocab_size, cell, layers, hidden, embed, dropout) and
                         "source" (the checkpoint, its step and best loss)
    embed.weight, rnn.weight_ih_l0, ..., head.bias
                         float32 arrays, named and shaped as in the checkpoint (torch's names)

Every member of the zip carries a CRC-32, checked as it is read, so a damaged file fails to
load rather than loading wrong weights. This module imports torch only to read a .pt checkpoint.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from charrnn import __version__
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.files import atomic_write, file_kind
from charrnn.metadata import Invalid, check_vocab, read_model, read_vocab
from charrnn.vocab import Vocab
from charrnn.weights import check_weights

FORMAT = "charrnn-npz"
FORMAT_VERSION = 1


def export_npz(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Write the weights and vocabulary of a .pt checkpoint to `out_path` (.npz), atomically."""
    from charrnn import checkpoint  # torch: only to read the .pt

    checkpoint_path, out_path = Path(checkpoint_path), Path(out_path)
    if out_path.suffix != ".npz":
        raise CharRNNError(f"{out_path}: an npz export's name must end in .npz")
    ckpt = checkpoint.load(checkpoint_path)  # checked: weights, vocabulary and model agree
    info = ckpt.info
    weights = {name: tensor.detach().float().cpu().numpy() for name, tensor in ckpt.model.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "charrnn_version": __version__,
        "vocab": info.vocab.to_json(),
        "model": asdict(info.model),
        "source": {"checkpoint": str(checkpoint_path), "step": info.progress.step, "best_loss": info.progress.best_loss},
    }
    save_npz(weights, meta, out_path)
    return out_path


def save_npz(weights: dict[str, np.ndarray], meta: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written export."""
    with atomic_write(path, "the export") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **{k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()})


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], Vocab, ModelConfig]:
    """Read an export (no torch, no pickle): its weights, vocabulary and model config."""
    path = Path(path)
    if not path.is_file():
        raise CharRNNError(f"{path}: no such export" if not path.exists() else f"{path}: not a file")
    kind = file_kind(path)
    if kind != "zip":
        why = {"empty": "the file is empty", "npy": "a single .npy array", "pickle": "a pickle, which charrnn never loads (nothing run)"}
        raise CharRNNError(f"{path}: not a charrnn .npz export: {why.get(kind, 'not a zip archive')}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if "allow_pickle" in str(exc):
            raise CharRNNError(f"{path}: it holds pickled Python objects, which charrnn never loads (refused: allow_pickle=False, nothing run)") from None
        raise CharRNNError(f"{path}: not a readable .npz export ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        assert meta["format"] == FORMAT
    except Exception:
        raise CharRNNError(f"{path}: not a charrnn export (no valid 'meta' entry)") from None
    if not isinstance(meta.get("format_version"), int) or meta["format_version"] > FORMAT_VERSION:
        raise CharRNNError(f"{path}: export format version {meta.get('format_version')} is newer than this charrnn reads ({FORMAT_VERSION}); upgrade charrnn")
    try:
        cfg, vocab = read_model(meta.get("model"), "meta.model"), read_vocab(meta.get("vocab"), "meta.vocab")
        check_vocab(vocab, cfg)
    except Invalid as exc:
        raise CharRNNError(f"{path}: damaged export: {exc}") from None
    check_weights(arrays, cfg, str(path))
    return arrays, vocab, cfg
