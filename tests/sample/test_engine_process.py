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
    FamilyCpu,
    _stepping,
    engine_count,
    engine_pool,
    thread_policy,
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


def drawn_here(weights, cfg) -> list[list[Stream]]:
    """`requests()`, drawn by the engine in this process: the texts to expect of a child."""
    here = requests()
    local = Engine(cpu_stepper(weights, cfg), VOCAB)
    for group in here:
        local.submit(group)
    local.run_until_done([s for group in here for s in group])
    return here


def test_its_texts_are_the_engine_in_this_process_texts(model, engine):
    """The child runs the same Engine on the same weights with the streams' own random numbers:
    every text, end and log-probability equals those of the engine in this process."""
    weights, cfg = model
    here, there = drawn_here(weights, cfg), requests()
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


class SlowToLoad:
    """Unpickled in the child, before its loop: `time.sleep(60)` (a child that starts slowly, as
    one importing torch on a loaded machine does). Put it last among the child's weights: what
    follows it (the config, the vocabulary) must fit in the pipe's buffer, or `start` waits for
    the child to read it."""

    def __reduce__(self):
        return (time.sleep, (60,))


def test_close_ends_a_child_still_starting(model):
    """A child that has not started reading the pipe is killed at once, not waited for: SIGTERM
    is blocked while it starts and ignored once it has (see child_main), and it has nothing to
    finish. (Waited for, it would end of itself after its 60 s: exit code 0, not -SIGKILL.)"""
    weights, cfg = model
    engine = EngineProcess({**weights, "slow": SlowToLoad()}, cfg, VOCAB)
    engine.CLOSE_WAIT = 300.0
    engine.start()
    [s] = streams(8, length=10)
    engine.submit([s])
    engine.close()
    assert s.done.is_set() and s.stopped == "cancelled"
    assert not engine._process.is_alive() and engine._process.exitcode == -signal.SIGKILL


def test_a_ready_child_ends_of_itself_and_one_past_its_deadline_is_killed(model):
    weights, cfg = model
    calm, late = (EngineProcess(weights, cfg, VOCAB).start() for _ in range(2))
    try:
        calm.wait_ready(WAIT)
        late.wait_ready(WAIT)
    finally:
        calm.close()
        late.close(until=time.monotonic())  # (the pool's deadline, passed already)
    assert calm._process.exitcode == 0 and late._process.exitcode == -signal.SIGKILL


def test_an_engine_never_closed_is_killed_at_exit_and_not_restarted(model, monkeypatch):
    """multiprocessing's exit handler sends SIGTERM, which the child ignores, and waits without a
    limit: ours, run first, kills what is left, and its reader starts no other."""
    from charrnn.sample import engine_process

    monkeypatch.setattr(engine_process, "_exiting", False)  # (restored after: the other tests' engines restart)
    weights, cfg = model
    engine = EngineProcess(weights, cfg, VOCAB).start()
    try:
        engine.wait_ready(WAIT)
        first = engine._process
        assert first in engine_process._children
        reader = next(t for t in threading.enumerate() if t.name == f"{engine.name}-reader")
        engine_process._kill_children()
        # its reader waited for: a daemon thread alive as the interpreter finalises is ended by
        # pthread_exit, which aborted such programs now and then (exit code -6)
        assert not reader.is_alive() and reader not in engine_process._readers
        first.join(WAIT)
        assert first.exitcode == -signal.SIGKILL
        time.sleep(0.5)  # (time for the reader to see the end; a restart would swap the process)
        assert engine._process is first and engine.restarts == 0
    finally:
        engine.close()
    assert first not in engine_process._children


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
    free = [2]
    a, b = FakeEngine(), FakeEngine()
    pool = EnginePool([a, b], free=lambda: free[0])
    pool.submit(streams(1, 3))  # (a tie: the first)
    pool.submit(streams(2, 1))
    pool.submit(streams(3, 1))
    assert [len(g) for g in a.got] == [3] and [len(g) for g in b.got] == [1, 1] and pool.using == 2
    free[0] = 1  # a neighbour took a core: the second engine takes nothing new once the pool checks
    pool.check()
    pool.submit(streams(5, 1))
    pool.submit(streams(6, 1))
    assert len(a.got) == 3 and len(b.got) == 2 and pool.using == 1
    free[0] = None  # (the meter cannot say: as it was)
    pool.check()
    pool.submit(streams(7, 1))
    assert len(a.got) == 4 and pool.using == 1
    free[0] = 8  # (more cores than engines: all of them)
    pool.check()
    assert pool.using == 2 and pool.active == a.active + b.active == 3 + 2 + 1 + 2


def test_a_pool_skips_a_failed_engine_and_says_why_when_all_have():
    a, b = FakeEngine(failed="no memory"), FakeEngine(active=5)
    pool = EnginePool([a, b], free=lambda: 1)
    pool.check()
    pool.submit(streams(1, 1))  # (the first is the one in use, but it failed: the other takes it)
    assert len(b.got) == 1
    b.failed = "no memory either"
    with pytest.raises(EngineUnavailable, match="^no memory$"):  # (the one in use says why)
        pool.submit(streams(2, 1))


def test_engines_auto_is_one_a_core_shared_among_the_models_and_a_number_is_cut_to_the_cores():
    auto = lambda cores, models=1, measurable=True: engine_count("auto", cores, models, measurable)  # noqa: E731
    assert auto(1) == (1, None) and auto(2) == (2, None) and auto(64) == (MAX_AUTO_ENGINES, None) == (4, None)
    assert auto(8, models=2) == (4, None) and auto(2, models=3) == (1, None)
    assert auto(8, measurable=False) == (1, None)  # (no load to measure: a second engine could not step aside)
    assert engine_count("2", cores=2) == (2, None)
    count, said = engine_count("8", cores=2)
    assert (
        count == 2 and said == "--engines 8: 2, one a core (an engine more than the cores would never take a request)"
    )
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(CharRNNError, match="must be a positive number or auto"):
            engine_count(bad, cores=2)


def test_a_pool_of_two_processes_writes_the_texts_of_one_engine(model):
    """The requests spread over both engines (each its own process and batch), and each text is
    the one the engine in this process writes: a row does not depend on its batch."""
    weights, cfg = model
    here, there = drawn_here(weights, cfg), requests()
    pool = engine_pool(weights, cfg, VOCAB, 1.0, "test-pool", 2)
    rows = pool.engines[0].siblings[0]
    rows[0] = rows[1] = 7  # (as a child that died while stepping 7 rows left them)
    pool.free = None  # (however busy this machine is: both engines take requests)
    pool.start()
    try:
        assert pool.wait_ready(WAIT) == []
        assert list(rows[:]) == [0, 0]  # (a child starting says it steps nothing yet)
        assert sorted(pool.engines[0].siblings[2][:]) == sorted(e.pid for e in pool.engines)  # (their pids)
        for group in there:
            pool.submit(group)
        for a, b in zip([s for g in here for s in g], [s for g in there for s in g]):
            assert b.done.wait(WAIT)
            assert (b.generated, b.stopped, b.logprobs) == (a.generated, a.stopped, a.logprobs)
        assert all(e.row_steps > 0 for e in pool.engines) and pool.row_steps == sum(e.row_steps for e in pool.engines)
        long = streams(5, length=10**6)
        pool.submit(long)  # (to the first: both are idle)
        deadline = time.monotonic() + WAIT
        while list(rows[:]) != [1, 0]:  # (each engine writes its rows at each step, for the other to see)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pool.cancel(long)
        assert long[0].done.wait(WAIT) and long[0].stopped == "cancelled"
        while any(rows[:]):  # (and none once done)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert pool.active == 0
    finally:
        pool.close()
    assert all(not e._process.is_alive() for e in pool.engines)


def test_a_pool_serves_with_the_engines_that_started(model):
    """One engine that cannot start leaves the others serving, and says why; none: refused."""
    weights, cfg = model
    broken = {k: v for k, v in weights.items() if k != "head.weight"}
    good = EngineProcess(weights, cfg, VOCAB, name="good")
    bad = EngineProcess(broken, cfg, VOCAB, name="bad")
    pool = EnginePool([bad, good]).start()
    try:
        [why] = pool.wait_ready(WAIT)
        assert why.startswith("the engine process of bad ended as it started") and "head.weight" in why
        [s] = streams(3, length=20)
        pool.submit([s])  # (the first engine is the one with fewest streams, but it failed)
        assert s.done.wait(WAIT) and len(s.generated) == 20 and good.row_steps > 0
    finally:
        pool.close()
    worse = EnginePool(
        [EngineProcess(broken, cfg, VOCAB, name="bad-1"), EngineProcess(broken, cfg, VOCAB, name="bad-2")]
    )
    try:
        with pytest.raises(EngineUnavailable, match="bad-1 ended as it started"):
            worse.start().wait_ready(WAIT)
    finally:
        worse.close()


def test_an_engine_of_a_pool_counts_the_engines_stepping():
    assert _stepping([3, 0], 0) == 1 and _stepping([3, 2], 0) == 2 and _stepping([0, 5, 1], 2) == 2
    assert _stepping([0, 0, 0, 0], 3) == 1


def test_a_family_s_cpu_counts_its_processes_and_keeps_what_one_that_ended_used():
    """The cores free for a second engine are the machine's load less the pool's own: the
    server's and every engine's (else two busy engines would see each other as a neighbour and
    stop using one); an engine that ends or is replaced keeps its seconds in the total, which a
    meter would otherwise read as a neighbour's load."""
    import subprocess
    import sys

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    pids = [busy.pid]
    family = FamilyCpu(lambda: pids)
    try:
        deadline = time.monotonic() + WAIT
        while family() < 0.3:  # (the busy process's CPU seconds, as /proc counts them)
            assert time.monotonic() < deadline, "its CPU seconds were not counted"
            time.sleep(0.05)
    finally:
        busy.kill()
        busy.wait()
    used = family()
    pids.clear()  # (gone from the family, as an engine replaced)
    assert family() == used >= 0.3
    mine = FamilyCpu(lambda: [], this_process=True)()
    assert mine == pytest.approx(sum(os.times()[:2]), abs=0.1)


def test_a_family_s_cpu_is_not_counted_twice_when_a_reading_fails(monkeypatch):
    from charrnn.sample import engine_process

    readings = iter([1.0, None, 1.5, 2.0])
    monkeypatch.setattr(engine_process, "_process_cpu_seconds", lambda pid: next(readings))
    pids = [42]
    family = FamilyCpu(lambda: pids)
    assert [family(), family(), family()] == [1.0, 1.0, 1.5]  # (a failed read: its last, not 0 then 2.5)
    pids.clear()
    assert family() == 1.5  # (gone: it keeps its seconds)


def test_a_pool_meter_does_not_count_its_engines_as_load(model):
    weights, cfg = model
    pool = engine_pool(weights, cfg, VOCAB, 1.0, "test-pool", 2)
    own = pool.free.meter.own
    assert isinstance(own, FamilyCpu) and own.this_process
    pool.engines[0]._process = type("Started", (), {"pid": os.getppid()})()  # (as if started: its pid is read)
    assert own.pids() == [os.getppid()]


def test_an_engine_of_a_pool_counts_its_siblings_cpu_as_its_own():
    """Each engine's thread policy: the cores free, its siblings not counted as load (the
    engines then share the cores by `Engine.share`), else two would count each other twice."""
    import multiprocessing

    pids = multiprocessing.get_context("spawn").RawArray("i", 3)
    pids[0], pids[2] = os.getpid(), os.getppid()
    own = thread_policy((None, 0, pids)).meter.own
    assert isinstance(own, FamilyCpu) and not own.this_process and own.pids() == [os.getpid(), os.getppid()]
    assert not isinstance(thread_policy(None).meter.own, FamilyCpu)  # (an engine alone: its own CPU only)


def test_a_started_pool_asks_the_cores_free_every_so_often(monkeypatch):
    class Startable(FakeEngine):
        def start(self):
            pass

        def close_soon(self):
            pass

        def close(self, until=None):
            pass

    asked = threading.Event()
    monkeypatch.setattr(EnginePool, "CHECK_EVERY", 0.01)
    pool = EnginePool([Startable(), Startable()], free=lambda: asked.set() or 1).start()
    try:
        assert asked.wait(WAIT)
    finally:
        pool.close()
    deadline = time.monotonic() + WAIT
    while pool.using != 1:  # (the watcher sets it after asking)
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_pool_waits_for_its_engines_within_one_deadline():
    """Every engine is told to end before any is waited for, and all are waited for until one
    deadline: two that hang are killed after CLOSE_WAIT, not one CLOSE_WAIT each."""
    said = []

    class Hanging(FakeEngine):
        def close_soon(self):
            said.append(("told", self))

        def close(self, until=None):
            said.append(("waited", until))

    engines = [Hanging(), Hanging()]
    before = time.monotonic()
    EnginePool(engines).close()
    assert [what for what, _ in said] == ["told", "told", "waited", "waited"]
    (_, first), (_, second) = said[2:]
    assert first == second and first is not None and before < first <= time.monotonic() + EngineProcess.CLOSE_WAIT


def test_a_program_that_leaves_an_engine_open_still_exits(tmp_path):
    """The exit handler's order: ours (killing the engines) before multiprocessing's (which would
    wait for a child that ignores its SIGTERM, forever: seen, with ours not registered)."""
    import subprocess
    import sys

    script = tmp_path / "leave_open.py"
    script.write_text(
        "from charrnn.config import ModelConfig\n"
        "from charrnn.data.vocab import Vocab\n"
        "from charrnn.model import CharRNN, numpy_weights\n"
        "from charrnn.sample.engine_process import EngineProcess\n"
        "if __name__ == '__main__':\n"
        "    vocab = Vocab(tuple(sorted('ab \\n')))\n"
        "    net = CharRNN(ModelConfig(vocab_size=len(vocab), layers=1, hidden=8, embed=4)).eval()\n"
        "    EngineProcess(numpy_weights(net.state_dict()), net.cfg, vocab).start().wait_ready(120)\n"
        "    print('ready', flush=True)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=WAIT)
    assert done.returncode == 0 and done.stdout == "ready\n", done.stderr
    assert "starting another" not in done.stderr
