"""Beam search: the most likely continuations of a prime, found deterministically.

Sampling draws one character at a time; beam search keeps the `width` most likely texts so far
(by the sum of their characters' log-probabilities), extends each by every character, and keeps
the `width` best of those, until `length` characters were added. Width 1 is greedy decoding;
a width of V^(length-1) or more is exhaustive search. A text that reaches a stop string is
finished and keeps its score. With `norm` > 0 the texts are compared by score / length^norm, so
that finished (shorter) texts are not favoured merely for being short.

The engine ("stepper") computes the logits as for sampling; `select(rows)` makes its hidden
state follow the beams kept (row i of the new state is row rows[i] of the old).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.sample.generate import Stepper

MAX_BEAM = 32  # the widest beam `play` and `serve` accept (its memory grows with the width)


@dataclass
class Beam:
    ids: list[int]  # the characters added after the prime
    logprob: float  # their summed log-probability (nats)
    finished: bool = False  # ended by a stop string

    def score(self, norm: float) -> float:
        return self.logprob / max(1, len(self.ids)) ** norm if norm else self.logprob


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(B, V) logits -> (B, V) log-probabilities, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def best_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """The indices of the k largest scores, best first; ties go to the lower index, so the
    result does not depend on how the sort breaks them."""
    k = min(k, scores.size)
    return np.lexsort((np.arange(scores.size), -scores))[:k]


def beam_search(
    stepper: Stepper,
    prime: list[int],
    length: int,
    width: int,
    chars: tuple[str, ...] | None = None,
    stops: tuple[str, ...] = (),
    norm: float = 0.0,
) -> list[Beam]:
    """The `width` best continuations of `prime` (ids) of up to `length` characters, best
    first. `chars` (the vocabulary) is needed only to spot `stops`."""
    if length == 0:
        return [Beam([], 0.0)]
    logp = log_softmax(stepper.prime(prime, width))[0]  # every row is the same text yet
    first = best_indices(logp, width)
    beams = [Beam([int(c)], float(logp[c])) for c in first]
    stepper.select(np.zeros(len(beams), dtype=np.intp))
    done: list[Beam] = []  # finished by a stop string: set aside with their scores
    for _ in range(length - 1):
        alive = [i for i, beam in enumerate(beams) if not _ends(beam, chars, stops)]
        if len(alive) < len(beams):
            done += [beam for i, beam in enumerate(beams) if i not in set(alive)]
            beams = [beams[i] for i in alive]
            if not beams:
                break
            stepper.select(np.array(alive, dtype=np.intp))
        logp = log_softmax(stepper.step(np.array([b.ids[-1] for b in beams], dtype=np.intp)))  # (B, V)
        total = np.array([b.logprob for b in beams])[:, None] + logp
        parents, picked = np.divmod(best_indices(total.ravel(), width), logp.shape[1])
        beams = [Beam(beams[p].ids + [int(c)], float(total[p, c])) for p, c in zip(parents, picked)]
        stepper.select(parents.astype(np.intp))
    for beam in done + beams:
        beam.finished = _ends(beam, chars, stops)
    return sorted(done + beams, key=lambda b: -b.score(norm))[:width]


def _ends(beam: Beam, chars: tuple[str, ...] | None, stops: tuple[str, ...]) -> bool:
    """Whether the beam's text ends with a stop string."""
    if not stops or chars is None:
        return False
    tail = "".join(chars[i] for i in beam.ids[-max(len(s) for s in stops) :])
    return any(tail.endswith(s) for s in stops)


def beam_texts(stepper: Stepper, vocab, cfg, unknown: str = "error", echo_prime: bool = True) -> list[str]:
    """The texts of the best cfg.num_samples beams of width cfg.beam (a SampleConfig: prime,
    length, stop, beam, beam_norm), best first, each after its prime if `echo_prime`."""
    from charrnn.sample.generate import prime_ids

    ids, echo, _ = prime_ids(vocab, cfg.prime, unknown)
    beams = beam_search(stepper, ids, cfg.length, cfg.beam, vocab.chars, tuple(cfg.stop), cfg.beam_norm)
    return [
        (echo if echo_prime else "") + "".join(vocab.chars[i] for i in beam.ids) for beam in beams[: cfg.num_samples]
    ]
