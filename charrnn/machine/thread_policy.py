"""The thread count of a training, re-chosen while it runs.

`ThreadPolicy` starts from the free cores (`threads.free_cores`) and re-chooses while a run goes:
after a first window, whenever the load of others changes, whenever the speed falls well below
what the current setting reached, and every minute, it runs a few real training steps at each
candidate count (a probe) and keeps the fastest (a `Decision`). Probing steps are ordinary steps;
only how many threads compute them changes. Pure logic with injected clocks and readings, so the
decisions are tested on fake inputs. Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from charrnn.machine.threads import CpuMeter, free_cores


@dataclass
class Decision:
    """What a probe found: the thread count kept, why the probe ran, speed by thread count."""

    threads: int
    previous: int
    reason: str
    rates: dict[int, float] = field(default_factory=dict)
    others: float | None = None

    def describe(self) -> str:
        measured = ", ".join(f"{n} → {rate:,.0f}" for n, rate in sorted(self.rates.items()))
        load = "" if self.others is None else f"; other processes use {self.others:.1f} cores"
        verb = f"{self.previous} → {self.threads}" if self.threads != self.previous else f"keeping {self.threads}"
        return f"threads {verb} ({self.reason}{load}; chars/s by threads: {measured})"


class ThreadPolicy:
    """Chooses the number of threads of a training from the free cores and measured speed.

    Call `step_done(seconds)` after every training step with its duration (evaluation and
    saving excluded). It returns the thread count to use from the next step on whenever that
    changes (during a probe too), and `decision` holds the outcome of the last probe until
    `take_decision()` collects it.
    """

    WINDOW_S = 3.0  # speed is judged over windows of this many seconds
    REPROBE_S = 60.0  # a probe at least this often, so that cores a neighbour frees come back
    PROBE_S = 0.5  # each candidate runs at least this long, and at least PROBE_STEPS steps
    PROBE_STEPS = 2
    SLOW = 0.75  # a window this much slower than the setting reached triggers a probe
    BETTER = 1.05  # another count must beat the current one by this much to replace it

    def __init__(
        self,
        cores: int,
        meter: CpuMeter | None = None,
        clock: Callable[[], float] = time.monotonic,
        probe: bool = True,
        siblings: int = 0,
        chars_per_step: float = 1.0,
    ):
        self.cores, self.meter, self.clock, self.probe_allowed, self.siblings = (
            cores,
            meter,
            clock,
            probe and cores > 1,
            siblings,
        )
        self.chars_per_step = chars_per_step  # the unit of the speeds reported (a step always does the same work)
        self.others = meter.others() if meter is not None else None
        self.threads = self._suggested = free_cores(
            cores, self.others, siblings
        )  # what the load suggested at the last choice
        self.reference: dict[int, float] = {}  # the best window rate (steps/s) at each count since it was last probed
        self.decision: Decision | None = None
        self._window_start, self._window_steps, self._window_seconds = clock(), 0, 0.0
        self._last_probe: float | None = None  # None: the first window has not ended yet
        self._probe: list[int] = []  # candidates still to measure
        self._probe_reason = ""
        self._rates: dict[int, float] = {}
        self._measuring: tuple[int, int, float] | None = None  # (count, steps, seconds) of the candidate running
        self._before_probe = self.threads
        self._rewarm, self._rewarms = False, 0  # (interrupted)

    def take_decision(self) -> Decision | None:
        decision, self.decision = self.decision, None
        return decision

    REWARMS = 2  # steps of a candidate left unmeasured after work between steps, at most

    @property
    def settled(self) -> int:
        """The count for work between training steps (an evaluation, a live sample): `threads`
        outside a probe; during one, the count it started from, not the candidate it measures."""
        return self._before_probe if self._measuring else self.threads

    def interrupted(self) -> None:
        """Work ran between two steps at `settled`: the candidate's next step is not measured
        (switching the threads back slows it), REWARMS times a candidate at most, so that a probe
        ends whatever runs between its steps."""
        if self._measuring and self._rewarms < self.REWARMS:
            self._rewarm = True

    # ------------------------------------------------------------------ steady running
    def step_done(self, seconds: float) -> int | None:
        if self._measuring:
            return self._probe_step(seconds)
        self._window_steps += 1
        self._window_seconds += seconds
        now = self.clock()
        if now - self._window_start < self.WINDOW_S:
            return None
        rate = self._window_steps / max(self._window_seconds, 1e-9)
        self._window_start, self._window_steps, self._window_seconds = now, 0, 0.0
        others = self.meter.others() if self.meter is not None else None
        self.others = others if others is not None else self.others
        suggested = free_cores(self.cores, others, self.siblings, own=self.threads)
        if not self.probe_allowed:  # follow the load alone
            if others is None or suggested == self.threads:
                return None
            self.decision = Decision(suggested, self.threads, "the load of other processes changed", {}, others)
            self.threads = self._suggested = suggested
            return suggested
        suggested = suggested if others is not None else self._suggested
        reason = self._why_probe(rate, now, suggested)
        self.reference[self.threads] = max(rate, self.reference.get(self.threads, 0.0))
        return self._start_probe(reason, suggested) if reason else None

    def _why_probe(self, rate: float, now: float, suggested: int) -> str | None:
        if self._last_probe is None:
            return "first measurement"
        if suggested != self._suggested:  # (not: differs from the count a probe chose)
            return "the load of other processes changed"
        if rate < self.SLOW * self.reference.get(self.threads, 0.0):
            return "speed fell"
        if now - self._last_probe >= self.REPROBE_S:
            return "regular check"
        return None

    # ------------------------------------------------------------------ probing
    def _candidates(self) -> list[int]:
        counts = {self.threads, self._suggested, max(1, self.threads // 2), min(self.cores, self.threads * 2)}
        return sorted(counts, key=lambda n: (n != self.threads, n))  # the current count first

    def _start_probe(self, reason: str, suggested: int) -> int | None:
        self._suggested = suggested
        self._probe, self._probe_reason, self._rates = self._candidates(), reason, {}
        self._before_probe = self.threads
        return self._next_candidate()

    def _next_candidate(self) -> int | None:
        count = self._probe.pop(0)
        self._rewarm, self._rewarms = False, 0
        self._measuring = (count, -1, 0.0)  # -1: the first step after a change warms up, uncounted
        if count == self.threads:
            self._measuring = (count, 0, 0.0)
            return None
        self.threads = count
        return count

    def _probe_step(self, seconds: float) -> int | None:
        count, steps, total = self._measuring
        if self._rewarm:  # the first step after work between steps: not measured
            self._rewarm, self._rewarms = False, self._rewarms + 1
            return None
        steps, total = (steps + 1, total + seconds) if steps >= 0 else (0, 0.0)
        self._measuring = (count, steps, total)
        if steps < self.PROBE_STEPS or total < self.PROBE_S:
            return None
        self._rates[count] = steps / total
        if self._probe:
            return self._next_candidate()
        return self._finish_probe()

    def _finish_probe(self) -> int | None:
        current = self._before_probe
        best = max(self._rates, key=self._rates.get)
        if self._rates[best] < self.BETTER * self._rates.get(current, 0.0):
            best = current
        rates = {n: rate * self.chars_per_step for n, rate in self._rates.items()}
        self.decision = Decision(best, current, self._probe_reason, rates, self.others)
        self.reference = {best: self._rates[best]}
        self._measuring, self._last_probe = None, self.clock()
        self._window_start, self._window_steps, self._window_seconds = self.clock(), 0, 0.0
        if self.meter is not None:
            self.meter.others()  # the next window's load excludes the probe
        changed = best != self.threads
        self.threads = best
        return best if changed else None
