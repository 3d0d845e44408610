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
load rather than loading wrong weights. Nothing is unpacked before it is known to be what the
model needs: the zip's directory and each member's .npy header (names, dtypes, shapes, sizes)
are checked against the metadata's model config first, so a member that declares 149 GiB, or
holds 1 GiB, is refused at the cost of reading its header. This module imports torch only to
read a .pt checkpoint.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from charrnn import __version__
from charrnn.config import ModelConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.machine.memory import physical_memory
from charrnn.store.files import atomic_write, file_kind
from charrnn.store.metadata import Invalid, check_vocab, read_model, read_vocab
from charrnn.store.weights import check_finite, check_shapes

FORMAT = "charrnn-npz"
FORMAT_VERSION = 1


def export_npz(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Write the weights and vocabulary of a .pt checkpoint to `out_path` (.npz), atomically."""
    from charrnn.store import checkpoint  # torch: only to read the .pt

    checkpoint_path, out_path = Path(checkpoint_path), Path(out_path)
    if out_path.suffix != ".npz":
        raise CharRNNError(f"{out_path}: an npz export's name must end in .npz")
    ckpt = checkpoint.load(checkpoint_path)  # checked: weights, vocabulary and model agree
    info = ckpt.info
    from charrnn.model import numpy_weights

    weights = numpy_weights(ckpt.model)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "charrnn_version": __version__,
        "vocab": info.vocab.to_json(),
        "model": asdict(info.model),
        "source": {
            "checkpoint": str(checkpoint_path),
            "step": info.progress.step,
            "best_loss": info.progress.best_loss,
        },
    }
    save_npz(weights, meta, out_path)
    return out_path


def save_npz(weights: dict[str, np.ndarray], meta: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written export."""
    with atomic_write(path, "the export") as fh:
        np.savez(
            fh, meta=np.array(json.dumps(meta)), **{k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}
        )


MAX_META_BYTES = 64 << 20  # the metadata: a JSON string (a vocabulary of all of Unicode fits)


class Header(NamedTuple):
    """What a member's .npy header declares, read without its data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int  # where the array's bytes start within the member

    @property
    def size(self) -> int:
        """The member's length in bytes, as its header says."""
        return self.data_offset + math.prod(self.shape) * self.dtype.itemsize


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], Vocab, ModelConfig]:
    """Read an export (no torch, no pickle): its weights, vocabulary and model config. Its
    metadata and the headers of its arrays are checked before any weight is read."""
    path = Path(path)
    if not path.is_file():
        raise CharRNNError(f"{path}: no such export" if not path.exists() else f"{path}: not a file")
    kind = file_kind(path)
    if kind != "zip":
        why = {
            "empty": "the file is empty",
            "npy": "a single .npy array",
            "pickle": "a pickle, which charrnn never loads (nothing run)",
        }
        raise CharRNNError(f"{path}: not a charrnn .npz export: {why.get(kind, 'not a zip archive')}")
    try:
        with zipfile.ZipFile(path) as zf:
            members = _members(zf, path)
            cfg, vocab = _read_meta(zf, members.pop("meta", None), path)
            _check_headers({name: _header(zf, info) for name, info in members.items()}, members, cfg, path)
            arrays = {name: _read_array(zf, info) for name, info in members.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CharRNNError(
            f"{path}: not a readable .npz export ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})"
        ) from None
    check_finite(arrays, str(path))
    return arrays, vocab, cfg


def _members(zf: zipfile.ZipFile, path: Path) -> dict[str, zipfile.ZipInfo]:
    """The zip's members by array name ('meta', 'embed.weight', ...): .npy files, each once."""
    names = Counter(info.filename for info in zf.infolist())
    for name, count in names.items():
        if count > 1 or not name.endswith(".npy"):
            raise CharRNNError(
                f"{path}: not a charrnn export: {'a second' if count > 1 else 'an unexpected'} member {name!r}"
            )
    return {info.filename[: -len(".npy")]: info for info in zf.infolist()}


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Header:
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"{info.filename}: .npy format version {version} is not one numpy.savez writes")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
        return Header(tuple(shape), dtype, fh.tell())


def _read_array(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One member's array, read to its end (where the zip checks its CRC-32)."""
    with zf.open(info) as fh:
        array = np.lib.format.read_array(fh, allow_pickle=False)
        if fh.read(1):
            raise ValueError(f"{info.filename}: data after its array")
    return array


def _read_meta(zf: zipfile.ZipFile, info: zipfile.ZipInfo | None, path: Path) -> tuple[ModelConfig, Vocab]:
    """The model config and vocabulary of the export's metadata (a JSON string), checked."""
    not_ours = CharRNNError(f"{path}: not a charrnn export (no valid 'meta' entry)")
    header = _header(zf, info) if info is not None else None
    if header is not None and header.dtype.hasobject:
        raise CharRNNError(
            f"{path}: it holds pickled Python objects, which charrnn never loads "
            "(refused: allow_pickle=False, nothing run)"
        )
    if (
        header is None
        or header.dtype.kind != "U"
        or header.shape != ()
        or not info.file_size == header.size <= MAX_META_BYTES
    ):
        raise not_ours
    try:
        meta = json.loads(str(_read_array(zf, info)))
    except ValueError:
        raise not_ours from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise not_ours
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
        raise CharRNNError(
            f"{path}: export format version {version} is newer than this charrnn reads ({FORMAT_VERSION}); "
            "upgrade charrnn"
        )
    try:
        cfg, vocab = read_model(meta.get("model"), "meta.model"), read_vocab(meta.get("vocab"), "meta.vocab")
        check_vocab(vocab, cfg)
    except Invalid as exc:
        raise CharRNNError(f"{path}: damaged export: {exc}") from None
    return cfg, vocab


def _check_headers(
    headers: dict[str, Header], members: dict[str, zipfile.ZipInfo], cfg: ModelConfig, path: Path
) -> None:
    """Before reading a byte of them: the weights `cfg` needs, by name and shape, floating point,
    each member as long as its header says, and all of them together within the memory."""
    check_shapes({name: h.shape for name, h in headers.items()}, cfg, str(path))
    for name, h in headers.items():
        if h.dtype.kind != "f":
            raise CharRNNError(f"{path}: damaged model: {name} has dtype {h.dtype}, expected floating point")
        if members[name].file_size != h.size:
            raise CharRNNError(
                f"{path}: damaged export: {name} holds {members[name].file_size:,} bytes, its header says {h.size:,}"
            )
    needed, memory = sum(h.size for h in headers.values()), physical_memory()
    if memory is not None and needed > memory:
        raise CharRNNError(
            f"{path}: its model needs {needed / 2**30:,.1f} GiB, more than this machine's "
            f"{memory / 2**30:,.1f} GiB of memory"
        )
