"""The engine in a process of its own (charrnn/sample/engine_process.py), as `charrnn serve` runs
it: the same texts as the engine in this process, and streams that end however the child does."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from charrnn.config import ModelConfig, SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN, numpy_weights
from charrnn.sample.batch import Engine, Stream, config_streams
from charrnn.sample.engine_process import (
    MAX_AUTO_ENGINES,
    EnginePool,
    EngineProcess,
    EngineUnavailable,
    _cpu_seconds,
    _stepping,
    engine_count,
    engine_pool,
)
from charrnn.sample.engines import cpu_stepper

VOCAB = Vocab(tuple(sorted("abcdefghijklmnopqrstuvwxyz .\n")))
WAIT = 120  # seconds: far beyond what a loaded machine needs; only a hang reaches it


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = CharRNN(ModelConfig(vocab_size=len(VOCAB), cell="lstm", layers=2, hidden=48, embed=16)).eval()
    weights = {name: 4 * w for name, w in numpy_weights(net.state_dict()).items()}  # a state that matters
    return weights, net.cfg


@pytest.fixture(scope="module")
def engine(model):
    weights, cfg = model
    engine = EngineProcess(weights, cfg, VOCAB, flops_per_row=1.0, name="test-engine").start()
    engine.wait_ready(WAIT)
    yield engine
    engine.close()


def streams(seed: int, n: int = 1, **settings) -> list[Stream]:
    cfg = SampleConfig(length=settings.pop("length", 60), seed=seed, num_samples=n, **settings)
    return config_streams(cfg, [int(i) for i in VOCAB.encode("the ")], **({"top_logprobs": 3} if seed == 7 else {}))


def requests() -> list[list[Stream]]:
    return [
        streams(1, 3, temp=0.8),
        streams(2, 1, top_k=5, length=200),
        streams(3, 2, top_p=0.9, stop=["k."]),
        streams(7, 1, temp=1.2),  # (with log-probabilities)
    ]


def test_its_texts_are_the_engine_in_this_process_texts(model, engine):
    """The child runs the same Engine on the same weights with the streams' own random numbers:
    every text, end and log-probability equals those of the engine in this process."""
    weights, cfg = model
    here, there = requests(), requests()
    local = Engine(cpu_stepper(weights, cfg), VOCAB)
    for group in here:
        local.submit(group)
    local.run_until_done([s for group in here for s in group])
    for group in there:
        engine.submit(group)
    for a, b in zip([s for g in here for s in g], [s for g in there for s in g]):
        assert b.done.wait(WAIT)
        assert (b.generated, b.stopped) == (a.generated, a.stopped)
        assert b.logprobs == a.logprobs
    assert there[2][0].stopped == "stop" or there[2][1].stopped == "stop"  # (the stop string is met)
    assert len(there[3][0].logprobs) == 60 and engine.active == 0
    assert engine.row_steps >= sum(len(s.generated) for g in there for s in g)  # (its counters came back)


def test_the_callbacks_run_in_this_process_in_order(engine):
    seen, ended = [], threading.Event()
    [s] = streams(4, length=40)
    s.on_text = lambda stream, char: seen.append(char)
    s.on_end = lambda stream: ended.set()
    engine.submit([s])
    assert ended.wait(WAIT) and s.done.is_set()
    assert "".join(seen) == s.generated and len(seen) == 40 and s.stopped == "length"


def test_a_cancelled_stream_frees_its_row_and_ends(engine):
    long = streams(5, length=10**6)[0]
    engine.submit([long])
    while not long.text:  # (drawing: its row is in the child's batch)
        assert not long.done.wait(0.01)
    engine.cancel([long])
    assert long.done.wait(WAIT) and long.stopped == "cancelled"
    assert 0 < len(long.text) < 10**6 and engine.active == 0


def test_a_deadline_passed_ends_the_stream_on_the_shared_clock(engine):
    [s] = config_streams(SampleConfig(length=10**6, seed=1), [1], deadline=engine.clock() - 1.0)
    engine.submit([s])
    assert s.done.wait(WAIT) and s.stopped == "max_seconds"


def test_a_child_that_dies_ends_its_streams_with_an_error_and_another_takes_over(model, capfd):
    weights, cfg = model
    engine = EngineProcess(weights, cfg, VOCAB, name="doomed").start()
    try:
        engine.wait_ready(WAIT)
        long = streams(6, length=10**6)[0]
        engine.submit([long])
        while not long.text:
            assert not long.done.wait(0.01)
        first = engine.pid
        os.kill(first, signal.SIGKILL)
        assert long.done.wait(WAIT) and long.stopped == "error"
        engine.wait_ready(WAIT)
        assert engine.pid != first and engine.restarts == 1
        [again] = streams(6, length=30)
        engine.submit([again])
        assert again.done.wait(WAIT) and again.stopped == "length" and len(again.generated) == 30
    finally:
        engine.close()
    assert "the engine process of doomed ended" in capfd.readouterr().err


def test_close_ends_what_is_going_and_refuses_more(model):
    weights, cfg = model
    engine = EngineProcess(weights, cfg, VOCAB).start()
    [s] = streams(8, length=10**6)
    engine.submit([s])  # (before the child is ready: the pipe holds it)
    engine.close()
    assert s.done.is_set() and s.stopped == "cancelled"
    assert not engine._process.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        engine.submit(streams(9))


def test_a_child_that_cannot_start_is_said(model):
    weights, cfg = model
    broken = {k: v for k, v in weights.items() if k != "head.weight"}
    engine = EngineProcess(broken, cfg, VOCAB, name="broken").start()
    try:
        with pytest.raises(RuntimeError, match="broken ended as it started"):  # (EngineUnavailable is one)
            engine.wait_ready(WAIT)
    finally:
        engine.close()


def test_submitting_before_start_is_refused(model):
    weights, cfg = model
    with pytest.raises(RuntimeError, match="not started"):
        EngineProcess(weights, cfg, VOCAB).submit(streams(1))
    assert np.isfinite(EngineProcess(weights, cfg, VOCAB).clock())


def test_a_process_that_cannot_be_started_is_said_and_close_still_works(model, monkeypatch):
    """`start` itself failing (no memory, no processes left): the engine says why, takes no
    streams, and closes cleanly (it joined a process never started, an AssertionError, before)."""
    import multiprocessing.context

    from charrnn.sample.engine_process import EngineUnavailable

    def refuse(self):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", refuse)
    weights, cfg = model
    engine = EngineProcess(weights, cfg, VOCAB, name="refused").start()
    with pytest.raises(EngineUnavailable, match="refused could not start: .*temporarily unavailable"):
        engine.wait_ready(WAIT)
    with pytest.raises(EngineUnavailable, match="could not start"):
        engine.submit(streams(1))
    engine.close()


# ------------------------------------------------------------------ a pool of engines (serve --engines)
class FakeEngine:
    def __init__(self, active: int = 0, failed: str | None = None):
        self.active, self.failed, self.got = active, failed, []

    def submit(self, streams):
        if self.failed:
            raise EngineUnavailable(self.failed)
        self.got.append(streams)
        self.active += len(streams)


def test_a_pool_gives_a_request_to_the_engine_with_fewest_streams_among_those_the_cores_allow():
    now, free = [0.0], [2]
    a, b = FakeEngine(), FakeEngine()
    pool = EnginePool([a, b], free=lambda: free[0], clock=lambda: now[0])
    pool.submit(streams(1, 3))  # (a tie: the first)
    pool.submit(streams(2, 1))
    pool.submit(streams(3, 1))
    assert [len(g) for g in a.got] == [3] and [len(g) for g in b.got] == [1, 1] and pool.using == 2
    free[0] = 1  # a neighbour took a core: the second engine takes nothing new...
    pool.submit(streams(4, 1))  # (...once the pool asks again: not before CHECK_EVERY)
    assert len(b.got) == 3
    now[0] = EnginePool.CHECK_EVERY
    pool.submit(streams(5, 1))
    pool.submit(streams(6, 1))
    assert len(a.got) == 3 and len(b.got) == 3 and pool.using == 1
    free[0] = None  # (the meter cannot say: as it was)
    now[0] += EnginePool.CHECK_EVERY
    pool.submit(streams(7, 1))
    assert len(a.got) == 4 and pool.using == 1
    assert pool.active == a.active + b.active == 3 + 2 + 1 + 3


def test_a_pool_skips_a_failed_engine_and_says_why_when_all_have():
    a, b = FakeEngine(failed="no memory"), FakeEngine(active=5)
    pool = EnginePool([a, b], free=lambda: 1)
    pool.submit(streams(1, 1))  # (the first is the one in use, but it failed: the other takes it)
    assert len(b.got) == 1
    b.failed = "no memory either"
    with pytest.raises(EngineUnavailable, match="no memory"):
        pool.submit(streams(2, 1))


def test_engines_auto_is_one_a_core_up_to_a_few():
    assert engine_count("auto", cores=1) == 1 and engine_count("auto", cores=2) == 2
    assert engine_count("auto", cores=64) == MAX_AUTO_ENGINES == 4 and engine_count("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(CharRNNError, match="must be a positive number or auto"):
            engine_count(bad)


def test_a_pool_of_two_processes_writes_the_texts_of_one_engine(model):
    """The requests spread over both engines (each its own process and batch), and each text is
    the one the engine in this process writes: a row does not depend on its batch."""
    weights, cfg = model
    here, there = requests(), requests()
    local = Engine(cpu_stepper(weights, cfg), VOCAB)
    for group in here:
        local.submit(group)
    local.run_until_done([s for group in here for s in group])
    pool = engine_pool(weights, cfg, VOCAB, 1.0, "test-pool", 2).start()
    try:
        pool.free = lambda: 2  # (however busy this machine is: both engines take requests)
        pool.wait_ready(WAIT)
        for group in there:
            pool.submit(group)
        for a, b in zip([s for g in here for s in g], [s for g in there for s in g]):
            assert b.done.wait(WAIT)
            assert (b.generated, b.stopped, b.logprobs) == (a.generated, a.stopped, a.logprobs)
        assert all(e.row_steps > 0 for e in pool.engines) and pool.row_steps == sum(e.row_steps for e in pool.engines)
        rows = pool.engines[0].siblings[0]
        long = streams(5, length=10**6)
        pool.submit(long)  # (to the first: both are idle)
        deadline = time.monotonic() + WAIT
        while list(rows[:]) != [1, 0]:  # (each engine writes its rows at each step, for the other to see)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pool.cancel(long)
        while any(rows[:]) and time.monotonic() < deadline:  # (each engine says its rows: none once done)
            time.sleep(0.01)
        assert list(rows[:]) == [0, 0] and pool.active == 0
    finally:
        pool.close()
    assert all(not e._process.is_alive() for e in pool.engines)


def test_an_engine_of_a_pool_counts_the_engines_stepping():
    assert _stepping([3, 0], 0) == 1 and _stepping([3, 2], 0) == 2 and _stepping([0, 5, 1], 2) == 2
    assert _stepping([0, 0, 0, 0], 3) == 1


def test_the_pool_meter_counts_the_engines_cpu_as_its_own():
    """The cores free for a second engine: the machine's load less this process's and the
    engines' (else two busy engines would see each other as a neighbour and stop using one)."""
    import subprocess
    import sys

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        engine = type("Engine", (), {"pid": busy.pid})()
        own = lambda: sum(os.times()[:2])  # noqa: E731
        before, own_before = _cpu_seconds([engine]), own()
        deadline = time.monotonic() + WAIT
        while (_cpu_seconds([engine]) - before) - (own() - own_before) < 0.3:  # (the engine's CPU, not ours)
            assert time.monotonic() < deadline, "the engine's CPU seconds were not counted"
            time.sleep(0.05)
    finally:
        busy.kill()
        busy.wait()
    assert _cpu_seconds([type("Gone", (), {"pid": busy.pid})()]) == pytest.approx(own(), abs=0.5)  # (one gone: 0)
