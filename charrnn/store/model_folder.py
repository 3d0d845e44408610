"""Model folders: a trained model as `model.safetensors` and `config.json`, the layout Hugging
Face-style tools read, so that any tool can open it and no code runs to load it.

    model.safetensors   the weights: float32 arrays under torch's parameter names and shapes
                        (embed.weight, rnn.weight_ih_l0, ..., head.bias), in the `safetensors`
                        format (an 8-byte header length, a JSON header of names, dtypes, shapes
                        and offsets, then the raw little-endian bytes): nothing in it is code
    config.json         the model's shape (cell, layers, hidden, embed, dropout, tie_weights,
                        vocab_size), its vocabulary as a list of characters (the character of
                        id i at index i), "format"/"format_version" keys, the SHA-256 of
                        model.safetensors, and what is known of the training ("training": step,
                        characters seen, best validation loss in nats and bits per character,
                        the corpus' name and fingerprint) or null

`charrnn export CKPT --format safetensors` writes one; `sample -c FOLDER`, `serve FOLDER` and
`charrnn.load(FOLDER)` read it. Reading needs numpy and `safetensors` only, never torch.

The files are untrusted: before a byte of the weights is unpacked, config.json is read into typed
records (metadata.py: unknown keys, wrong types and a vocabulary that does not match the model
are refused) and the safetensors header is checked against that model (names, shapes, dtypes,
offsets, its length, and the memory all of it needs), as the .npz reader does with its zip
directory. The SHA-256 in config.json then catches weights damaged on disk, and a pair of files
from two different saves (each file is replaced atomically, but not both at once).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from charrnn import __version__
from charrnn.cells import weight_shapes
from charrnn.config import ModelConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.machine.memory import physical_memory
from charrnn.store.files import atomic_write
from charrnn.store.metadata import Invalid, TrainingSummary, check_vocab, read_model, read_summary
from charrnn.store.run_folder import RunFolder
from charrnn.store.weights import check_finite, check_shapes

if TYPE_CHECKING:
    from charrnn.store.model_file import ModelFile

FORMAT = "charrnn-safetensors"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MODEL_TYPE = "charrnn"  # Hugging Face configs name their architecture so
MAX_CONFIG_BYTES = 64 << 20  # a vocabulary of all of Unicode, as a JSON list, is about 10 MiB
MAX_HEADER_BYTES = 16 << 20  # a few hundred bytes a weight; the safetensors library allows 100 MB
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "F64": np.dtype("<f8")}  # what numpy reads
# config.json's keys besides the model config's fields
KEYS = ("format", "format_version", "model_type", "charrnn_version", "vocab", "weights_sha256", "training")


def save_model_folder(record: ModelFile, folder: str | Path) -> Path:
    """Write `record` (weights, vocabulary, model config; its training summary when known) as a
    model folder: `folder`/model.safetensors and `folder`/config.json, each atomically. Returns
    the folder. A folder that holds something else (a run's checkpoints, another tool's
    config.json or weights, a file of that name) is refused, never overwritten."""
    folder = Path(folder)
    _check_target(folder)
    cfg, vocab = record.model, record.vocab
    check_shapes({name: tuple(np.shape(w)) for name, w in record.weights.items()}, cfg, str(record.path))
    try:
        check_vocab(vocab, cfg)
    except Invalid as exc:
        raise CharRNNError(f"{record.path}: {exc}") from None
    weights = {name: np.ascontiguousarray(record.weights[name], dtype="<f4") for name in weight_shapes(cfg)}
    check_finite(weights, str(record.path))
    import safetensors.numpy

    data = safetensors.numpy.save(weights, metadata={"format": "pt"})  # "pt": torch's names and layout
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": MODEL_TYPE,
        "charrnn_version": __version__,
        **asdict(cfg),
        "vocab": list(vocab.chars),
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "training": record.training.to_json() if record.training is not None else None,
    }
    text = json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False) + "\n"  # standard JSON only
    with atomic_write(folder / WEIGHTS, "the model's weights") as fh:
        fh.write(data)
    with atomic_write(folder / CONFIG, "the model's config") as fh:
        fh.write(text.encode("utf-8"))  # (a Vocab holds no lone surrogates)
    return folder


def _check_target(folder: Path) -> None:
    """Refuse to write a model folder where it would replace or mix with something else."""
    if folder.exists() and not folder.is_dir():
        raise CharRNNError(f"{folder}: a file, not a folder; give a folder to write {WEIGHTS} and {CONFIG} in")
    run_files = RunFolder(folder).existing()
    if run_files:
        raise CharRNNError(
            f"{folder}: a run folder (it holds {', '.join(run_files)}); write the model folder elsewhere "
            f"(e.g. {folder.with_name(folder.name + '-model')})"
        )
    config = folder / CONFIG
    if config.exists() and not _is_ours(config):
        raise CharRNNError(f"{config}: not a charrnn model's config; refusing to overwrite it (give another folder)")
    if (folder / WEIGHTS).exists() and not config.exists():
        raise CharRNNError(
            f"{folder / WEIGHTS}: weights with no charrnn {CONFIG} beside them; refusing to overwrite them "
            "(give another folder)"
        )


def _is_ours(config: Path) -> bool:
    try:
        with open(config, "rb") as fh:
            data = json.loads(fh.read(MAX_CONFIG_BYTES + 1))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def is_model_folder(path: str | Path) -> bool:
    """Whether `path` is a folder holding a model.safetensors or a config.json (checked when read)."""
    path = Path(path)
    return path.is_dir() and ((path / WEIGHTS).is_file() or (path / CONFIG).is_file())


def load_model_folder(
    path: str | Path,
) -> tuple[dict[str, np.ndarray], Vocab, ModelConfig, TrainingSummary | None]:
    """Read a model folder (or the .safetensors file in one; its config.json lies beside it):
    its weights (float32, torch's names), vocabulary, model config and training summary. Every
    way the files can be wrong is a one-line CharRNNError naming the file; no torch is needed."""
    path = Path(path)
    weights_path = path / WEIGHTS if path.is_dir() else path
    if not weights_path.is_file():
        why = "no such file" if not weights_path.exists() else "not a file"
        raise CharRNNError(f"{weights_path}: {why} (a model folder holds {WEIGHTS} and {CONFIG})")
    cfg, vocab, digest, training = _read_config(weights_path.parent / CONFIG)
    data = _read_weights_file(weights_path, cfg)
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise CharRNNError(
            f"{weights_path}: damaged model: its contents do not match the weights_sha256 of {CONFIG} "
            "(damaged on disk, or the two files come from different saves)"
        )
    import safetensors.numpy

    try:
        arrays = safetensors.numpy.load(data)
    except Exception as exc:  # safetensors' own error type lives in its compiled module
        raise CharRNNError(f"{weights_path}: not a readable safetensors file ({str(exc)[:200]})") from None
    weights = {name: np.asarray(array, dtype=np.float32) for name, array in arrays.items()}
    check_finite(weights, str(weights_path))
    if cfg.tie_weights and not np.array_equal(weights["embed.weight"], weights["head.weight"]):
        raise CharRNNError(
            f"{weights_path}: damaged model: tie_weights, but head.weight differs from embed.weight "
            "(they are one matrix)"
        )
    return weights, vocab, cfg, training


def _read_config(path: Path) -> tuple[ModelConfig, Vocab, str | None, TrainingSummary | None]:
    """config.json as typed records: the model, the vocabulary, the weights' digest, the training."""
    if not path.is_file():
        raise CharRNNError(f"{path}: no such file (a model folder holds {WEIGHTS} and {CONFIG})")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise CharRNNError(f"{path}: over {MAX_CONFIG_BYTES >> 20} MiB, far more than a model's config")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # (UnicodeDecodeError is a ValueError)
        raise CharRNNError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CharRNNError(f'{path}: not a charrnn model\'s config (no "format": "{FORMAT}")')
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CharRNNError(f"{path}: damaged model config (format_version {str(version)[:40]!r})")
    if version > FORMAT_VERSION:
        raise CharRNNError(
            f"{path}: model format version {version} is newer than this charrnn reads ({FORMAT_VERSION}); "
            "upgrade charrnn"
        )
    try:
        return _read_fields(data)
    except Invalid as exc:
        raise CharRNNError(f"{path}: damaged model config: {exc}") from None


def _read_fields(data: dict[str, Any]) -> tuple[ModelConfig, Vocab, str | None, TrainingSummary | None]:
    model_keys = set(ModelConfig.__dataclass_fields__)
    for key in data:
        if key not in model_keys and key not in KEYS:
            raise Invalid(f"unexpected key {str(key)[:40]!r}")
    cfg = read_model({k: v for k, v in data.items() if k in model_keys}, "config")
    chars = data.get("vocab")
    if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
        raise Invalid("vocab must be a list of characters (strings of one character each)")
    try:
        vocab = Vocab(tuple(chars))
    except ValueError as exc:
        raise Invalid(f"vocab: {exc}") from None
    check_vocab(vocab, cfg)
    digest = data.get("weights_sha256")
    if digest is not None and not (
        isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    ):
        raise Invalid("weights_sha256 must be 64 lowercase hexadecimal digits")
    training = data.get("training")
    return cfg, vocab, digest, None if training is None else read_summary(training, "training")


def _read_weights_file(path: Path, cfg: ModelConfig) -> bytes:
    """The bytes of a safetensors file, once its header says it holds exactly the weights `cfg`
    needs (names, shapes, floating-point dtypes, offsets end to end) and they fit in memory."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            head = fh.read(8)
            if len(head) < 8:
                raise CharRNNError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER_BYTES or 8 + length > size:
                why = (
                    f"over the limit of {MAX_HEADER_BYTES:,}"
                    if length > MAX_HEADER_BYTES
                    else "more than the file holds"
                )
                raise CharRNNError(f"{path}: not a safetensors file (its header claims {length:,} bytes, {why})")
            _check_header(fh.read(length), 8 + length, size, cfg, path)
            fh.seek(0)
            return fh.read()
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _check_header(raw: bytes, start: int, size: int, cfg: ModelConfig, path: Path) -> None:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise CharRNNError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CharRNNError(f"{path}: not a safetensors file (its header is not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CharRNNError(f"{path}: damaged safetensors header (__metadata__ must map names to strings)")
    shapes, spans = {}, []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise CharRNNError(f"{path}: damaged safetensors header (entry {name[:40]!r})")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not _ints(shape) or not _ints(offsets) or len(offsets) != 2:
            raise CharRNNError(f"{path}: damaged safetensors header (shape or offsets of {name[:40]})")
        if entry["dtype"] not in DTYPES:
            raise CharRNNError(
                f"{path}: damaged model: {name[:40]} has dtype {str(entry['dtype'])[:10]}, expected one of "
                f"{', '.join(DTYPES)}"
            )
        shapes[name] = tuple(shape)
        spans.append((offsets[0], offsets[1], math.prod(shape) * DTYPES[entry["dtype"]].itemsize, name))
    check_shapes(shapes, cfg, str(path))  # before the offsets: a missing or extra weight is the clearer message
    end = 0
    for begin, stop, needed, name in sorted(spans):
        if begin != end or stop - begin != needed:
            raise CharRNNError(f"{path}: damaged safetensors header (the bytes of {name} are not where they should be)")
        end = stop
    if start + end != size:
        raise CharRNNError(f"{path}: damaged model: the file holds {size:,} bytes, its header says {start + end:,}")
    memory = physical_memory()
    if memory is not None and 2 * size > memory:  # the file's bytes, then the arrays
        raise CharRNNError(
            f"{path}: its model needs {2 * size / 2**30:,.1f} GiB, more than this machine's "
            f"{memory / 2**30:,.1f} GiB of memory"
        )


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
