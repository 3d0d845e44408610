"""Reading a corpus: finding its files, decoding and checking the text, the train/validation split.

Everything a user can get wrong about a text file is caught here with a message that names the
file and the problem: a missing or unreadable path, an empty corpus, bytes that are not valid in
the chosen encoding (with the byte offset), binary data. A UTF-8 byte-order mark is dropped and
Windows/old-Mac line endings become '\\n' unless asked to keep them.

The text is read in chunks of bytes through an incremental decoder, so a corpus of any size
passes through a bounded amount of memory: a multi-byte character or a '\\r\\n' split between two
chunks is decoded as if the file had been read whole. A corpus may be several files, or a
directory (every file under it, sorted, hidden ones skipped), joined with a separator.
`charrnn.prepare` turns that stream into ids on disk.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from charrnn.config import DEFAULT_SEPARATOR
from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab, codepoints, surrogates

BINARY_CONTROL_FRACTION = 0.3  # a text with more control characters than this is binary
NUL_WINDOW = 1 << 20  # bytes at the start of a file searched for NUL
SAMPLE_CHARS = 1 << 16  # characters at the start of a file checked for control characters
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
                p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
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


def read_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES, on_bytes: Callable[[bytes], None] | None = None) -> Iterator[bytes]:
    """The bytes of a file, `chunk_bytes` at a time; `on_bytes` sees each chunk (hashing, progress)."""
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(chunk_bytes):
                if on_bytes is not None:
                    on_bytes(chunk)
                yield chunk
    except OSError as exc:
        raise _cannot_read(path, exc) from None


# ------------------------------------------------------------------------------ decoding
CORPUS_FLAGS = ("--encoding", "--errors")  # what `train` and `prepare` offer for a file they cannot read

def check_encoding(encoding: str) -> str:
    """The codec's canonical name, or a clear error for an unknown encoding."""
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise CharRNNError(f"--encoding {encoding!r} is not an encoding Python knows") from None
    if not getattr(codec, "_is_text_encoding", True):  # hex, rot13, zlib...: bytes-to-bytes codecs
        raise CharRNNError(f"--encoding {encoding!r} is not a text encoding (e.g. utf-8, latin-1, cp1252, utf-16)")
    return codec.name


def check_errors(errors: str) -> str:
    """`errors` if Python has such a decoding error handler (strict, replace, ignore...) and it
    makes characters: surrogateescape and surrogatepass make lone surrogates, which are not
    characters and cannot be written as UTF-8 (a model would sample them)."""
    try:
        codecs.lookup_error(errors)
        made = codepoints(b"\xed\xa0\x80".decode("utf-8", errors))  # an encoded surrogate: invalid UTF-8
    except LookupError:
        raise CharRNNError(f"--errors {errors!r} is not one of: strict, replace, ignore (or another Python error handler)") from None
    except UnicodeDecodeError:  # strict, or a handler that refuses this byte
        return errors
    except TypeError:  # xmlcharrefreplace, namereplace
        raise CharRNNError(f"--errors {errors!r} is a handler for writing text, not for reading it: use strict, replace or ignore") from None
    if len(surrogates(made)):
        raise CharRNNError(
            f"--errors {errors!r} turns bad bytes into lone surrogates, which are not characters: "
            "pass --encoding latin-1 (every byte is a character) or --errors replace"
        )
    return errors


def decode_chunks(
    chunks: Iterable[bytes],
    name: str,
    encoding: str = "utf-8",
    errors: str = "strict",
    keep_newlines: bool = False,
    flags: tuple[str, ...] = CORPUS_FLAGS,
) -> Iterator[str]:
    """Decode one file given as byte chunks into checked text pieces. `name` is used in messages,
    which suggest only the `flags` the command has.

    The checks: NUL bytes in the first MiB (binary), not valid in `encoding` (with the offset of
    the bad byte in the file), mostly control characters in the first 64k characters (binary).
    An empty file yields nothing; deciding whether that is an error is the caller's.
    """
    codec = check_encoding(encoding)
    check_errors(errors)
    wide = codec.startswith(("utf-16", "utf-32"))  # NUL bytes are normal there
    utf8 = codec in ("utf-8", "utf-8-sig")
    decoder = codecs.getincrementaldecoder("utf-8" if utf8 else codec)(errors)  # BOM dropped below
    offset = 0  # bytes fed to the decoder before the current chunk
    at_start = True  # no character decoded yet (a BOM may come)
    pending_cr = ""  # a '\r' at the end of a piece waits: a '\n' may start the next chunk
    head: list[str] | None = []  # the first SAMPLE_CHARS characters, held back until checked
    head_len = 0

    def normalise(text: str, final: bool) -> str:
        nonlocal at_start, pending_cr
        if at_start and text:
            at_start = False
            if utf8 and text[0] == "\ufeff":
                text = text[1:]
        if keep_newlines:
            return text
        text = pending_cr + text
        pending_cr = ""
        if text.endswith("\r") and not final:
            text, pending_cr = text[:-1], "\r"
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def feed(chunk: bytes, final: bool) -> str:
        nonlocal offset
        buffered = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            at = offset - buffered + exc.start
            advice = " or ".join(
                [*(["--encoding (e.g. latin-1, cp1252)"] if "--encoding" in flags else []), *(["--errors replace"] if "--errors" in flags else [])]
            )
            raise CharRNNError(
                f"{name}: not valid {encoding if not utf8 else 'utf-8'} at byte offset {at} "
                f"(byte 0x{exc.object[exc.start]:02x}); " + (f"pass {advice}" if advice else "save it as UTF-8")
            ) from None
        except UnicodeError as exc:  # e.g. UTF-16 without a byte-order mark
            raise CharRNNError(f"{name}: cannot be read as {encoding}: {exc}; pass another --encoding") from None
        offset += len(chunk)
        return normalise(text, final)

    def check_head(text: str) -> None:
        sample = text[:SAMPLE_CHARS]
        controls = sum(1 for c in sample if ord(c) < 32 and c not in "\n\r\t\f\v")
        if controls > BINARY_CONTROL_FRACTION * len(sample):
            raise CharRNNError(f"{name}: looks like a binary file (mostly control characters), not text")

    def emit(text: str, final: bool) -> Iterator[str]:
        nonlocal head, head_len
        if head is None:
            if text:
                yield text
            return
        head.append(text)
        head_len += len(text)
        if head_len >= SAMPLE_CHARS or final:
            joined, head = "".join(head), None
            check_head(joined)
            if joined:
                yield joined

    for chunk in chunks:
        if not wide and offset < NUL_WINDOW and b"\x00" in chunk[: NUL_WINDOW - offset]:
            raise CharRNNError(f"{name}: looks like a binary file (it contains NUL bytes), not text")
        yield from emit(feed(chunk, False), False)
    yield from emit(feed(b"", True), True)


def decode(
    data: bytes,
    name: str,
    encoding: str = "utf-8",
    errors: str = "strict",
    keep_newlines: bool = False,
    flags: tuple[str, ...] = CORPUS_FLAGS,
    what: str = "the corpus",
) -> str:
    """Bytes to text, with every check a corpus needs. `name` is used in messages, `what` for
    an empty file; `flags` are the options a message may suggest."""
    text = "".join(decode_chunks([data], name, encoding, errors, keep_newlines, flags))
    if not text:
        raise CharRNNError(f"{name}: {what} is empty")
    return text


def read_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict", keep_newlines: bool = False, flags: tuple[str, ...] = CORPUS_FLAGS, what: str = "the corpus") -> str:
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


def load_corpus(path, vocab: Vocab | None = None, **options) -> Corpus:
    """Read and encode a corpus (a file, a directory, or a list of them) into a memory-mapped id
    array; with `vocab`, characters outside it are an error naming them. Options: those of
    `charrnn.prepare.prepare_corpus` (read options, separator, cache_dir, progress)."""
    from charrnn.prepare import prepare_corpus

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return prepare_corpus(paths, vocab=vocab, **options)
