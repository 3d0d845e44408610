"""One engine for many streams: every text being generated is a row of one batch, stepped together.

A stream (`Stream`) is one text: the ids of its prime, its own temperature, top-k, top-p, random
numbers, stop strings, length and deadline. The engine (`Engine`) keeps the streams that are
going as the rows of one stepper's batch and, at each step,

1. lets in the streams submitted since the last step (each as a fresh, zero state) and lets out
   those that ended, were cancelled (a client gone) or ran out of time;
2. feeds every row one id: the next character of its prime while it is reading that, else the
   character it drew last, all in one batched step of the model;
3. draws the next character of each row that has read its whole prime, from that row's logits
   with that stream's settings and random numbers, and hands it over (`on_text`).

So a stream joins after its prime (read in the batch, beside the others: primes of streams that
arrive together are read together), leaves at any step, and the cost of a step is shared by all.
For an RNN this is all continuous batching needs: a stream's whole state is one row of h (and c).

What a stream writes depends on that stream alone: its random numbers come from its own
generator (`stream_rngs`: sample b of a request seeded s draws from `SeedSequence(s).spawn()`'s
b-th child, whatever the number of samples), the draw is per row (generate.draw_rows), and the
packed engine's rows do not depend on each other (packed_engine.py). One exception, said exactly:
a batch of one row runs NumPy's matrix-vector product, which rounds the last bits of a float32
differently from the batched product, so a stream that is alone for some of its steps and in a
batch for others can, where a draw falls within ~1e-7 of the edge between two characters, take
the other one; its text has the same distribution (tests/sample/test_batch.py measures it).

`charrnn sample` runs the engine in its own thread (`run_until_done`); `charrnn serve` in a
process of its own (sample/engine_process.py), fed by the HTTP side; `start` runs it in a thread.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from charrnn.sample.generate import draw_rows, probabilities

STOPPED = ("length", "stop", "max_seconds", "cancelled", "error")  # why a stream ended


def stream_rngs(seed: int | None, n: int) -> list[np.random.Generator]:
    """The random numbers of a request's n samples: the b-th child of the seed's sequence, so
    that sample b is the same text whatever n is. No seed: fresh entropy."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(n)]


@dataclass(eq=False)
class Stream:
    """One text being generated. The engine's thread writes `text`, `stopped` and `logprobs`;
    other threads read them, and set `cancelled` to end the stream at the next step."""

    ids: list[int]  # the prime, to read before the first draw (at least one id)
    rng: np.random.Generator
    length: int  # characters to draw
    temp: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # on the engine's clock
    top_logprobs: int | None = None  # report each drawn character's log-probability, and this many alternatives
    on_text: Callable[[Stream, str], None] | None = None  # called in the engine's thread, per character
    on_end: Callable[[Stream], None] | None = None  # called in the engine's thread, once
    tag: object = None  # the caller's (e.g. the sample's index)

    text: list[str] = field(default_factory=list)  # the characters drawn so far
    logprobs: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    stopped: str | None = None  # one of STOPPED, once ended
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    _read: int = 0  # prime ids read
    _last: int = -1  # the id drawn last
    _tail: str = ""  # the end of the text, to spot stop strings
    _submitted: bool = False

    @property
    def generated(self) -> str:
        return "".join(self.text)

    def _next_id(self) -> int:
        if self._read < len(self.ids):
            self._read += 1
            return self.ids[self._read - 1]
        return self._last

    def _end(self, why: str) -> None:
        self.stopped = why
        self.done.set()
        if self.on_end is not None:
            self.on_end(self)


class Engine:
    """Steps every active stream of one model as one batch. Thread-safe `submit` and `cancel`;
    the stepping runs in one thread (`start`), or in the caller's (`run_until_done`)."""

    THREADS_EVERY_S = 2.0  # how often the engine's thread asks `threads` how many cores to use

    def __init__(
        self,
        stepper,
        vocab,
        clock: Callable[[], float] = time.monotonic,
        flops_per_row: float = 0.0,
        threads: Callable[[], int | None] | None = None,
        wide_batch: int = 0,
    ):
        self.stepper, self.vocab, self.clock = stepper, vocab, clock
        self.threads = threads  # the threads to use now (None: as they are), asked every THREADS_EVERY_S
        self.wide_batch = wide_batch  # the batched products use the threads only from this many rows (else one)
        self.threads_used: int | None = None
        self.share = 1  # the engines stepping on these cores now, this one included (serve's pool sets it)
        self._policy: int | None = None  # what `threads` said last
        self._torch_threads: int | None = None
        self._threads_checked = -math.inf
        self.chars = vocab.chars
        self.rows: list[Stream] = []  # row i of the stepper's batch is rows[i]
        self._incoming: list[Stream] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        # counters, for the benchmark: steps, rows stepped, seconds in the model's step
        self.flops_per_row = flops_per_row
        self.steps = 0
        self.row_steps = 0
        self.step_seconds = 0.0

    # ------------------------------------------------------------------ from other threads
    def submit(self, streams: list[Stream]) -> None:
        """Add streams; they join the batch at the next step, together."""
        claim(streams)
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is closed")
            self._incoming.extend(streams)
            self._wake.notify()

    @staticmethod
    def cancel(streams: list[Stream]) -> None:
        for s in streams:
            s.cancelled = True

    def start(self, name: str = "charrnn-engine") -> Engine:
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for s in self.rows + self._incoming:
            if s.stopped is None:
                s._end("cancelled")
        self.rows, self._incoming = [], []

    @property
    def active(self) -> int:
        return len(self.rows) + len(self._incoming)

    # ------------------------------------------------------------------ the loop
    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._incoming and not self.rows:
                    self._wake.wait()
                if self._closed:
                    return
            self.serving_step()

    def serving_step(self) -> None:
        """One step of a serving loop: the threads as the policy says, and a step whose failure
        (a bug) is said and ends the streams of that step, not the engine."""
        self._choose_threads()
        try:
            self.step()
        except Exception:
            import traceback

            traceback.print_exc()
            for stream in self.rows:
                if stream.stopped is None:
                    stream._end("error")

    def _choose_threads(self) -> None:
        """The threads of this thread's products, from the cores free now: torch's (each thread
        has its own: a batch's products) and NumPy's BLAS (the one-row product). Idle, a second
        core nearly doubles either; beside a busy neighbour it costs several times over
        (README, Busy machines), so the count follows the load: the policy's (`threads`, asked
        every THREADS_EVERY_S), divided among the engines stepping now (`share`, read at every
        step: a sibling engine that starts stepping would otherwise find this one's threads on
        its core for up to two seconds)."""
        now = self.clock()
        if self.threads is not None and now - self._threads_checked >= self.THREADS_EVERY_S:
            self._threads_checked = now
            wanted = self.threads()
            if wanted is not None:
                self._policy = wanted
        if self._policy is None:
            return
        count = max(1, self._policy // max(1, self.share))
        if count != self.threads_used:
            from charrnn.machine.threads import set_blas_threads

            set_blas_threads(count)
            self.threads_used = count

    def _set_torch_threads(self) -> None:
        """torch's threads (the batched products'), set at each step for its batch: the count
        chosen, or one for a batch below `wide_batch`. In serve's engine process a second thread
        slowed a batch of 16 (24,111 against 18,372 characters/s for 16 clients, issue 23's
        note): the event loop keeps part of the other core busy, and the threads of a product
        wait for each other. (NumPy's BLAS, which steps a batch of one, keeps the count chosen:
        two were faster there.)"""
        if self.threads_used is None:
            return
        count = self.threads_used if len(self.rows) >= self.wide_batch else 1
        if count != self._torch_threads:
            torch = sys.modules.get("torch")  # (none where an .npz is sampled without torch)
            if torch is not None:
                torch.set_num_threads(count)
            self._torch_threads = count

    def run_until_done(self, streams: list[Stream]) -> None:
        """Step in this thread until every one of `streams` (submitted) has ended."""
        for _ in self.stepping(streams):
            pass

    def stepping(self, streams: list[Stream]) -> Iterator[None]:
        """Step in this thread until every one of `streams` (submitted) has ended, pausing after
        each step (a generator: the caller hands on what the step wrote, or stops early)."""
        while not all(s.done.is_set() for s in streams):
            self._choose_threads()
            self.step()
            yield

    def step(self) -> None:
        """One step of every active stream (see the module's docstring)."""
        self._admit()
        if not self.rows:
            return
        self._set_torch_threads()
        ids = np.fromiter((s._next_id() for s in self.rows), dtype=np.intp, count=len(self.rows))
        started = time.perf_counter()
        logits = self.stepper.step(ids)
        self.step_seconds += time.perf_counter() - started
        self.steps += 1
        self.row_steps += len(self.rows)
        groups: dict[tuple[float, int, float], list[int]] = {}  # the rows that draw, by their settings
        for r, s in enumerate(self.rows):
            if s._read == len(s.ids):
                groups.setdefault((s.temp, s.top_k, s.top_p), []).append(r)
        for (temp, top_k, top_p), rows in groups.items():
            streams = [self.rows[r] for r in rows]
            probs = probabilities(logits[rows], temp, top_k, top_p)
            u = np.fromiter((s.rng.random() for s in streams), dtype=np.float64, count=len(rows))
            for r, s, picked in zip(rows, streams, draw_rows(probs, u).tolist()):
                self._took(s, picked, logits, r)

    def _took(self, s: Stream, picked: int, logits: np.ndarray, row: int) -> None:
        char = self.chars[picked]
        s._last = picked
        if s.top_logprobs is not None:  # (before the text: a reader of n characters finds their n log-probabilities)
            s.logprobs.append(_logprobs(logits[row], picked, s.top_logprobs, self.chars))
        s.text.append(char)
        if s.on_text is not None:
            s.on_text(s, char)
        if s.stop:
            s._tail = (s._tail + char)[-max(map(len, s.stop)) :]
            if any(s._tail.endswith(x) for x in s.stop):
                s._end("stop")
                return
        if len(s.text) >= s.length:
            s._end("length")

    def _admit(self) -> None:
        """Let out the rows that ended, let in the streams submitted, in one `select`."""
        now = self.clock()
        for s in self.rows:
            if s.stopped is None and s.cancelled:
                s._end("cancelled")
            elif s.stopped is None and s.deadline is not None and now > s.deadline:
                s._end("max_seconds")
        with self._wake:
            incoming, self._incoming = self._incoming, []
        new = []
        for s in incoming:
            if s.cancelled:
                s._end("cancelled")
            elif s.length <= 0:
                s._end("length")
            else:
                new.append(s)
        kept = [r for r, s in enumerate(self.rows) if s.stopped is None]
        if len(kept) == len(self.rows) and not new:
            return
        if kept or new:
            self.stepper.select(np.array(kept + [-1] * len(new), dtype=np.intp))
        self.rows = [self.rows[r] for r in kept] + new


def claim(streams: list[Stream]) -> None:
    """Mark streams as submitted to an engine (a ValueError for one without a prime id, or one
    submitted before)."""
    for s in streams:
        if not s.ids:
            raise ValueError("a stream needs at least one id to read")
        if s._submitted:
            raise ValueError("a stream is submitted once")
        s._submitted = True


def _logprobs(logits: np.ndarray, picked: int, top: int, chars) -> tuple[float, dict[str, float]]:
    """The drawn character's log-probability under the model (before temperature and filters)
    and the `top` most likely characters' (OpenAI's `logprobs`)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max()
    logp = z - np.log(np.exp(z).sum())
    best = np.argsort(-logp, kind="stable")[:top]
    return float(logp[picked]), {chars[i]: float(logp[i]) for i in best}


def config_streams(
    cfg,
    ids: list[int],
    deadline: float | None = None,
    top_logprobs: int | None = None,
    on_text: Callable[[Stream, str], None] | None = None,
    on_end: Callable[[Stream], None] | None = None,
) -> list[Stream]:
    """The `cfg.num_samples` streams of one request (`SampleConfig`), tagged 0, 1, ...: each reads
    the prime `ids` and draws with the request's settings and its own random numbers."""
    return [
        Stream(
            list(ids),
            rng,
            cfg.length,
            cfg.temp,
            cfg.top_k,
            cfg.top_p,
            tuple(cfg.stop),
            deadline,
            top_logprobs,
            on_text,
            on_end,
            tag=b,
        )
        for b, rng in enumerate(stream_rngs(cfg.seed, cfg.num_samples))
    ]
