"""The batched engine (sample/batch.py) in a process of its own, for `charrnn serve`.

Why a process: the engine's step is some thirty small NumPy calls between the matrix products,
and each needs Python's lock (the GIL). In the server's process that lock is shared with the
event loop that parses requests and writes answers, and every time the step lets go of it for a
product it waits to get it back. Measured on this project's 2-core machine (LSTM 2x256, batch
16, one thread, the model's step alone, issue 23's note): the step took 410 us alone, 595 us beside a
thread of the same process that is busy in Python 30% of the time, and 428 us beside a process
that is as busy. So the server runs its engines in child processes and keeps only the HTTP side
in its own.

`EngineProcess` has the `Engine`'s interface (`submit`, `cancel`, `start`, `close`, `active`
and the counters) for the streams (`Stream`) of the server's process: a stream's settings and
its random numbers (`rng`, pickled, so its text is the one the in-thread engine draws: the same
code steps it) go to the child, which runs an `Engine` and sends back, at most every SEND_EVERY
seconds and at once when a stream ends, the characters each stream has drawn. A thread of the
server's process reads them into the streams (`text`, `logprobs`, then `stopped` and `done`,
and the callbacks), as the engine's thread did before.

The child is started with `spawn` (a fresh interpreter: forking a process that has run torch's
thread pools can hang the child), takes its weights from the parent (no file is read twice),
ignores Ctrl-C and SIGTERM (they reach the whole process group; the server ends it), and ends
when the server closes it or goes away (its pipe closes). If it dies after it started, its
streams end with "error" and a new one is started for the next; one that cannot start is said
(`wait_ready`, `failed`) and not tried again: from then on `submit` raises EngineUnavailable
(the server answers 503 with the reason).
"""

from __future__ import annotations

import atexit
import itertools
import math
import multiprocessing
import multiprocessing.util  # noqa: F401  (its exit handler registered before ours: see _kill_children)
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

from charrnn.errors import CharRNNError
from charrnn.sample.batch import Stream, claim

WIDE_BATCH = 32  # the batches whose products use a second core when one is free (see Engine._set_torch_threads)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
SEND_EVERY = 0.005  # seconds between the child's reports while streams are going (and at each end)


_children: set = set()  # the engine processes started here and not yet waited for
_readers: set = set()  # their reader threads still running
_exiting = False  # (set at exit: a child killed then is not restarted by its reader)


@atexit.register  # (after multiprocessing.util's import registered its own exit handler: ours runs first)
def _kill_children() -> None:
    """At exit: multiprocessing sends its daemon children SIGTERM and waits for them without a
    limit, and ours ignore SIGTERM (see child_main); an engine never closed would hang the exit
    (measured: a ready engine left open held a script's exit past 30 s; killed here, 3 s)."""
    global _exiting
    _exiting = True
    for process in list(_children):
        if process.is_alive():
            process.kill()
    # and their readers, which end on their pipe's EOF, are waited for: a daemon thread still
    # running when the interpreter finalises is ended by pthread_exit as it takes the lock back,
    # and that aborted the whole program now and then ("terminate called without an active
    # exception", exit code -6: 6 of 80 runs of a script leaving an engine open, beside a busy core;
    # 0 of 130 with this wait)
    deadline = time.monotonic() + 5.0
    for reader in list(_readers):
        reader.join(timeout=max(0.0, deadline - time.monotonic()))


class EngineUnavailable(RuntimeError):
    """The engine cannot take streams: closed, not started, or its process could not start."""


class EngineProcess:
    """An `Engine` for one model's weights, run in a child process (see the module's docstring)."""

    clock = staticmethod(time.monotonic)  # the streams' deadlines are on it: the child's clock too

    def __init__(self, weights, cfg, vocab, flops_per_row: float = 0.0, name: str = "charrnn-engine", siblings=None):
        self.weights, self.cfg, self.vocab = weights, cfg, vocab
        self.siblings = siblings  # (a shared array of each engine's rows, this one's index) in a pool
        self.flops_per_row = flops_per_row
        self.name = name
        self.steps = 0  # counters, as the child last reported them
        self.row_steps = 0
        self.step_seconds = 0.0
        self.threads_used: int | None = None
        self.restarts = 0
        self.failed: str | None = None  # why the child could not start
        self._live: dict[int, Stream] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()  # the pipe's sending end, `_live`, the child's start
        self._closed = False
        self._process = None
        self._conn = None
        self._ready = threading.Event()

    # ------------------------------------------------------------------ the server's side
    def start(self, name: str | None = None) -> EngineProcess:
        self.name = name or self.name
        self._spawn()
        return self

    def _spawn(self, replacing: bool = False) -> None:
        """A new child, its pipe and its reader. What is submitted meanwhile waits in the pipe;
        the lock is held only to swap them in (starting takes a second or two: the child reads
        its weights from us), so requests are not held up by a restart. `replacing` a child
        that ended: the streams sent to it end with "error" (those submitted from the swap on
        go to the new one)."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(
            target=child_main,
            args=(theirs, self.weights, self.cfg, self.vocab, self.flops_per_row, self.siblings),
            name=self.name,
            daemon=True,
        )
        with self._lock:
            if self._closed:
                return
            self._process, self._conn = process, ours
            self._ready.clear()
            lost, self._live = (list(self._live.values()), {}) if replacing else ([], self._live)
        for stream in lost:
            if stream.stopped is None:
                stream._end("error")
        # The child starts with Ctrl-C and SIGTERM blocked (a signal mask is inherited), and
        # ignores them from then on: they reach the whole process group, and the server ends it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS) if hasattr(signal, "pthread_sigmask") else None
        try:
            process.start()
        except Exception as exc:
            ours.close()  # (a send blocked on a full pipe, holding the lock, would wait forever)
            self._failed(f"the engine process of {self.name} could not start: {exc}")
            return
        finally:
            theirs.close()  # (the child holds its own copy: when it ends, our end reads EOF)
            if blocked is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        _children.add(process)
        if self.siblings is not None:
            self.siblings[2][self.siblings[1]] = process.pid  # (the siblings' meters count it from its start)
        with self._lock:
            closed = self._closed  # (closed while it started: `close` could not end it)
        if closed:
            process.kill()  # (SIGTERM is blocked, then ignored, in the child: see child_main)
            process.join(timeout=10)
            _children.discard(process)
            return
        reader = threading.Thread(target=self._read, args=(ours, process), name=f"{self.name}-reader", daemon=True)
        _readers.add(reader)
        reader.start()

    def _failed(self, why: str) -> None:
        """No child to run the streams: those sent end with "error", and so will any submitted."""
        with self._lock:
            self.failed = why
        self._end_all("error")

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Until the child has its stepper and reads what is sent (EngineUnavailable if it ended first)."""
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.failed:
                raise EngineUnavailable(self.failed)
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"the engine process of {self.name} did not start in {timeout:.0f} s")

    @property
    def active(self) -> int:
        return len(self._live)

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def submit(self, streams: list[Stream]) -> None:
        """Add streams; they join the child's batch at its next step, together."""
        claim(streams)
        with self._lock:
            if self._closed or self._conn is None or self.failed:
                raise EngineUnavailable(
                    self.failed or ("the engine is closed" if self._closed else "the engine is not started")
                )
            specs = []
            for s in streams:
                key = next(self._keys)
                self._live[key] = s
                specs.append(
                    (key, s.ids, s.rng, s.length, s.temp, s.top_k, s.top_p, s.stop, s.deadline, s.top_logprobs)
                )
            self._send(("submit", specs))

    def cancel(self, streams: list[Stream]) -> None:
        """End `streams` at the child's next step (their rows are freed there)."""
        for s in streams:
            s.cancelled = True
        wanted = set(streams)
        with self._lock:
            keys = [key for key, s in self._live.items() if s in wanted]
            if keys and not self._closed:
                self._send(("cancel", keys))

    def _send(self, message) -> None:  # (with the lock held)
        try:
            self._conn.send(message)
        except (OSError, ValueError):  # the child has gone: its reader ends the streams and starts another
            pass

    def close_soon(self) -> None:
        """Refuse new streams and tell the child to end (`close` waits for it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._conn is not None:
                self._send(("close",))

    CLOSE_WAIT = 10.0  # seconds a child that reads the pipe is given to end of itself

    def close(self, until: float | None = None) -> None:
        """End the child: one that reads the pipe is given until `until` (time.monotonic; CLOSE_WAIT
        from now if None) to end of itself; one still starting (importing torch, reading its
        weights: many seconds on a loaded machine) has nothing to finish and is killed at once,
        as is one that does not end. Killed, not terminated: the child ignores SIGTERM (see
        child_main)."""
        self.close_soon()
        until = time.monotonic() + self.CLOSE_WAIT if until is None else until
        with self._lock:
            process, conn = self._process, self._conn
        try:
            if process is not None and process.pid is not None:  # (one still starting is ended by _spawn)
                process.join(timeout=max(0.0, until - time.monotonic()) if self._ready.is_set() else 0)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=10)
                if not process.is_alive():
                    _children.discard(process)
        finally:
            if conn is not None:
                conn.close()
            self._end_all("cancelled")

    # ------------------------------------------------------------------ what the child says
    def _read(self, conn, process) -> None:
        """The reader thread of one child: hands its reports to the streams until it ends; then,
        if it had started, starts another (one that could not start is not tried again)."""
        try:
            self._read_until_the_end(conn, process)
        finally:
            _readers.discard(threading.current_thread())

    def _read_until_the_end(self, conn, process) -> None:
        started, said = False, None
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "update":
                self._apply(*message[1:])
            elif message[0] == "ready":
                started = True
                self._ready.set()
            elif message[0] == "failed":
                said = message[1]
        with self._lock:
            if self._closed or _exiting:  # (`close` waits for it: two threads reaping one child race)
                return
        process.join(timeout=5)
        _children.discard(process)
        with self._lock:
            if self._closed or process is not self._process:
                return
        why = said or (f"exit code {process.exitcode}" if process.exitcode is not None else "its pipe closed")
        if not started:
            self._failed(f"the engine process of {self.name} ended as it started ({why})")
            return
        print(f"charrnn: the engine process of {self.name} ended ({why}); starting another", file=sys.stderr)
        self.restarts += 1
        if self.siblings is not None:
            self.siblings[0][self.siblings[1]] = 0  # (its rows ended with it)
            self.siblings[2][self.siblings[1]] = 0  # (and its pid may be another process's soon)
        self._spawn(replacing=True)

    def _apply(self, texts, logprobs, ended, counters) -> None:
        self.steps, self.row_steps, self.step_seconds, self.threads_used = counters
        for key, text in texts.items():
            s = self._live.get(key)
            if s is None:
                continue
            if key in logprobs:  # (before the text, as the engine writes them: a reader of n characters finds n)
                s.logprobs.extend(logprobs[key])
            s.text.extend(text)
            if s.on_text is not None:
                for char in text:
                    s.on_text(s, char)
        for key, why in ended.items():
            with self._lock:
                s = self._live.pop(key, None)
            if s is not None:
                s._end(why)

    def _end_all(self, why: str) -> None:
        with self._lock:
            streams, self._live = list(self._live.values()), {}
        for s in streams:
            if s.stopped is None:
                s._end(why)


# ------------------------------------------------------------------ the child
def child_main(conn, weights, cfg, vocab, flops_per_row: float, siblings=None) -> None:
    """The engine's loop in the child: read what the server sends, step, report. In a pool
    (`siblings`: the shared array of each engine's rows, and this one's index), it writes its
    rows there at each step and shares the cores with the engines stepping beside it."""
    for sig in STOP_SIGNALS:  # (they reach the whole process group: the server ends us, or its pipe closing does)
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # (blocked while we started: see _spawn)
    try:
        from charrnn.machine.threads import set_blas_threads
        from charrnn.sample.batch import Engine
        from charrnn.sample.engines import cpu_stepper

        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(1)  # (until the thread policy has watched the load for a while)
        set_blas_threads(1)
        if siblings is not None:
            siblings[2][siblings[1]] = os.getpid()  # (for the others' meters)
        engine = Engine(
            cpu_stepper(weights, cfg),
            vocab,
            flops_per_row=flops_per_row,
            threads=thread_policy(siblings),
            wide_batch=WIDE_BATCH,
        )
        report = Report(conn, engine)
        streams: dict[int, Stream] = {}
        if siblings is not None:
            siblings[0][siblings[1]] = 0  # (a child that replaces one that died with rows: none now)
        conn.send(("ready",))
    except (EOFError, OSError):  # the server has gone already
        return
    except Exception as exc:  # said in one line by the server, which cannot serve without us
        try:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        return
    readable = _readable(conn)
    while True:
        busy = bool(engine.rows or engine._incoming)
        wait = 0.0 if busy else (SEND_EVERY if report.pending else None)
        try:
            while readable(wait):
                wait = 0.0
                message = conn.recv()
                if message[0] == "close":
                    return
                if message[0] == "submit":
                    new = [report.stream(streams, *spec) for spec in message[1]]
                    engine.submit(new)
                elif message[0] == "cancel":
                    for key in message[1]:
                        if key in streams:
                            streams[key].cancelled = True
            if engine.rows or engine._incoming:
                if siblings is not None:
                    engine.share = _stepping(siblings[0], siblings[1])
                engine.serving_step()
            if siblings is not None:
                siblings[0][siblings[1]] = len(engine.rows)
            for key in report.ended:
                streams.pop(key, None)
            report.send_if_due(busy=bool(engine.rows or engine._incoming))
        except (EOFError, OSError, BrokenPipeError):  # the server has gone
            return


def thread_policy(siblings=None):
    """An engine's thread policy: the cores free now, where a pool's engines (`siblings`: the
    shared rows, this one's index, the shared pids) are not load but the engine's own family;
    the engine then takes its share of them (`Engine.share`)."""
    from charrnn.machine.threads import CpuMeter, FreeCores

    if siblings is None:
        return FreeCores()
    pids = siblings[2]
    return FreeCores(meter=CpuMeter(own=FamilyCpu(lambda: [pid for pid in pids if pid])))


def _stepping(rows, index: int) -> int:
    """The engines of a pool stepping now: this one, and those with rows."""
    return 1 + sum(1 for i, n in enumerate(rows) if n and i != index)


def _readable(conn) -> Callable[[float | None], bool]:
    """conn.poll, at the cost of one system call: multiprocessing's builds a selector per call
    (~5 us, at every step of the engine: a tenth of a step of one row)."""
    if not hasattr(select, "poll"):  # (Windows: its pipes are not sockets)
        return conn.poll
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLHUP)
    return lambda timeout: bool(poller.poll(None if timeout is None else timeout * 1000))


class Report:
    """What the child has to tell the server: characters drawn, log-probabilities, ends."""

    def __init__(self, conn, engine):
        self.conn, self.engine = conn, engine
        self.texts: dict[int, list[str]] = {}
        self.logprobs: dict[int, list] = {}
        self.ended: dict[int, str] = {}
        self.sent = -math.inf

    @property
    def pending(self) -> bool:
        return bool(self.texts or self.ended)

    def stream(self, streams, key, ids, rng, length, temp, top_k, top_p, stop, deadline, top_logprobs) -> Stream:
        s = Stream(
            ids, rng, length, temp, top_k, top_p, tuple(stop), deadline, top_logprobs, self._took, self._ended, tag=key
        )
        streams[key] = s
        return s

    def _took(self, s: Stream, char: str) -> None:
        self.texts.setdefault(s.tag, []).append(char)
        if s.top_logprobs is not None:
            self.logprobs.setdefault(s.tag, []).append(s.logprobs[-1])

    def _ended(self, s: Stream) -> None:
        self.ended[s.tag] = s.stopped

    def send_if_due(self, busy: bool) -> None:
        now = time.monotonic()
        if not (self.ended or (self.texts and (not busy or now - self.sent >= SEND_EVERY))):
            return
        e = self.engine
        texts = {key: "".join(chars) for key, chars in self.texts.items()}
        counters = (e.steps, e.row_steps, e.step_seconds, e.threads_used)
        self.conn.send(("update", texts, self.logprobs, self.ended, counters))
        self.texts, self.logprobs, self.ended, self.sent = {}, {}, {}, now


class EnginePool:
    """Several engines of one model (`EngineProcess`es, one batch each) with the interface of one.
    A request's streams go together to the engine with the fewest streams among those the cores
    free allow: `free()` says how many cores the machine leaves to the pool (None: unknown, use
    every engine), asked every CHECK_EVERY seconds by a thread of the pool's. Each engine divides
    the cores its policy finds free (the pool's engines not counted as load) among the engines
    stepping (`Engine.share`), so one client alone still gets every core.

    Why: on this project's 2-core machine (LSTM 2x256, one thread each, the engine's loop alone),
    one engine stepping 16 rows drew ~31,000 characters/s, and a second torch thread for its
    products gave nothing more (31,300): a product of 16 rows takes 20-170 us, and two threads
    that split it wait for each other at each of the step's three. Two engines of 8 rows each,
    side by side, drew ~40,000 between them, and in `bench --serve` 16 clients got ~15% more
    than with one engine, 64 clients ~30% more (issue 23's note). Beside a busy core, though, two
    engines would share the one core left, each at half the batch, which the products do less
    well (a row of a batch of 8 costs ~1.5x a row of 16): so the second engine takes streams only
    while a core is free for it.
    """

    clock = EngineProcess.clock
    CHECK_EVERY = 2.0  # seconds between two asks of `free`

    def __init__(self, engines: list, free: Callable[[], int | None] | None = None):
        self.engines = engines
        self.free = free
        self.using = len(engines)  # the engines that take new streams now: the first `using`
        self.flops_per_row = getattr(engines[0], "flops_per_row", 0.0)
        self._stop = threading.Event()

    def start(self, name: str | None = None) -> EnginePool:
        for e in self.engines:
            e.start()
        if self.free is not None and len(self.engines) > 1:
            threading.Thread(target=self._watch, name="charrnn-engine-pool", daemon=True).start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.CHECK_EVERY):
            try:
                self.check()
            except Exception:  # (a meter that fails once: as it was, and asked again)
                pass

    def check(self) -> None:
        """How many engines take new streams, from the cores free over the last CHECK_EVERY."""
        free = self.free()
        if free is not None:
            self.using = max(1, min(len(self.engines), free))

    def wait_ready(self, timeout: float = 300.0) -> list[str]:
        """Until every engine is ready or has failed; returns why those failed (the others serve).
        EngineUnavailable if none could start."""
        failed = []
        for e in self.engines:
            try:
                e.wait_ready(timeout)
            except EngineUnavailable as exc:
                failed.append(str(exc))
        if len(failed) == len(self.engines):
            raise EngineUnavailable(failed[0])
        return failed

    def submit(self, streams: list[Stream]) -> None:
        """Add streams, together, to the engine with the fewest among those in use (and working)."""
        engines = self.engines[: self.using]
        working = [e for e in engines if not e.failed] or [e for e in self.engines if not e.failed] or engines
        min(working, key=lambda e: e.active).submit(streams)

    def cancel(self, streams: list[Stream]) -> None:
        for e in self.engines:
            e.cancel(streams)

    def close(self) -> None:
        """Every engine told to end at once, then each waited for, all within one CLOSE_WAIT (two
        hung engines are killed after 10 s, not 20)."""
        self._stop.set()
        for e in self.engines:
            e.close_soon()
        until = time.monotonic() + EngineProcess.CLOSE_WAIT
        for e in self.engines:
            e.close(until)

    @property
    def active(self) -> int:
        return sum(e.active for e in self.engines)

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self.engines)

    @property
    def row_steps(self) -> int:
        return sum(e.row_steps for e in self.engines)

    @property
    def step_seconds(self) -> float:
        """The engines' seconds in their model's steps, summed (two engines: up to 2 a second)."""
        return sum(e.step_seconds for e in self.engines)

    @property
    def threads_used(self) -> int | None:
        used = [e.threads_used for e in self.engines if e.threads_used is not None]
        return sum(used) if used else None

    @property
    def restarts(self) -> int:
        return sum(e.restarts for e in self.engines)


MAX_AUTO_ENGINES = 4  # serve --engines auto: one engine a core, at most this many (each holds the weights)


def engine_count(
    engines: str, cores: int | None = None, models: int = 1, measurable: bool | None = None, flag: str = "--engines"
) -> tuple[int, str | None]:
    """`serve --engines`: a positive number, or auto: the cores shared among the `models`, at most
    MAX_AUTO_ENGINES each; one where the load cannot be measured (not Linux: a second engine
    could not know when to step aside). A number above the cores is cut to them (an engine more
    would never take a request). Returns (the count, a line saying why it differs from the asked)."""
    from charrnn.machine.threads import CpuMeter, cores_here

    cores = cores_here() if cores is None else cores
    if engines == "auto":
        measurable = CpuMeter().available if measurable is None else measurable
        return (max(1, min(MAX_AUTO_ENGINES, cores // max(1, models))) if measurable else 1), None
    try:
        count = int(engines)
    except ValueError:
        count = 0
    if count < 1:
        raise CharRNNError(f"{flag} {engines!r} must be a positive number or auto")
    if count > cores:
        return cores, (
            f"{flag} {count}: {cores}, one a core (an engine more than the cores would never take a request)"
        )
    return count, None


def engine_pool(weights, cfg, vocab, flops_per_row: float, name: str, engines: int) -> EnginePool:
    """`engines` engine processes of one model, sharing an array of their rows and one of their
    pids, routed by the cores free outside the pool (the machine's load, less this process's and
    the engines')."""
    context = multiprocessing.get_context("spawn")
    rows = context.RawArray("i", engines) if engines > 1 else None
    pids = context.RawArray("i", engines) if engines > 1 else None
    processes = [
        EngineProcess(
            weights,
            cfg,
            vocab,
            flops_per_row,
            name=name if engines == 1 else f"{name}-{i + 1}",
            siblings=None if rows is None else (rows, i, pids),
        )
        for i in range(engines)
    ]
    pool = EnginePool(processes)
    if engines > 1:
        from charrnn.machine.threads import CpuMeter, FreeCores

        family = FamilyCpu(lambda: [e.pid for e in processes if e.pid], this_process=True)
        pool.free = FreeCores(meter=CpuMeter(own=family))
    return pool


class FamilyCpu:
    """CPU seconds of a family of processes (`pids()`, read from /proc; with `this_process`, this
    one's too), counted on: a process that ends, or is replaced by another, keeps the seconds it
    had, so the total never goes back (a meter would read that as a neighbour's load)."""

    def __init__(self, pids: Callable[[], list[int]], this_process: bool = False):
        self.pids, self.this_process = pids, this_process
        self._last: dict[int, float] = {}
        self._ended = 0.0

    def __call__(self) -> float:
        listed, now = self.pids(), {}
        for pid in listed:
            seconds = _process_cpu_seconds(pid)
            now[pid] = max(seconds or 0.0, self._last.get(pid, 0.0))  # (a read that fails: its last)
        for pid, seconds in self._last.items():
            if pid not in now:  # (left the family: an engine replaced, or ended)
                self._ended += seconds
        self._last = now
        own = sum(os.times()[:2]) if self.this_process else 0.0
        return own + self._ended + sum(now.values())


def _process_cpu_seconds(pid: int) -> float | None:
    """A process's CPU seconds (user and system), from /proc; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
