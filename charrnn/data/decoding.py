"""Bytes to checked text: the read options (--encoding, --errors), an incremental decoder, the
checks of a text file.

Everything a user can get wrong about the bytes of a text file is caught here with a message
that names the file and the problem: bytes that are not valid in the chosen encoding (with the
byte offset), UTF-16 or UTF-32 text read as another encoding (with the --encoding to pass),
binary data. A UTF-8 byte-order mark is dropped and Windows/old-Mac line endings
become '\\n' unless asked to keep them. The text is decoded chunk by chunk: a multi-byte
character or a '\\r\\n' split between two chunks is decoded as if the file had been read whole.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

import numpy as np

from charrnn.data.vocab import codepoints, surrogates
from charrnn.errors import CharRNNError

BINARY_CONTROL_FRACTION = 0.3  # a text with more control characters than this is binary
NUL_WINDOW = 1 << 20  # bytes at the start of a file searched for NUL
SAMPLE_CHARS = 1 << 16  # characters at the start of a file checked for control characters
HEAD_BYTES = 1 << 12  # bytes at the start of a file looked at for UTF-16 and UTF-32 text


# ------------------------------------------------------------------------------ read options
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
        raise CharRNNError(
            f"--errors {errors!r} is not one of: strict, replace, ignore (or another Python error handler)"
        ) from None
    except UnicodeDecodeError:  # strict, or a handler that refuses this byte
        return errors
    except TypeError:  # xmlcharrefreplace, namereplace
        raise CharRNNError(
            f"--errors {errors!r} is a handler for writing text, not for reading it: use strict, replace or ignore"
        ) from None
    if len(surrogates(made)):
        raise CharRNNError(
            f"--errors {errors!r} turns bad bytes into lone surrogates, which are not characters: "
            "pass --encoding latin-1 (every byte is a character) or --errors replace"
        )
    return errors


# ------------------------------------------------------------------------------ UTF-16 and UTF-32
WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# (encoding, bytes a code unit, the byte of a unit that ASCII text fills, the bytes it leaves NUL)
WIDE_LAYOUTS = (
    ("utf-32-le", 4, 0, [2, 3]),
    ("utf-32-be", 4, 3, [0, 1]),
    ("utf-16-le", 2, 0, [1]),
    ("utf-16-be", 2, 1, [0]),
)


def wide_encoding(head: bytes) -> tuple[str, str] | None:
    """The UTF-16 or UTF-32 encoding a file's first bytes show, and how: its byte-order mark, or
    NUL bytes where that encoding puts them in mostly Latin text ('h\\0i\\0' is UTF-16-LE)."""
    for bom, encoding in WIDE_BOMS:
        if head.startswith(bom):
            return encoding, f"a {encoding.upper()} byte-order mark"
    for encoding, width, text_byte, nul_bytes in WIDE_LAYOUTS:
        units = np.frombuffer(head[: len(head) // width * width], dtype=np.uint8).reshape(-1, width)  # (N, width)
        nul = (units == 0).mean(axis=0) if len(units) else np.zeros(width)
        if nul[text_byte] < 0.1 and (nul[nul_bytes] > 0.5).all():
            return encoding, f"NUL bytes where {encoding.upper()} puts them"
    return None


def _wide_text_error(head: bytes, name: str, utf8: bool, encoding: str, flags: tuple[str, ...]) -> CharRNNError | None:
    """The error for a file whose first bytes are UTF-16 or UTF-32 text, read as a narrow
    `encoding`. A byte-order mark is believed where it cannot be text: in UTF-8, or before NULs.
    (The user is told the flag rather than the file read as it seems: the same flags must read
    a corpus the same way, which its cache entry and checkpoints rely on.)"""
    head = head[:HEAD_BYTES]  # (the same answer whatever the size of the chunks)
    found = wide_encoding(head)
    if found is None or not (utf8 or b"\x00" in head):
        return None
    wide, why = found
    advice = f"pass --encoding {wide}" if "--encoding" in flags else "save it as UTF-8"
    return CharRNNError(
        f"{name}: looks like {wide.upper()} text ({why}), not {'utf-8' if utf8 else encoding}; {advice}"
    )


def _head_first(chunks: Iterable[bytes], head_bytes: int = HEAD_BYTES) -> Iterator[bytes]:
    """The same bytes, the first chunk at least `head_bytes` long (unless the file is shorter)."""
    chunks, head = iter(chunks), b""
    for chunk in chunks:
        head += chunk
        if len(head) >= head_bytes:
            break
    if head:
        yield head
    yield from chunks


# ------------------------------------------------------------------------------ decoding
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

    The checks: UTF-16 or UTF-32 text read as a narrow encoding (its first 4 KiB), NUL bytes in
    the first MiB (binary), not valid in `encoding` (with the offset of the bad byte in the
    file), mostly control characters in the first 64k characters (binary).
    An empty file yields nothing; deciding whether that is an error is the caller's.
    """
    reader = _FileDecoder(name, encoding, errors, keep_newlines, flags)
    for chunk in _head_first(chunks):
        reader.check_bytes(chunk)
        yield from reader.emit(reader.feed(chunk, False), False)
    yield from reader.emit(reader.feed(b"", True), True)


class _FileDecoder:
    """The state of decoding one file: the incremental decoder, the byte offset reached, a BOM or
    a '\\r' that may still come, and the first characters, held back until checked."""

    def __init__(self, name: str, encoding: str, errors: str, keep_newlines: bool, flags: tuple[str, ...]):
        codec = check_encoding(encoding)
        check_errors(errors)
        self.name, self.encoding, self.keep_newlines, self.flags = name, encoding, keep_newlines, flags
        self.wide = codec.startswith(("utf-16", "utf-32"))  # NUL bytes are normal there
        self.utf8 = codec in ("utf-8", "utf-8-sig")
        self.decoder = codecs.getincrementaldecoder("utf-8" if self.utf8 else codec)(errors)  # BOM dropped below
        self.offset = 0  # bytes fed to the decoder before the current chunk
        self.at_start = True  # no character decoded yet (a BOM may come)
        self.pending_cr = ""  # a '\r' at the end of a piece waits: a '\n' may start the next chunk
        self.head: list[str] | None = []  # the first SAMPLE_CHARS characters, held back until checked
        self.head_len = 0

    def check_bytes(self, chunk: bytes) -> None:
        """Wide text read as a narrow encoding (in the first chunk), NUL bytes in the first MiB."""
        name, offset = self.name, self.offset
        if (
            offset == 0
            and not self.wide
            and (error := _wide_text_error(chunk, name, self.utf8, self.encoding, self.flags))
        ):
            raise error
        if not self.wide and offset < NUL_WINDOW and b"\x00" in chunk[: NUL_WINDOW - offset]:
            raise CharRNNError(f"{name}: looks like a binary file (it contains NUL bytes), not text")

    def normalise(self, text: str, final: bool) -> str:
        if self.at_start and text:
            self.at_start = False
            if self.utf8 and text[0] == "\ufeff":
                text = text[1:]
        if self.keep_newlines:
            return text
        text = self.pending_cr + text
        self.pending_cr = ""
        if text.endswith("\r") and not final:
            text, self.pending_cr = text[:-1], "\r"
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    def feed(self, chunk: bytes, final: bool) -> str:
        name, encoding, flags = self.name, self.encoding, self.flags
        buffered = len(self.decoder.getstate()[0])
        try:
            text = self.decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            at = self.offset - buffered + exc.start
            advice = " or ".join(
                [
                    *(["--encoding (e.g. latin-1, cp1252)"] if "--encoding" in flags else []),
                    *(["--errors replace"] if "--errors" in flags else []),
                ]
            )
            raise CharRNNError(
                f"{name}: not valid {encoding if not self.utf8 else 'utf-8'} at byte offset {at} "
                f"(byte 0x{exc.object[exc.start]:02x}); " + (f"pass {advice}" if advice else "save it as UTF-8")
            ) from None
        except UnicodeError as exc:  # e.g. UTF-16 without a byte-order mark
            raise CharRNNError(f"{name}: cannot be read as {encoding}: {exc}; pass another --encoding") from None
        self.offset += len(chunk)
        return self.normalise(text, final)

    def check_head(self, text: str) -> None:
        sample = text[:SAMPLE_CHARS]
        controls = sum(1 for c in sample if ord(c) < 32 and c not in "\n\r\t\f\v")
        if controls > BINARY_CONTROL_FRACTION * len(sample):
            raise CharRNNError(f"{self.name}: looks like a binary file (mostly control characters), not text")

    def emit(self, text: str, final: bool) -> Iterator[str]:
        if self.head is None:
            if text:
                yield text
            return
        self.head.append(text)
        self.head_len += len(text)
        if self.head_len >= SAMPLE_CHARS or final:
            joined, self.head = "".join(self.head), None
            self.check_head(joined)
            if joined:
                yield joined


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
