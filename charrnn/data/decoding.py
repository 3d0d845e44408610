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
from typing import Iterable, Iterator

import numpy as np

from charrnn.errors import CharRNNError
from charrnn.data.vocab import codepoints, surrogates

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


# ------------------------------------------------------------------------------ UTF-16 and UTF-32
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# (encoding, bytes a code unit, the byte of a unit that ASCII text fills, the bytes it leaves NUL)
WIDE_LAYOUTS = (("utf-32-le", 4, 0, [2, 3]), ("utf-32-be", 4, 3, [0, 1]), ("utf-16-le", 2, 0, [1]), ("utf-16-be", 2, 1, [0]))


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
    return CharRNNError(f"{name}: looks like {wide.upper()} text ({why}), not {'utf-8' if utf8 else encoding}; {advice}")


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

    for chunk in _head_first(chunks):
        if offset == 0 and not wide and (error := _wide_text_error(chunk, name, utf8, encoding, flags)):
            raise error
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
