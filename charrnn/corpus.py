"""Reading a corpus: decoding and checking the text, and the train/validation split.

Everything a user can get wrong about a text file is caught here with a message that names the
file and the problem: a missing or unreadable path, an empty file, bytes that are not valid in
the chosen encoding (with the byte offset), binary data. A UTF-8 byte-order mark is dropped and
Windows/old-Mac line endings become '\\n' unless asked to keep them.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn.errors import CharRNNError
from charrnn.vocab import Vocab, describe_chars

BINARY_CONTROL_FRACTION = 0.3  # a text with more control characters than this is binary


@dataclass
class Corpus:
    """A decoded corpus: its text, vocabulary and ids."""

    path: str
    vocab: Vocab
    ids: np.ndarray  # (N,) smallest unsigned dtype

    def split(self, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
        """Train ids and a contiguous tail of `val_frac` of them for validation."""
        n_val = int(len(self.ids) * val_frac)
        if val_frac > 0 and n_val < 2:
            n_val = 0
        return self.ids[: len(self.ids) - n_val], self.ids[len(self.ids) - n_val :]


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CharRNNError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CharRNNError(f"{path}: is a directory, not a text file") from None
    except PermissionError:
        raise CharRNNError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read: {exc.strerror or exc}") from None


def decode(
    data: bytes,
    name: str,
    encoding: str = "utf-8",
    errors: str = "strict",
    keep_newlines: bool = False,
) -> str:
    """Bytes to text, with every check a corpus needs. `name` is used in messages."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise CharRNNError(f"--encoding {encoding!r} is not an encoding Python knows") from None
    if b"\x00" in data[: 1 << 20] and not encoding.lower().replace("-", "").startswith("utf16"):
        raise CharRNNError(f"{name}: looks like a binary file (it contains NUL bytes), not text")
    if encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig"):
        encoding = "utf-8-sig"  # drops a BOM if there is one
    try:
        text = data.decode(encoding, errors)
    except UnicodeDecodeError as exc:
        raise CharRNNError(
            f"{name}: not valid {exc.encoding.replace('-sig', '')} at byte offset {exc.start} "
            f"(byte 0x{data[exc.start]:02x}); pass --encoding (e.g. latin-1, cp1252) "
            f"or --errors replace"
        ) from None
    if not keep_newlines:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise CharRNNError(f"{name}: the corpus is empty")
    sample = text[: 1 << 16]
    controls = sum(1 for c in sample if ord(c) < 32 and c not in "\n\r\t\f\v")
    if controls > BINARY_CONTROL_FRACTION * len(sample):
        raise CharRNNError(f"{name}: looks like a binary file (mostly control characters), not text")
    return text


def read_text(path: str | Path, encoding: str = "utf-8", errors: str = "strict", keep_newlines: bool = False) -> str:
    return decode(read_bytes(path), str(path), encoding, errors, keep_newlines)


def load_corpus(path: str | Path, vocab: Vocab | None = None, **read_options) -> Corpus:
    """Read and encode a corpus; with `vocab`, characters outside it are an error naming them."""
    text = read_text(path, **read_options)
    if vocab is None:
        vocab = Vocab.from_text(text)
    else:
        missing = vocab.unknown(text)
        if missing:
            raise CharRNNError(
                f"{path}: {len(missing)} characters are not in the checkpoint's vocabulary: "
                f"{describe_chars(missing)}"
            )
    return Corpus(path=str(path), vocab=vocab, ids=vocab.encode(text))
