"""Checkpoints: one versioned, self-contained format; atomic saves; loads that run no code.

A checkpoint is a `torch.save` of a dict holding only tensors, numbers, strings, lists and dicts:
the model weights, the optimizer state, RNG states, the carried hidden state, and a JSON string
`meta` (format version, vocabulary, model and training config, step, data position, losses).
It is read back with `torch.load(weights_only=True)`, whose unpickler refuses every class and
function that is not a plain container or tensor, so a crafted file cannot execute code. Then
`validate` checks it against its schema (the metadata's typed records, charrnn/store/metadata.py, and
tensors that fit them), so a file edited by hand is one clear error, not a crash further on.

Running no code is not enough: a crafted file can also ask for far more memory or time than its
size. So two checks come first, each bounded by the file's own size. Before `torch.load`, the
zip archive's directory (`check_archive`): torch writes every member stored, never compressed,
so a member DEFLATE-compressed (a 4 MB file that unpacks to 4 GB of zeros) or members that
together declare more bytes than the file holds are refused before a byte is unpacked. After it
and before anything walks the tensors (`check_contents`): each tensor no larger than the data
it views (a stride-0 view of 4 bytes can claim a gigabyte, which the checksum would copy) and
all of them together no larger than twice the file, a bounded number of objects nested a bounded
depth (shared references can make a small pickle a huge or endless tree), and no number too
large to print.

A save writes a temporary file in the same folder, fsyncs it and renames it over the old file,
so a crash at any moment leaves either the old or the new checkpoint, never a torn one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charrnn.cells import parameter_shapes
from charrnn.errors import CharRNNError, plural
from charrnn.store import run_folder
from charrnn.store.files import atomic_write, file_kind
from charrnn.store.metadata import CheckpointInfo, Invalid, read_info
from charrnn.store.weights import check_finite, check_shapes

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
    info: CheckpointInfo | None = None  # `meta` as typed records, checked by `load` (None while one is built)
    average: dict[str, torch.Tensor] | None = None  # --average: the averaged weights (last.pt; None: none)

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
        if self.average is not None:  # (a part only runs with --average have: other files are as before)
            data["average"] = self.average
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
        raise CharRNNError(f"{path}: is a directory; give a .pt file (e.g. {path / run_folder.BEST})")
    if path.suffix in (".npz", ".safetensors"):
        kind = "an .npz export" if path.suffix == ".npz" else "a model folder's model.safetensors"
        raise CharRNNError(
            f"{path}: {kind} holds only weights and vocabulary for `charrnn sample`; "
            "give the .pt checkpoint it came from"
        )
    kind = file_kind(path)
    if kind in ("empty", "npy", "other"):
        why = {"empty": "the file is empty", "npy": "a NumPy array file"}.get(kind, "not a file torch.save writes")
        raise CharRNNError(f"{path}: not a readable charrnn checkpoint: {why}")
    if kind == "zip":
        check_archive(path)
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
    check_contents(data, path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CharRNNError(f"{path}: not a charrnn checkpoint")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CharRNNError(f"{path}: damaged charrnn checkpoint (format version {version!r})")
    if version > FORMAT_VERSION:
        raise CharRNNError(
            f"{path}: checkpoint format version {version} is newer than this charrnn reads "
            f"({FORMAT_VERSION}); upgrade charrnn"
        )
    if data.get("sha256") != digest(data):
        raise CharRNNError(f"{path}: damaged charrnn checkpoint (its contents do not match their checksum)")
    info = validate(data, path)
    return Checkpoint(
        meta=json.loads(data["meta"]),
        model=data["model"],
        optimizer=data["optimizer"],
        rng=data["rng"],
        hidden=data["hidden"],
        format_version=version,
        info=info,
        average=data.get("average"),
    )


# The members torch.save writes, after the archive's one top folder ("archive/" when it writes to a
# file object, as `save` does; the file's name without its suffix when it writes to a path).
TORCH_MEMBERS = re.compile(r"data\.pkl|byteorder|version|\.format_version|\.storage_alignment|\.data/\w+|data/\d+")


def check_archive(path: Path) -> None:
    """Refuse, before torch unpacks anything, a zip archive that is not one torch.save writes:
    members under one top folder, with torch's names, each once, one `data.pkl`, every member
    stored (not compressed, not encrypted) and all of them together within the file. Then
    `torch.load` reads at most the file's size, however the file was made; the .npz reader
    (store/export.py) checks its archive's directory in the same spirit."""
    size = path.stat().st_size

    def refuse(why: str) -> CharRNNError:
        return CharRNNError(f"{path}: not a readable charrnn checkpoint: {why} (refused before reading it)")

    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise CharRNNError(
            f"{path}: not a readable charrnn checkpoint: truncated or damaged (its zip archive is incomplete)"
        ) from None
    tops = {info.filename.partition("/")[0] for info in members}
    names = Counter(info.filename.partition("/")[2] for info in members)
    if len(tops) != 1 or names["data.pkl"] != 1:
        raise refuse("its zip archive is not one torch.save writes")
    for info in members:
        name = info.filename.partition("/")[2]
        if not TORCH_MEMBERS.fullmatch(name) or names[name] > 1:
            raise refuse(f"{'a second' if names[name] > 1 else 'an unexpected'} member {name[:80]!r}")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1 or info.file_size != info.compress_size:
            raise refuse(f"its member {name!r} is compressed or encrypted, which torch.save never does")
    declared = sum(info.file_size for info in members)
    if declared > size or any(info.header_offset + info.file_size > size for info in members):
        raise refuse(f"its members declare {declared:,} bytes, more than the file's {size:,}")


MAX_OBJECTS = 200_000  # an honest checkpoint holds a few per parameter tensor: hundreds, thousands
MAX_DEPTH = 32  # and nests them 5 deep (optimizer, state, parameter, moment)
TENSOR_BYTES_PER_FILE_BYTE = 2  # tied weights: the embedding is also the read-out, one storage, two tensors


def check_contents(data: Any, path: Path) -> None:
    """Refuse what torch.load built from a crafted file before anything walks it or copies a
    tensor: more than MAX_OBJECTS objects or nesting deeper than MAX_DEPTH (counted with every
    shared reference again, as a walk meets them), a tensor that is not a plain dense one on
    the CPU or that is larger than the data it views, tensors that together exceed twice the
    file's size (in an honest checkpoint each tensor's bytes are in the file once, but tied
    weights are one tensor under two names), or an integer too large to print. One pass,
    without recursion, in time bounded by MAX_OBJECTS; what walks the tensors after it (the
    checksum, the checks of finite weights) then reads at most twice the file."""
    budget, objects = TENSOR_BYTES_PER_FILE_BYTE * path.stat().st_size, 0
    stack: list[tuple[Any, int]] = [(data, 0)]

    def refuse(why: str) -> CharRNNError:
        return CharRNNError(f"{path}: damaged charrnn checkpoint ({why})")

    while stack:
        value, depth = stack.pop()
        objects += 1
        if objects > MAX_OBJECTS or depth > MAX_DEPTH:
            raise refuse(f"more than {MAX_OBJECTS:,} objects, or nested deeper than {MAX_DEPTH}")
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided or value.device.type != "cpu" or value.is_quantized:
                raise refuse(f"a {value.layout} tensor on {value.device.type}, not a plain one")
            nbytes = value.numel() * value.element_size()
            if nbytes > value.untyped_storage().nbytes():
                raise refuse(f"a tensor of {nbytes:,} bytes views only {value.untyped_storage().nbytes():,}")
            budget -= nbytes
            if budget < 0:
                raise refuse(f"its tensors hold more than twice the file's {path.stat().st_size:,} bytes")
        elif isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, int) and value.bit_length() > 64:
            raise refuse(f"an integer of {value.bit_length():,} bits")


PARTS = ("format", "format_version", "meta", "model", "optimizer", "rng", "hidden", "sha256")
OPTIONAL_PARTS = ("average",)  # the averaged weights of a run with --average (last.pt)


def validate(data: dict[str, Any], path: Path) -> CheckpointInfo:
    """The one check of a loaded checkpoint against its schema: its parts, its metadata (typed
    records, metadata.read_info), and tensors that fit them: the weights the model config needs
    (floating point, finite), a hidden state of (layers, streams, hidden), an optimizer state
    for exactly these parameters, random states torch can restore. Anything else is a one-line
    CharRNNError naming the file and what is wrong."""
    try:
        for part in sorted((set(PARTS) ^ set(data)) - set(OPTIONAL_PARTS), key=str):
            raise Invalid(f"part {part!r} is {'missing' if part in PARTS else 'unexpected'}")
        info = read_info(_parse_json(data["meta"]))
        _check_weights(data["model"], info, path)
        if "average" in data:  # the same names and shapes as the weights, finite
            _check_weights(data["average"], info, path, "averaged weights")
        _check_hidden(data["hidden"], info)
        _check_optimizer(data["optimizer"], list(parameter_shapes(info.model).items()))
        _check_rng(data["rng"], info.world_size)
    except Invalid as exc:
        raise CharRNNError(f"{path}: damaged checkpoint: {exc}") from None
    return info


def _parse_json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise Invalid("meta is not JSON") from None


def _check_tensor(value: Any, shape: tuple[int, ...] | None, what: str) -> None:
    """Invalid unless `value` is a floating-point tensor (of `shape`, when given)."""
    if not isinstance(value, torch.Tensor):
        raise Invalid(f"{what} is a {type(value).__name__}, expected a tensor")
    if not value.is_floating_point():
        raise Invalid(f"{what} has dtype {value.dtype}, expected floating point")
    if shape is not None and tuple(value.shape) != shape:
        raise Invalid(f"{what} has shape {tuple(value.shape)}, expected {shape}")


def _check_weights(model: Any, info: CheckpointInfo, path: Path, what: str = "weights") -> None:
    if not isinstance(model, dict) or not all(isinstance(k, str) for k in model):
        raise Invalid(f"the {what} are not a dict of named tensors")
    for name, value in model.items():
        _check_tensor(value, None, f"{what}: {name}" if what != "weights" else f"weight {name}")
    check_shapes({name: tuple(t.shape) for name, t in model.items()}, info.model, str(path))
    check_finite(model, str(path))


def _check_hidden(hidden: Any, info: CheckpointInfo) -> None:
    """None carried (an empty list), or one (L, streams, H) tensor; the LSTM's (h, c): two."""
    if not isinstance(hidden, list):
        raise Invalid(f"hidden state is a {type(hidden).__name__}, expected a list of tensors")
    count = 2 if info.model.cell == "lstm" else 1
    if hidden and len(hidden) != count:
        raise Invalid(f"hidden state of {plural(len(hidden), 'tensor')}, expected {count}")
    shape = (info.model.layers, info.streams, info.model.hidden)
    for i, tensor in enumerate(hidden):
        _check_tensor(tensor, shape, f"hidden state {i}")


def _check_optimizer(optimizer: Any, params: list[tuple[str, tuple[int, ...]]]) -> None:
    """An AdamW state for exactly these parameters (names and shapes, in the model's order)."""
    if optimizer is None:
        return
    if not isinstance(optimizer, dict) or set(optimizer) != {"state", "param_groups"}:
        raise Invalid("optimizer state is not an AdamW state")
    groups, state = optimizer["param_groups"], optimizer["state"]
    if (
        not isinstance(groups, list)
        or len(groups) != 1
        or not isinstance(groups[0], dict)
        or not isinstance(state, dict)
    ):
        raise Invalid("optimizer state: expected one group of parameters")
    if groups[0].get("params") != list(range(len(params))):
        raise Invalid(
            f"optimizer state: its parameters are {str(groups[0].get('params'))[:40]}, "
            f"expected the model's {len(params)}"
        )
    defaults = _adamw_defaults()
    for key, value in groups[0].items():
        if key in defaults and not _same_kind(value, defaults[key]):
            raise Invalid(f"optimizer state: {key} is {repr(value)[:40]}, expected one like {defaults[key]!r}")
    for index, entry in state.items():
        if isinstance(index, bool) or index not in range(len(params)) or not isinstance(entry, dict):
            raise Invalid(f"optimizer state: an entry for parameter {index!r}, which the model does not have")
        name, shape = params[index]
        moments = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if groups[0].get("amsgrad") else ())
        for key in moments:
            _check_tensor(entry.get(key), shape, f"optimizer state: {key} of {name}")
        _check_tensor(entry.get("step"), (), f"optimizer state: step of {name}")


@functools.cache
def _adamw_defaults() -> dict[str, Any]:
    """AdamW's settings (lr, betas, eps, ...) and their defaults, as its state_dict holds them."""
    group = torch.optim.AdamW([torch.zeros(1)]).state_dict()["param_groups"][0]
    return {key: value for key, value in group.items() if key != "params"}


def _same_kind(value: Any, default: Any) -> bool:
    """Whether an optimizer setting is of the kind of its default: a bool (or None where the
    default is None), a finite number, a tuple of them."""
    if isinstance(default, bool) or default is None:
        return isinstance(value, bool) or value is default
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list)) and len(value) == len(default) and all(map(_same_kind, value, default))
    return True


def _check_rng(rng: Any, world: int) -> None:
    """torch's random state for each process ('torch', then 'torch.1' ...; 'cuda' likewise)."""
    if rng is None:
        return
    if not isinstance(rng, dict):
        raise Invalid(f"random state is a {type(rng).__name__}, expected a dict")
    for key, state in rng.items():
        found = re.fullmatch(r"(torch|cuda)(?:\.([1-9][0-9]*))?", key) if isinstance(key, str) else None
        if not found or (found[2] and int(found[2]) >= world):
            raise Invalid(f"unexpected random state {key!r}")
        size = _cpu_rng_size() if found[1] == "torch" else state.numel() if isinstance(state, torch.Tensor) else -1
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or tuple(state.shape) != (size,):
            raise Invalid(f"random state {key!r} is not one torch can restore")


@functools.cache
def _cpu_rng_size() -> int:
    return torch.get_rng_state().numel()
