"""Scoring a text with a trained model: nats and bits per character, and perplexity.

`score_text` streams any text through the model with batch 1, in chunks of `chunk_len`
characters, carrying the hidden state from one chunk to the next: the result is exactly the loss
of one pass over the whole text (memory stays bounded by one chunk's logits). Every character
but the first is predicted from all the characters before it.

Dynamic evaluation (Krause et al., 2018, "Dynamic evaluation of neural sequence models") scores
the text segment by segment and, after each, takes a gradient step on the segment just scored, so
the model adapts to the text's own style as it reads it: each character is still predicted
before the model has learned anything from it. It is reported beside the plain loss, never in its
place; it runs on a copy of the weights, so the model (and its file) is not changed.

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

from charrnn.config import DYNAMIC_LR, DYNAMIC_SEGMENT, DYNAMIC_SQUARES_DECAY, MAX_DYNAMIC_LR
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
    dynamic: DynamicScore | None = None  # dynamic evaluation's loss, where it was asked for

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
            **({} if self.dynamic is None else {"dynamic": self.dynamic.to_json()}),
        }


@dataclass
class DynamicScore:
    """Dynamic evaluation's mean loss over the same characters as the plain one, and its settings."""

    loss_nats: float
    lr: float
    segment: int

    @property
    def bpc(self) -> float:
        return self.loss_nats / LN2

    def to_json(self) -> dict:
        return {"loss_nats": self.loss_nats, "bpc": self.bpc, "lr": self.lr, "segment": self.segment}


def check_dynamic(lr: float, segment: int) -> None:
    if not (math.isfinite(lr) and 0 < lr <= MAX_DYNAMIC_LR):
        raise CharRNNError(
            f"--dynamic-lr {lr} must be in (0, {MAX_DYNAMIC_LR:g}]: it is how far each weight moves a step "
            f"(RMS-normalised; the default is {DYNAMIC_LR:g})"
        )
    if not 1 <= segment <= 100_000:
        raise CharRNNError(f"--dynamic-segment {segment} must be in [1, 100000]")


def dynamic_loss(
    model: CharRNN,
    ids: np.ndarray,
    lr: float = DYNAMIC_LR,
    segment: int = DYNAMIC_SEGMENT,
    device="cpu",
    on_progress: Callable[[int, int], None] | None = None,
) -> float:
    """Mean cross-entropy (nats) of ids[1:] under dynamic evaluation: score a segment of
    `segment` characters with the weights as they are, then take one step on that segment's
    mean loss (the gradient through the segment only; the hidden state carried on, detached),
    and go on. A copy of the model adapts; `model` itself is not changed.

    The step is RMS-normalised as Krause et al.'s is: each weight moves by `lr` times its
    gradient over the root of its mean squared gradient (`rms_step`). The paper takes that mean
    from the training data; here it is a running mean (`DYNAMIC_SQUARES_DECAY`) over the
    segments already scored, bias-corrected weight by weight, so nothing but the model file is
    needed; its decay toward the trained weights is left out (tried: no gain). On
    tiny-shakespeare's validation text (README, Look inside) it gained 0.063 nats/char where a
    plain SGD step gained 0.045 at its best learning rate.
    """
    import copy

    import torch
    import torch.nn.functional as F

    from charrnn.model import detach_hidden

    check_dynamic(lr, segment)
    if len(ids) < 2:
        raise CharRNNError("the text needs at least 2 characters the model knows to be scored")
    adapted = copy.deepcopy(model).to(device).eval()  # (eval: no dropout; gradients still flow)
    params = [p for p in adapted.parameters() if p.requires_grad]
    squares = [torch.zeros_like(p) for p in params]  # running mean of each weight's squared gradient
    seen = [torch.zeros_like(p) for p in params]  # steps since each weight's first gradient
    stream = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)
    total, count, hidden = 0.0, 0, None
    n_targets = len(ids) - 1
    for start in range(0, n_targets, segment):
        block = stream[start : start + segment + 1][None]  # (1, T + 1)
        x, y = block[:, :-1], block[:, 1:]
        logits, hidden = adapted(x, hidden)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
        total, count = total + loss.item(), count + y.numel()  # (scored before the step)
        grads = torch.autograd.grad(loss / y.numel(), params)
        rms_step(params, grads, squares, seen, lr)
        hidden = detach_hidden(hidden)
        if on_progress is not None:
            on_progress(min(start + segment, n_targets), n_targets)
    return total / count


def rms_step(params, grads, squares, seen, lr: float, decay: float = DYNAMIC_SQUARES_DECAY) -> None:
    """One RMS-normalised step, in place. `squares` keep each weight's running mean of squared
    gradients and `seen` the steps since its first gradient, by which the mean is bias-corrected
    (as Adam's is, but weight by weight): a weight's first step is `lr` exactly, whatever its
    gradient's size, and whenever it comes (a character first met late in the text: its
    embedding row's first gradient gets no larger a step than the first segment's did)."""
    import torch

    with torch.no_grad():
        for p, g, mean_square, steps in zip(params, grads, squares, seen):
            steps.add_(((steps > 0) | (g != 0)).to(steps.dtype))
            mean_square.mul_(decay).addcmul_(g, g, value=1 - decay)
            correction = torch.where(steps > 0, 1 - decay**steps, torch.ones_like(steps))
            rms = (mean_square / correction).sqrt_().add_(1e-8)
            p.addcdiv_(g, rms, value=-lr)


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
    dynamic: tuple[float, int] | None = None,
) -> TextScore:
    """Score `text`, dropping (and counting) the characters outside the vocabulary; with
    `dynamic` = (lr, segment), dynamic evaluation's loss of the same characters beside it."""
    kept, unknown = drop_unknown(vocab, text)
    if len(kept) < 2:
        raise CharRNNError(
            f"the text has {plural(len(kept), 'character')} the model knows (of {len(text):,}); "
            f"at least 2 are needed to score it"
        )
    ids = vocab.encode(kept)
    loss = score_ids(model, ids, device, chunk_len, on_progress)
    found = None
    if dynamic is not None:  # (lr, segment)
        found = DynamicScore(dynamic_loss(model, ids, *dynamic, device=device), *dynamic)
    return TextScore(chars=len(text), chars_scored=len(kept) - 1, loss_nats=loss, unknown=unknown, dynamic=found)
