"""The files of a prepared corpus' cache entry, as typed records checked whenever they are read.

    source.json              `SourceRecord`: what the counting pass found, and the files it read
    vocab.json, vocab.<v>.json  `IdsRecord`: the vocabulary of an ids file, the content it
                             encodes and the SHA-256 of its ids
    ids.npy, ids.<v>.npy     the ids

Each JSON record carries the SHA-256 of its own fields. `read_record` returns None when the file
is not there and raises `Damaged` when it is there but is not what charrnn wrote: edited, cut
short, of the wrong types, or contradicting itself. `verified_ids` reads an ids file once, in
chunks (memory does not grow with the corpus), to check its SHA-256 and that every id is inside
the vocabulary. A damaged file is made again by the caller; nothing here is trusted unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import numpy as np

from charrnn.data.vocab import Vocab, id_dtype

CACHE_FORMAT = 2  # 2: ctime and inode of the files, checksummed records, the SHA-256 of the ids
READ_BYTES = 1 << 20  # an ids file is checked this many bytes at a time


class Damaged(Exception):
    """A cache file that is there but is not what was written: "PATH: what is wrong"."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class SourceRecord:
    """source.json: the corpus as the counting pass read it."""

    format: int
    files: list  # [{path, size, mtime_ns, ctime_ns, ino}], compared whole with the files now
    options: dict  # the read options
    read_at_ns: int  # when the counting pass started
    content: str  # SHA-256 of the raw bytes (and of each file's length)
    n_chars: int
    chars: str  # the distinct characters, sorted by code point
    counts: list  # how often each of them occurs

    def check(self) -> None:
        Vocab.from_json({"chars": self.chars})  # sorted, distinct, no surrogates
        if (
            len(self.counts) != len(self.chars)
            or not all(_is(c, int) and c > 0 for c in self.counts)
            or sum(self.counts) != self.n_chars
        ):
            raise ValueError("its character counts do not match its characters and length")


@dataclass(frozen=True)
class IdsRecord:
    """vocab.json (or vocab.<v>.json): what its ids file holds."""

    chars: str  # the vocabulary of the ids
    content: str  # the SourceRecord.content of the text they encode
    n_chars: int
    ids_sha256: str  # of the ids' bytes, after the .npy header

    def check(self) -> None:
        Vocab.from_json({"chars": self.chars})


Record = TypeVar("Record", SourceRecord, IdsRecord)


def write_record(path: Path, record: SourceRecord | IdsRecord) -> None:
    """Write `record` as JSON with its checksum, atomically (a temporary file renamed)."""
    fields = asdict(record)
    write_json(path, {**fields, "sha256": _checksum(fields)})


def read_record(path: Path, kind: type[Record]) -> Record | None:
    """The `kind` record in `path`, checked; None if there is no such file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:
        raise Damaged(path, f"cannot be read ({exc})") from None
    if not isinstance(data, dict) or data.pop("sha256", None) != _checksum(data):
        raise Damaged(path, "is not what was written (its checksum disagrees)")
    types = get_type_hints(kind)
    if set(data) != set(types) or not all(_is(data[k], t) for k, t in types.items()):
        raise Damaged(path, "does not have the fields a cache entry needs")
    record = kind(**data)
    try:
        record.check()
    except ValueError as exc:
        raise Damaged(path, str(exc)) from None
    return record


def verified_ids(path: Path, record: IdsRecord) -> np.ndarray:
    """The ids of `path`, memory-mapped, once they are those `record` describes: their dtype and
    length, their SHA-256, every id below the vocabulary's size."""
    vocab_size, dtype = len(record.chars), id_dtype(len(record.chars))
    try:
        ids = np.lib.format.open_memmap(path, mode="r")  # an .npy only (np.load would try a zip, a pickle)
    except FileNotFoundError:
        raise Damaged(path, "is missing") from None
    except (OSError, ValueError) as exc:
        raise Damaged(path, f"cannot be read ({exc})") from None
    if ids.dtype != dtype or ids.shape != (record.n_chars,):
        raise Damaged(path, f"holds {ids.shape} ids of {ids.dtype}, its record says ({record.n_chars},) of {dtype}")
    sha256, top = _scan(path, ids.offset, ids.nbytes, dtype)
    if sha256 != record.ids_sha256:
        raise Damaged(path, "its ids are not those that were written (their SHA-256 differs)")
    if top >= vocab_size:
        raise Damaged(path, f"holds id {top}, outside the vocabulary of {vocab_size} characters")
    return ids


def _scan(path: Path, offset: int, n_bytes: int, dtype: np.dtype) -> tuple[str, int]:
    """SHA-256 and largest value of the `n_bytes` of ids at `offset`, one buffer at a time."""
    hasher, top = hashlib.sha256(), 0
    buffer = memoryview(bytearray(READ_BYTES))
    with open(path, "rb") as fh:
        fh.seek(offset)
        while n_bytes > 0:
            got = fh.readinto(buffer[: min(n_bytes, READ_BYTES)])
            if not got:
                raise Damaged(path, "is shorter than its header says")
            hasher.update(buffer[:got])
            top = max(top, int(np.frombuffer(buffer[:got], dtype=dtype).max()))
            n_bytes -= got
    return hasher.hexdigest(), top


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _checksum(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))
