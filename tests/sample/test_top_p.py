"""Top-p (nucleus) sampling on hand-made distributions: the smallest set of the most likely
characters whose mass reaches p, at its boundary, and after the temperature and top-k.

The distributions are powers of two, so that every sum the filter makes is exact and a mass
that equals p is p, not a rounding of it."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn.sample.generate import probabilities


def logits_of(*probs: float) -> np.ndarray:
    return np.log(np.array([probs], dtype=np.float64))


def halving(*powers: int) -> np.ndarray:
    """Logits of probabilities in proportion to 2 ** -power: exact ones for small powers (exp of
    -ln 2 and -2 ln 2 are 0.5 and 0.25 in floating point; of -3 ln 2, not quite 0.125)."""
    return np.log(2.0) * -np.array([powers], dtype=np.float64)


def kept(logits: np.ndarray, temp: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> set[int]:
    return set(np.flatnonzero(probabilities(logits, temp, top_k, top_p)[0]).tolist())


HALVES = halving(0, 1, 2, 2)  # 0.5, 0.25, 0.125, 0.125


def test_the_distributions_are_exact():
    assert probabilities(HALVES)[0].tolist() == [0.5, 0.25, 0.125, 0.125]
    assert probabilities(np.zeros((1, 4)))[0].tolist() == [0.25] * 4


@pytest.mark.parametrize(
    "top_p, size",
    [
        (0.25, 1),
        (0.5, 1),  # the first character's mass reaches 0.5 exactly: nothing more is needed
        (0.5 + 1e-9, 2),
        (0.75, 2),  # 0.5 + 0.25 reaches 0.75 exactly
        (0.75 + 1e-9, 3),  # one of the two tied at 0.125
        (0.875, 3),
        (0.875 + 1e-9, 4),
        (1.0, 4),
    ],
)
def test_the_smallest_set_of_the_most_likely_whose_mass_reaches_p(top_p, size):
    chosen = kept(HALVES, top_p=top_p)
    assert len(chosen) == size and set(range(min(size, 2))) <= chosen, chosen  # (2 and 3 are tied)


def test_a_character_whose_mass_before_it_equals_p_is_left_out():
    uniform = np.zeros((1, 4))
    assert len(kept(uniform, top_p=0.5)) == 2  # 0.25 + 0.25 = 0.5 exactly: two are enough
    assert len(kept(uniform, top_p=0.5 + 1e-9)) == 3
    assert len(kept(uniform, top_p=0.25)) == 1
    np.testing.assert_array_equal(np.sort(probabilities(uniform, 1.0, 0, 0.5)[0]), [0, 0, 0.5, 0.5])


def test_the_kept_characters_are_renormalised():
    np.testing.assert_array_equal(probabilities(HALVES, 1.0, 0, 0.75)[0], [2 / 3, 1 / 3, 0, 0])


def test_top_p_applies_to_the_probabilities_after_the_temperature():
    """At temp 1 the first character holds 0.5 and top-p 0.6 needs the second too; at temp 0.5
    the probabilities are squared and renormalised (0.5, 0.25, 0.125, 0.125 -> 16, 4, 1, 1 / 22),
    so the first alone holds 0.73: it is kept alone. At temp 2 they flatten and more are kept."""
    assert kept(HALVES, 1.0, 0, 0.6) == {0, 1}
    assert kept(HALVES, 0.5, 0, 0.6) == {0}
    np.testing.assert_allclose(probabilities(HALVES, 0.5, 0, 0.8)[0], [0.8, 0.2, 0, 0])  # 16/20, 4/20
    sqrt = np.sqrt([0.5, 0.25, 0.125, 0.125])  # temp 2
    assert sqrt[0] / sqrt.sum() < 0.4 and kept(HALVES, 2.0, 0, 0.4) == {0, 1}
    assert kept(HALVES, 1.0, 0, 0.4) == {0}


def test_top_p_applies_after_top_k():
    """Top-k 2 leaves 0.5 and 0.25, renormalised to 2/3 and 1/3: the first alone reaches 0.6.
    (Top-p first, on the whole distribution, would need two.)"""
    assert kept(HALVES, 1.0, 0, 0.6) == {0, 1}
    assert kept(HALVES, 1.0, 2, 0.6) == {0}
    np.testing.assert_array_equal(probabilities(HALVES, 1.0, 2, 0.6)[0], [1, 0, 0, 0])


def test_temperature_then_top_k_then_top_p():
    """0.5, 0.25, 0.125, 0.0625, 0.0625 at temp 0.5: squared, 64, 16, 4, 1, 1 / 86; top-k 3:
    64, 16, 4 / 84, where the first two hold 80/84 = 0.952 < 0.96: three are kept, 0.94: two.
    In another order the sets differ: top-p before top-k (on / 86: 80/86 = 0.930 < 0.94) keeps
    three at 0.94, and at temp 1 (0.5, 0.25, 0.125 / 0.875) two hold only 0.857."""
    logits = logits_of(0.5, 0.25, 0.125, 0.0625, 0.0625)
    np.testing.assert_allclose(probabilities(logits, 0.5, 3, 0.96)[0], np.array([64, 16, 4, 0, 0]) / 84)
    np.testing.assert_allclose(probabilities(logits, 0.5, 3, 0.94)[0], [0.8, 0.2, 0, 0, 0])
    assert kept(logits, 1.0, 3, 0.94) == {0, 1, 2}
    assert kept(logits, 0.5, 0, 0.94) == {0, 1, 2}


def test_rows_are_filtered_each_on_its_own():
    logits = np.concatenate([HALVES, halving(2, 2, 1, 0)])
    probs = probabilities(logits, 1.0, 0, 0.75)
    np.testing.assert_array_equal(probs, [[2 / 3, 1 / 3, 0, 0], [0, 0, 1 / 3, 2 / 3]])


# ------------------------------------------------------------ what top-p is given: the filters before it
def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_the_defaults_filter_nothing():
    logits = np.array([[0.3, -1.2, 2.0, 0.0]])
    np.testing.assert_allclose(probabilities(logits), softmax(logits), rtol=1e-12)


def test_rows_of_any_scale_each_sum_to_one():
    """Each row is normalised on its own, after subtracting its own maximum: logits in the
    thousands neither overflow nor make another row underflow, and float32 logits give float64
    probabilities."""
    logits = np.array([[0.0, -1.0, -2.0, -3.0], [2000.0, 1999.0, 1998.0, 1000.0], [-1500.0, -1500.0, -1501.0, -1502.0]])
    for temp, top_k, top_p in [(1.0, 0, 1.0), (0.7, 3, 1.0), (1.3, 0, 0.8), (1.0, 2, 0.9)]:
        probs = probabilities(logits.astype(np.float32), temp, top_k, top_p)
        assert probs.dtype == np.float64 and probs.shape == logits.shape
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
        for row, z in zip(probs, logits):
            expected = softmax(z / temp)
            if top_k:
                expected = np.where(z >= np.sort(z)[-top_k], expected, 0.0)
            order = np.argsort(-expected, kind="stable")
            before = np.cumsum(expected[order] / expected.sum()) - expected[order] / expected.sum()
            expected[order[before >= top_p]] = 0.0
            np.testing.assert_allclose(row, expected / expected.sum(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("vocab", [10, 3000])
def test_top_k_keeps_the_k_largest_wherever_they_are(vocab):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, vocab))
    for k in (1, 3, 9):
        kept_sets = [set(np.flatnonzero(row).tolist()) for row in probabilities(logits, 1.0, k)]
        assert kept_sets == [set(np.argsort(-row)[:k].tolist()) for row in logits]
    assert (probabilities(logits, 1.0, vocab) > 0).all() and (probabilities(logits, 1.0, 0) > 0).all()


def test_top_p_1_keeps_every_character_however_unlikely():
    """(The mass before the last of them rounds to 1.0: it must not be cut.)"""
    logits = np.array([[0.0, 0.0, -50.0]])  # e^-50 / 2: about 1e-22
    probs = probabilities(logits, 1.0, 0, 1.0)[0]
    assert probs[2] > 0 and np.cumsum(probs)[1] == 1.0


def test_a_temperature_too_small_to_divide_by_is_greedy_and_quiet():
    """logits / temp overflows to inf (and inf - inf to nan): those rows are the argmax, without
    a floating-point error or warning; the other rows are untouched."""
    logits = np.array([[1.0, 3.0, 2.0], [0.5, -1.0, 0.2], [0.0, 1e-300, 0.0]])
    greedy_rows = probabilities(logits, 0.0)
    assert greedy_rows.tolist() == [[0, 1, 0], [1, 0, 0], [0, 1, 0]]
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        for temp in (1e-320, 1e-308, 5e-324):
            assert np.array_equal(probabilities(logits, temp), greedy_rows), temp
            assert np.array_equal(probabilities(logits, temp, 2, 0.5), greedy_rows), temp
        mixed = probabilities(np.array([[1.0, 3.0, 2.0], [1e-310, 0.0, 0.0]]), 1e-300)  # only the first overflows
    assert mixed[0].tolist() == [0, 1, 0] and mixed[1].tolist() == pytest.approx(softmax([1e-10, 0, 0]))
