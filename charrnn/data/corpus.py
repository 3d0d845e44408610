"""Reading a corpus: finding its files, reading them in chunks, the train/validation split.

A missing or unreadable path, a directory without files or an empty corpus is caught here with
a message that names it; the text is decoded and checked by `charrnn.data.decoding`. A file is read
in chunks of bytes, so a corpus of any size passes through a bounded amount of memory. A corpus
may be several files, or a directory (every file under it, sorted, hidden ones skipped), joined
with a separator. `charrnn.data.prepare` turns that stream into ids on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.config import DEFAULT_SEPARATOR
from charrnn.data.decoding import CORPUS_FLAGS, decode, decode_chunks
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError

CHUNK_BYTES = 1 << 17  # bytes read at a time (128 KiB: faster than larger ones, as they stay in the CPU caches)


@dataclass
class Corpus:
    """An encoded corpus: its vocabulary and ids (usually a read-only memory map of an .npy)."""

    path: str  # how to name it to people: the paths given, space-separated
    vocab: Vocab
    ids: np.ndarray  # (N,) smallest unsigned dtype
    digest: str = ""  # identifies the text, read options and vocabulary; stored in checkpoints
    info: dict | None = None  # how it was prepared (cache hit, timings), for messages

    def split(self, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
        """Train ids and a contiguous tail of `val_frac` of them for validation (views, no copy)."""
        n_val = int(len(self.ids) * val_frac)
        if val_frac > 0 and n_val < 2:
            n_val = 0
        return self.ids[: len(self.ids) - n_val], self.ids[len(self.ids) - n_val :]


# ------------------------------------------------------------------------------ files
def corpus_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files of a corpus given as files and directories, in order; each must exist."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise CharRNNError(f"{path}: is a directory with no files in it")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise CharRNNError(f"{path}: no such file")
    if not files:
        raise CharRNNError("no corpus given")
    return files


def _cannot_read(path: Path, exc: OSError) -> CharRNNError:
    if isinstance(exc, FileNotFoundError):
        return CharRNNError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return CharRNNError(f"{path}: is a directory, not a text file")
    if isinstance(exc, PermissionError):
        return CharRNNError(f"{path}: permission denied")
    return CharRNNError(f"{path}: cannot read: {exc.strerror or exc}")


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _cannot_read(path, exc) from None


def read_chunks(
    path: Path, chunk_bytes: int = CHUNK_BYTES, on_bytes: Callable[[bytes], None] | None = None
) -> Iterator[bytes]:
    """The bytes of a file, `chunk_bytes` at a time; `on_bytes` sees each chunk (hashing, progress)."""
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(chunk_bytes):
                if on_bytes is not None:
                    on_bytes(chunk)
                yield chunk
    except OSError as exc:
        raise _cannot_read(path, exc) from None


def read_text(
    path: str | Path,
    encoding: str = "utf-8",
    errors: str = "strict",
    keep_newlines: bool = False,
    flags: tuple[str, ...] = CORPUS_FLAGS,
    what: str = "the corpus",
) -> str:
    return decode(read_bytes(path), str(path), encoding, errors, keep_newlines, flags, what)


def iter_corpus_text(
    files: list[Path],
    encoding: str = "utf-8",
    errors: str = "strict",
    keep_newlines: bool = False,
    separator: str = DEFAULT_SEPARATOR,
    chunk_bytes: int = CHUNK_BYTES,
    on_bytes: Callable[[bytes], None] | None = None,
) -> Iterator[str]:
    """The checked text of several files in pieces, `separator` between non-empty files.

    `on_bytes` sees every chunk of raw bytes read (for a content hash and progress); a marker
    with each file's length is passed after it, so that moving bytes from one file to the next
    changes the hash. An empty corpus is an error.
    """
    any_text = False
    for path in files:
        started = False
        size = 0

        def seen(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if on_bytes is not None:
                on_bytes(chunk)

        for piece in decode_chunks(read_chunks(path, chunk_bytes, seen), str(path), encoding, errors, keep_newlines):
            if not started:
                started = True
                if any_text and separator:
                    yield separator
                any_text = True
            yield piece
        if on_bytes is not None:
            on_bytes(f"\x00end of file: {size} bytes\x00".encode())
    if not any_text:
        name = str(files[0]) if len(files) == 1 else f"{files[0]} and {len(files) - 1} other files"
        raise CharRNNError(f"{name}: the corpus is empty")
