"""The batched generation engine (charrnn/sample/batch.py): streams joining and leaving one batch,
each with its own settings, random numbers and bounds; and the packed engine's promise that a
row's numbers do not depend on the rows beside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from charrnn.config import ModelConfig, SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.model import CharRNN, numpy_weights
from charrnn.sample.batch import Engine, Stream, config_streams, stream_rngs
from charrnn.sample.numpy_engine import FusedStepper
from charrnn.sample.packed_engine import PackedStepper

VOCAB = Vocab(tuple(sorted("abcdefghijklmnopqrstuvwxyz .\n")))


class Successor:
    """A stepper whose every row says "the character after the last one read" (peaked logits),
    keeping its rows as the engine asks: a wrong row kept or fed shows in the text."""

    def __init__(self, size: int):
        self.size, self.last = size, np.zeros(0, np.intp)
        self.batches: list[int] = []

    def select(self, rows):
        rows = np.asarray(rows)
        self.last = np.where(rows < 0, -1, self.last[np.maximum(rows, 0)] if len(self.last) else -1)

    def step(self, ids):
        assert len(ids) == len(self.last), "the engine fed a batch of another size than it selected"
        self.batches.append(len(ids))
        self.last = np.asarray(ids).copy()
        logits = np.full((len(ids), self.size), -30.0, np.float32)
        logits[np.arange(len(ids)), (self.last + 1) % self.size] = 30.0
        return logits


def ids(text: str) -> list[int]:
    return [int(i) for i in VOCAB.encode(text)]


def successors(text: str, n: int) -> str:
    chars = VOCAB.chars
    out, last = [], chars.index(text[-1])
    for _ in range(n):
        last = (last + 1) % len(chars)
        out.append(chars[last])
    return "".join(out)


def greedy(prime: str, length: int, **kw) -> Stream:
    return Stream(ids(prime), np.random.default_rng(0), length, temp=0.0, **kw)


def test_streams_join_and_leave_the_batch_each_with_its_own_text():
    engine = Engine(Successor(len(VOCAB)), VOCAB)
    first = [greedy("ab", 12), greedy("x", 3), greedy("hello", 7)]
    engine.submit(first)
    for _ in range(4):
        engine.step()
    late = [greedy("q", 5), greedy("mm", 9)]
    engine.submit(late)  # they join mid-way, while "x" has ended and left
    while engine.rows or engine._incoming:
        engine.step()
        if all(s.stopped for s in first + late):
            engine.step()  # (the last ended rows leave at the next step)
            break
    for s, prime in zip(first + late, ("ab", "x", "hello", "q", "mm")):
        assert s.generated == successors(prime, s.length) and s.stopped == "length", prime
    assert engine.stepper.batches[:4] == [3, 3, 3, 2] and max(engine.stepper.batches) == 4  # "x" left, two joined


def test_a_prime_is_read_before_the_first_draw_and_the_time_bound_covers_it():
    now = [0.0]
    engine = Engine(Successor(len(VOCAB)), VOCAB, clock=lambda: now[0])
    long_prime = greedy("abcdefghij" * 5, 10, deadline=2.0)
    short = greedy("z", 100, deadline=2.0)
    engine.submit([long_prime, short])
    for _ in range(5):
        engine.step()
    assert long_prime.text == [] and len(short.text) == 5  # still reading its 50 characters
    now[0] = 3.0  # past the deadline
    engine.step()
    assert long_prime.stopped == short.stopped == "max_seconds" and long_prime.generated == ""
    assert len(short.text) == 5  # the text so far is kept


def test_stop_strings_cancel_and_length_zero():
    engine = Engine(Successor(len(VOCAB)), VOCAB)
    stop = greedy("a", 50, stop=("ef",))
    cancelled = greedy("a", 50)
    empty = greedy("a", 0)
    ended = []
    for s in (stop, cancelled, empty):
        s.on_end = ended.append
    engine.submit([stop, cancelled, empty])
    engine.step()
    engine.cancel([cancelled])
    engine.run_until_done([stop, cancelled, empty])
    assert stop.generated == "bcdef" and stop.stopped == "stop"  # the stop string is kept
    assert cancelled.stopped == "cancelled" and cancelled.generated == "b"
    assert empty.stopped == "length" and empty.generated == ""
    assert sorted(map(id, ended)) == sorted(map(id, (stop, cancelled, empty)))  # each ended once


def test_a_samples_random_numbers_do_not_depend_on_how_many_samples():
    one = stream_rngs(7, 1)[0].random(5)
    assert np.array_equal(stream_rngs(7, 4)[0].random(5), one)
    second = [rng.random(5) for rng in stream_rngs(7, 4)][1]
    assert not np.array_equal(second, one) and np.array_equal(stream_rngs(7, 2)[1].random(5), second)
    assert not np.array_equal(stream_rngs(8, 1)[0].random(5), one)


def test_each_stream_draws_with_its_own_settings():
    """Side by side in one batch: a greedy stream, a hot one, and a top-k 1 one (greedy too)."""
    engine = Engine(Successor(len(VOCAB)), VOCAB)
    cfg = SampleConfig(length=20, temp=5.0, seed=3)
    hot = config_streams(cfg, ids("a"))[0]
    cold = greedy("a", 20)
    top1 = Stream(ids("a"), np.random.default_rng(1), 20, temp=5.0, top_k=1)
    engine.submit([hot, cold, top1])
    engine.run_until_done([hot, cold, top1])
    with pytest.raises(ValueError, match="once"):
        engine.submit([hot])
    assert cold.generated == top1.generated == successors("a", 20)
    assert hot.generated == successors("a", 20)  # (the successor's logits are too sure for any temperature)


# ----------------------------------------------------------------- the real model, packed
@pytest.fixture(scope="module", params=["lstm", "gru", "rnn"])
def weights(request):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(VOCAB), cell=request.param, layers=2, hidden=48, embed=16)).eval()
    weights = {name: 4 * w for name, w in numpy_weights(model.state_dict()).items()}  # a state that matters to the text
    return weights, model.cfg


def run_packed(weights, streams: list[Stream], join_at: dict[int, list[Stream]] | None = None) -> None:
    w, cfg = weights
    engine = Engine(PackedStepper(w, cfg.cell, cfg.layers, cfg.hidden), VOCAB)
    engine.submit(streams)
    step = 0
    while not all(s.done.is_set() for s in streams + [x for group in (join_at or {}).values() for x in group]):
        for s in (join_at or {}).get(step, []):
            engine.submit([s])
        engine.step()
        step += 1


def request(seed: int, prime: str = "the ", length: int = 120, stop=()) -> Stream:
    return config_streams(SampleConfig(length=length, temp=1.0, seed=seed, stop=list(stop)), ids(prime))[0]


def test_a_streams_text_is_the_same_whatever_streams_are_beside_it(weights):
    """Bit for bit: the packed rows do not depend on each other, in any batch of two or more."""
    make = [lambda: request(1), lambda: request(2, "a", 400)] + [
        lambda i=i: request(10 + i, "zq", 30 + 17 * i, stop=(" ",)) for i in range(6)
    ]
    make_late = {5: lambda: request(50, "x"), 40: lambda: request(51, "y. ", 200), 41: lambda: request(52, "\n", 5)}
    crowd, late = [m() for m in make], {step: [m()] for step, m in make_late.items()}
    run_packed(weights, crowd, late)
    for m, s in zip(make + list(make_late.values()), crowd + [x for group in late.values() for x in group]):
        pair = [m(), request(99, "b", 500)]  # the companion keeps the batch at two throughout
        run_packed(weights, pair)
        assert s.generated == pair[0].generated and s.stopped == pair[0].stopped
    assert len(crowd[0].generated) == 120 and len(set(s.generated for s in crowd)) == len(crowd)


def test_one_row_alone_differs_from_a_batch_only_by_rounding(weights):
    """A batch of one takes NumPy's matrix-vector product (the packed one costs more there): its
    logits agree with the batched ones to float32 rounding, which is why a stream alone for part
    of its life may draw another character where u falls on an edge (sample/batch.py)."""
    w, cfg = weights
    w = {name: x / 4 for name, x in w.items()}  # as initialised: rounding is not amplified
    packed = PackedStepper(w, cfg.cell, cfg.layers, cfg.hidden)
    fused = FusedStepper(w, cfg.cell, cfg.layers, cfg.hidden)
    rng = np.random.default_rng(0)
    seq = rng.integers(0, len(VOCAB), (5, 40))
    packed.select(np.full(5, -1))
    alone = []
    for r in range(5):
        packed_one = PackedStepper(w, cfg.cell, cfg.layers, cfg.hidden)
        packed_one.select(np.array([-1]))
        fused.reset(1)
        for t in range(40):
            a, b = packed_one.step(seq[r : r + 1, t]), fused.step(seq[r : r + 1, t])
        assert np.array_equal(a, b)  # one row: the NumPy step itself
        alone.append(a[0].copy())
    for t in range(40):
        batched = packed.step(seq[:, t])
    np.testing.assert_allclose(batched, np.stack(alone), rtol=0, atol=2e-5)


@pytest.mark.parametrize("kind", ["numpy", "packed", "torch"])
def test_select_keeps_the_rows_asked_for_and_starts_new_ones_from_zero(weights, kind):
    w, cfg = weights
    if kind == "torch":
        from charrnn.sample.torch_engine import TorchStepper

        model = CharRNN(cfg).eval()
        model.load_state_dict({name: torch.from_numpy(x) for name, x in w.items()})
        make = lambda: TorchStepper(model)  # noqa: E731
    else:
        kind_class = FusedStepper if kind == "numpy" else PackedStepper
        make = lambda: kind_class(w, cfg.cell, cfg.layers, cfg.hidden)  # noqa: E731
    rng = np.random.default_rng(1)
    history, after = rng.integers(0, len(VOCAB), (3, 6)), rng.integers(0, len(VOCAB), 3)
    stepper = make()
    stepper.select(np.full(3, -1))
    for t in range(6):
        stepper.step(history[:, t])
    stepper.select(np.array([2, -1, 0, -1]))
    got = stepper.step(np.r_[after, after[0]]).copy()
    expected = []
    for old, new in ((2, after[0]), (None, after[1]), (0, after[2]), (None, after[0])):
        alone = make()
        alone.select(np.array([-1]))
        for t in range(6 if old is not None else 0):
            alone.step(history[old : old + 1, t])
        expected.append(alone.step(np.array([new]))[0].copy())
    np.testing.assert_allclose(got, np.stack(expected), rtol=0, atol=1e-4)


def test_the_engines_thread_uses_the_cores_its_policy_finds_free():
    """In its own thread (serve), the engine asks `threads` every THREADS_EVERY_S on its clock and
    sets that thread's torch threads and NumPy's BLAS threads; None keeps them."""
    now, answers, seen = [0.0], iter([1, None, 2]), []

    from threadpoolctl import threadpool_info

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    class Recording(Successor):
        def step(self, ids):
            seen.append((now[0], torch.get_num_threads()))
            blas.append(blas_threads())
            return super().step(ids)

    blas: list[list[int]] = []

    engine = Engine(Recording(len(VOCAB)), VOCAB, clock=lambda: now[0], threads=lambda: next(answers))
    engine.start()
    try:
        for t in (0.0, 1.0, 2.5, 5.0):
            now[0] = t
            s = greedy("a", 3)
            engine.submit([s])
            assert s.done.wait(30)
    finally:
        engine.close()
    by_time = {t: n for t, n in seen}
    assert by_time[0.0] == 1 and by_time[1.0] == 1  # asked at 0.0 (1); not again before 2.0
    assert by_time[2.5] == 1 and by_time[5.0] == 2  # asked at 2.5 (None: kept), at 5.0 (2)
    assert engine.threads_used == 2
    assert blas[-1] and set(blas[-1]) == {2} and set(blas[0]) == {1}  # NumPy's BLAS follows too


def test_a_small_batch_keeps_its_products_on_one_thread():
    """With `wide_batch` (serve's engine process), torch's threads are the count chosen only for
    batches that large; smaller ones take one (a second thread slowed a batch of 16 there). NumPy's
    BLAS (the batch of one) keeps the count chosen."""
    seen = []

    class Recording(Successor):
        def step(self, ids):
            seen.append((len(ids), torch.get_num_threads()))
            return super().step(ids)

    before = torch.get_num_threads()
    try:
        engine = Engine(Recording(len(VOCAB)), VOCAB, threads=lambda: 2, wide_batch=3)
        pair = [greedy("a", 4), greedy("b", 8)]
        engine.submit(pair)
        for _ in range(2):
            engine._choose_threads()
            engine.step()
        trio = [greedy("c", 3) for _ in range(3)]
        engine.submit(trio)
        engine.run_until_done(pair + trio)
    finally:
        torch.set_num_threads(before)
    assert seen[0] == (2, 1) and (5, 2) in seen and seen[-1] == (1, 1)
    assert all(n == (2 if rows >= 3 else 1) for rows, n in seen) and engine.threads_used == 2


def test_a_failing_step_ends_its_streams_and_the_engine_goes_on(capsys):
    class Failing(Successor):
        fail = True

        def step(self, ids):
            if self.fail:
                self.fail = False
                raise FloatingPointError("a bug")
            return super().step(ids)

    engine = Engine(Failing(len(VOCAB)), VOCAB).start()
    try:
        first = greedy("a", 5)
        engine.submit([first])
        assert first.done.wait(30) and first.stopped == "error"
        second = greedy("a", 5)
        engine.submit([second])
        assert second.done.wait(30) and second.generated == "bcdef"
    finally:
        engine.close()
    assert "FloatingPointError: a bug" in capsys.readouterr().err


def test_choosing_threads_needs_no_torch(monkeypatch):
    """Sampling an .npz where torch is missing: the engine sets NumPy's threads, imports nothing."""
    import sys

    from charrnn.machine import threads as machine_threads

    set_to = []
    monkeypatch.setattr(machine_threads, "set_blas_threads", set_to.append)
    monkeypatch.setitem(sys.modules, "torch", None)  # (as if it could not be imported)
    engine = Engine(Successor(len(VOCAB)), VOCAB, threads=lambda: 1)
    engine._choose_threads()
    assert set_to == [1] and engine.threads_used == 1


def test_an_engine_shares_its_threads_with_the_engines_stepping_beside_it(monkeypatch):
    """In serve's pool each engine takes its share of the cores the policy finds free: at the
    step after a sibling starts or stops stepping (`share`), not at the policy's next ask."""
    from charrnn.machine import threads as machine_threads

    set_to = []
    monkeypatch.setattr(machine_threads, "set_blas_threads", set_to.append)
    now = [0.0]
    engine = Engine(Successor(len(VOCAB)), VOCAB, clock=lambda: now[0], threads=lambda: 2)
    engine._choose_threads()
    assert engine.threads_used == 2
    now[0] = 0.5  # (the policy is not asked again before THREADS_EVERY_S)
    engine.share = 2
    engine._choose_threads()
    assert engine.threads_used == 1
    engine.share = 3  # (at least one)
    engine._choose_threads()
    engine.share = 1
    engine._choose_threads()
    assert set_to == [2, 1, 2] and engine.threads_used == 2
