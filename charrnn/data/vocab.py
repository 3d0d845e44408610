"""`Vocab`: the characters of a corpus and their ids.

The vocabulary is the sorted set of Unicode code points of the text, so ids are stable for a
given set of characters and encoding is one vectorised `searchsorted` over code points. Ids are
stored in the smallest unsigned NumPy type that holds them. A vocabulary holds characters only:
never a lone surrogate (U+D800-U+DFFF), which some decoding error handlers make from bad bytes and
which cannot be written as UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharRNNError


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of `text` as a uint32 array, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def surrogates(points: np.ndarray) -> np.ndarray:
    """The lone surrogates (U+D800-U+DFFF) among code `points`: not characters, not UTF-8."""
    return points[(points >= 0xD800) & (points <= 0xDFFF)]


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 .. vocab_size - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} characters is too large")


@dataclass(frozen=True)
class Vocab:
    """Characters <-> ids. `chars[i]` is the character with id i; chars are sorted by code point."""

    chars: tuple[str, ...]

    def __post_init__(self):
        points = [ord(c) for c in self.chars]
        if points != sorted(set(points)):
            raise ValueError("vocabulary characters must be distinct and sorted by code point")
        object.__setattr__(self, "_points", np.array(points, dtype=np.uint32))
        odd = surrogates(self._points)
        if len(odd):
            raise ValueError(
                f"a vocabulary holds characters, not lone surrogates ({describe_chars([chr(p) for p in odd])})"
            )

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls.from_codepoints(codepoints(text))

    @classmethod
    def from_codepoints(cls, points: np.ndarray) -> Vocab:
        return cls(tuple(chr(p) for p in np.unique(points)))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return self.index(char) is not None

    def index(self, char: str) -> int | None:
        i = int(np.searchsorted(self._points, ord(char)))
        return i if i < len(self.chars) and self.chars[i] == char else None

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, in order of appearance."""
        points = codepoints(text)
        idx = np.minimum(np.searchsorted(self._points, points), len(self.chars) - 1)
        missing = points[self._points[idx] != points]
        return list(dict.fromkeys(chr(p) for p in missing))

    def encode(self, text: str) -> np.ndarray:
        """Ids of `text` in the smallest dtype; a character outside the vocabulary is an error."""
        points = codepoints(text)
        ids = np.searchsorted(self._points, points)
        ids = np.minimum(ids, len(self.chars) - 1)
        if not np.array_equal(self._points[ids], points):
            raise CharRNNError(f"characters not in the vocabulary: {describe_chars(self.unknown(text))}")
        return ids.astype(id_dtype(len(self.chars)))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> dict:
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        """The vocabulary `to_json` wrote; ValueError (with the reason) for anything else."""
        chars = data.get("chars") if isinstance(data, dict) else None
        if not isinstance(chars, str) or not chars:
            raise ValueError('a vocabulary is written as {"chars": a non-empty string}')
        return cls(tuple(chars))


def describe_chars(chars: list[str], limit: int = 20) -> str:
    """A readable list of characters for error messages: 'a', '\\n', U+1F600 '😀'."""
    shown = [repr(c) if c.isprintable() else f"U+{ord(c):04X}" for c in chars[:limit]]
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return ", ".join(shown) + more
