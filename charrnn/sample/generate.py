"""Generation: warm up on a prime text, then pick one character at a time and feed it back.

The choice of the next character is engine-independent NumPy: logits -> temperature -> top-k ->
top-p -> inverse-CDF draw with a seeded `numpy.random.Generator`. An engine ("stepper") only turns
the ids of the last characters into logits, so the same seed gives the same text whichever
engine computes the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from charrnn.config import SampleConfig
from charrnn.data.vocab import Vocab, describe_chars
from charrnn.errors import CharRNNError


class Stepper(Protocol):
    def prime(self, ids: list[int], batch_size: int) -> np.ndarray:
        """Reset the state, feed `ids` to every row, return the last logits (B, V)."""

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Feed one id per row (B,), return the logits (B, V) for the next character."""

    def select(self, rows: np.ndarray) -> None:
        """Keep the state of `rows` only: row i becomes the old row rows[i] (beam search)."""


# ------------------------------------------------------------------ pure sampling filters
def probabilities(logits: np.ndarray, temp: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """Logits (B, V) -> probabilities (B, V) after temperature, top-k and top-p (nucleus).

    temp 0 puts all mass on the argmax, and so does a temperature so small that logits / temp
    overflows (it is 0 in all but name). top_k keeps the k largest logits (ties at the k-th
    kept). top_p keeps the smallest set of most likely characters whose mass reaches top_p.
    """
    logits = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    if temp == 0:
        return greedy(logits)
    with np.errstate(over="ignore", invalid="ignore"):  # overflows are looked for below
        z = logits / temp
        if 0 < top_k < z.shape[1]:
            kth = np.partition(z, -top_k, axis=1)[:, -top_k][:, None]
            z = np.where(z < kth, -np.inf, z)
        z = z - z.max(axis=1, keepdims=True)  # (+inf - +inf = nan where logits / temp overflowed)
    overflowed = np.isnan(z).any(axis=1)
    if overflowed.any():
        z[overflowed] = np.where(greedy(logits[overflowed]) > 0, 0.0, -np.inf)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        mass_before = np.cumsum(sorted_probs, axis=1) - sorted_probs
        keep_sorted = mass_before < top_p  # keep until the mass before a character reaches top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    return probs


def greedy(logits: np.ndarray) -> np.ndarray:
    """All the mass on the most likely character of each row (B, V)."""
    probs = np.zeros_like(logits)
    probs[np.arange(len(logits)), logits.argmax(axis=1)] = 1.0
    return probs


def draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of `probs` (B, V) by inverse CDF on one uniform number per row."""
    return draw_rows(probs, rng.random(len(probs)))


def draw_rows(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """One index per row of `probs` (B, V): where the uniform number u[b] in [0, 1) falls in
    the row's cumulative distribution. Each row's answer depends on that row alone."""
    cdf = np.cumsum(probs, axis=1)
    return np.minimum((cdf <= u[:, None] * cdf[:, -1:]).sum(axis=1), probs.shape[1] - 1)


# ------------------------------------------------------------------ prime text
def prime_ids(vocab: Vocab, prime: str, unknown: str = "error") -> tuple[list[int], str, list[str]]:
    """Ids to warm up on, the prime as it will be echoed, and any dropped characters.

    Characters outside the vocabulary are an error (unknown='error') or dropped (unknown='skip').
    With no prime, the model is warmed up on a newline (or a space), which is not echoed.
    """
    missing = vocab.unknown(prime) if prime else []
    if missing and unknown != "skip":
        raise CharRNNError(
            f"the prime text has characters the model never saw: {describe_chars(missing)} "
            f"(use --unknown skip to drop them)"
        )
    if missing:  # (one pass: a table of the missing characters, not a set built per character)
        prime = prime.translate(dict.fromkeys(map(ord, missing)))
    if prime:
        return [int(i) for i in vocab.encode(prime)], prime, missing
    for start in ("\n", " "):
        if start in vocab:
            return [vocab.index(start)], "", missing
    return [0], "", missing


# ------------------------------------------------------------------ the generator
@dataclass
class Carry:
    """What a conversation carries from one text to the next (`play` with `:keep on`): the
    logits of the next character after all the text so far (the stepper holds the hidden
    state). `logits` None: the next text starts afresh."""

    logits: np.ndarray | None = None


def generate(
    stepper: Stepper,
    vocab: Vocab,
    cfg: SampleConfig,
    unknown: str = "error",
    echo_prime: bool = True,
    on_end: Callable[[int], None] = lambda b: None,
    carry: Carry | None = None,
) -> Iterator[tuple[int, str]]:
    """Yield (sample index, text) pieces: the prime (if echoed), then one character at a time.

    Samples that hit a stop string end early (the stop string is included; `on_end(b)` is
    called then); the others go on. With a `carry` (one sample), the text goes on from where
    the last one stopped: the prime (if any) is read from that state, and the state after the
    text is kept in it.
    """
    ids, echo, _ = prime_ids(vocab, cfg.prime, unknown)
    batch = cfg.num_samples
    rng = np.random.default_rng(cfg.seed)
    if echo and echo_prime:
        for b in range(batch):
            yield b, echo
    if cfg.length == 0:
        return
    if carry is not None and carry.logits is not None:
        logits = carry.logits
        for i in ids if echo else []:  # (an empty prime stands for a newline only when starting afresh)
            logits = stepper.step(np.array([i], dtype=np.intp))
    else:
        logits = stepper.prime(ids, batch)
    alive = list(range(batch))  # the samples still going
    tails = [""] * batch  # the end of each generated text, to spot stop strings
    longest_stop = max((len(s) for s in cfg.stop), default=0)
    chars = vocab.chars
    for _ in range(cfg.length):
        next_ids = draw(probabilities(logits, cfg.temp, cfg.top_k, cfg.top_p), rng)
        picked = next_ids.tolist()
        for b in alive:
            yield b, chars[picked[b]]
        if longest_stop:
            for b in alive:
                tails[b] = (tails[b] + chars[picked[b]])[-longest_stop:]
            stopped = [b for b in alive if any(tails[b].endswith(s) for s in cfg.stop)]
            for b in stopped:
                on_end(b)
            alive = [b for b in alive if b not in stopped]
            if not alive:
                if carry is not None:
                    carry.logits = stepper.step(next_ids).copy()
                return
        logits = stepper.step(next_ids)
    if carry is not None:
        carry.logits = logits.copy()  # (a stepper may reuse its logits buffer)


def generate_text(stepper: Stepper, vocab: Vocab, cfg: SampleConfig, unknown: str = "error") -> list[str]:
    """The whole samples as strings (convenience for tests and the API)."""
    out = [""] * cfg.num_samples
    for b, piece in generate(stepper, vocab, cfg, unknown):
        out[b] += piece
    return out


class OneAfterAnother:
    """Samples generated side by side (one batch), written one after the other with `separator`
    between them: the first as it is generated, each next one when those before it have ended
    (what it had so far at once, then as it is generated). The text is the same as writing all
    of them at the end; the first character appears at once."""

    def __init__(self, write: Callable[[str], None], num_samples: int, separator: str):
        self.write, self.separator = write, separator
        self.held = [""] * num_samples  # what the samples after the current one have so far
        self.ended = [False] * num_samples
        self.current = 0

    def piece(self, b: int, text: str) -> None:
        if b == self.current:
            self.write(text)
        else:
            self.held[b] += text

    def end(self, b: int) -> None:
        self.ended[b] = True
        while self.ended[self.current] and self.current + 1 < len(self.held):
            self.current += 1
            self.write(self.separator + self.held[self.current])
            self.held[self.current] = ""

    def close(self) -> None:
        """Every sample has ended: write what is still held."""
        for b in range(len(self.held)):
            self.end(b)
