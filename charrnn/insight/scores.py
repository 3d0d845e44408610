"""Scoring a text with a trained model: nats and bits per character, and perplexity.

`score_text` streams any text through the model with batch 1, in chunks of `chunk_len`
characters, carrying the hidden state from one chunk to the next: the result is exactly the loss
of one pass over the whole text (memory stays bounded by one chunk's logits). Every character
but the first is predicted from all the characters before it.

Characters the model never saw cannot be scored: they are dropped from the text (the characters
on either side become neighbours), counted, and reported by name.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError, plural
from charrnn.units import LN2

if TYPE_CHECKING:  # (torch is imported where a model is run, not to read a score)
    from charrnn.model import CharRNN

CHUNK_LEN = 1024  # characters per forward pass


@dataclass
class TextScore:
    """The loss of a model on a text. `loss_nats` is the mean cross-entropy per scored character."""

    chars: int  # characters in the text as read
    chars_scored: int  # characters predicted (the known ones but the first)
    loss_nats: float
    unknown: dict[str, int] = field(default_factory=dict)  # dropped character -> occurrences

    @property
    def bpc(self) -> float:
        return self.loss_nats / LN2

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss_nats) if self.loss_nats < 700 else math.inf

    @property
    def unknown_chars(self) -> int:
        return sum(self.unknown.values())

    def to_json(self) -> dict:
        return {
            "chars": self.chars,
            "chars_scored": self.chars_scored,
            "loss_nats": self.loss_nats,
            "bpc": self.bpc,
            "perplexity": self.perplexity,
            "unknown_chars": self.unknown_chars,
            "unknown": self.unknown,
        }


def drop_unknown(vocab: Vocab, text: str) -> tuple[str, dict[str, int]]:
    """The text without the characters outside `vocab`, and how often each of those appeared
    (most frequent first)."""
    missing = vocab.unknown(text)
    if not missing:
        return text, {}
    unknown = set(missing)  # (once: a set built per character made this quadratic; issue 26, item 2)
    counts = Counter(c for c in text if c in unknown)
    kept = text.translate({ord(c): None for c in missing})
    return kept, dict(counts.most_common())


def score_ids(
    model: CharRNN,
    ids: np.ndarray,
    device="cpu",
    chunk_len: int = CHUNK_LEN,
    on_progress: Callable[[int, int], None] | None = None,
) -> float:
    """Mean cross-entropy (nats) of predicting ids[1:] from the ids before them, in one stream."""
    from charrnn.model import stream_loss

    if len(ids) < 2:
        raise CharRNNError("the text needs at least 2 characters the model knows to be scored")
    total, count = stream_loss(
        model, np.asarray(ids)[None, :], chunk_len, device, whole=True, on_progress=on_progress
    )  # one stream: (1, N)
    return total / count


def score_text(
    model: CharRNN,
    vocab: Vocab,
    text: str,
    device="cpu",
    chunk_len: int = CHUNK_LEN,
    on_progress: Callable[[int, int], None] | None = None,
) -> TextScore:
    """Score `text`, dropping (and counting) the characters outside the vocabulary."""
    kept, unknown = drop_unknown(vocab, text)
    if len(kept) < 2:
        raise CharRNNError(
            f"the text has {plural(len(kept), 'character')} the model knows (of {len(text):,}); "
            f"at least 2 are needed to score it"
        )
    loss = score_ids(model, vocab.encode(kept), device, chunk_len, on_progress)
    return TextScore(chars=len(text), chars_scored=len(kept) - 1, loss_nats=loss, unknown=unknown)
