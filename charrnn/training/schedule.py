"""How far a run has gone and what is left of it: the fraction done of its limits (steps, epochs,
--time-budget), the learning rate at a step (warm-up, then constant or cosine), and the time a
--time-budget run keeps for its end (the final evaluation, last.pt, a live sample), measured as
it goes (`Costs`).

`TimeBudget` is the one owner of a run's time. Its queries (`fraction_done`, `time_left`, ...)
only read; it changes in three named places: `begin` (start-up counts), `count_until` (the time
since the last count is training time) and `keep` (the reserve all processes agreed on; once the
time is up by the reserve in force, it stays up, so that a reserve that shrinks later starts
nothing again).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable

import numpy as np

from charrnn.config import TrainConfig
from charrnn.store.metadata import Progress


@dataclasses.dataclass
class Costs:
    """What the parts of a run cost, measured as it goes (seconds), so that a --time-budget run
    keeps enough time for its end. Guesses stand in until a part has run once."""

    step: float | None = None  # the latest training step
    eval_per_char: float | None = None  # the latest evaluation, per validation character of this process
    step_at_eval: float | None = None  # the step time when it was measured
    save: float | None = None  # the latest checkpoint save
    sample_per_char: float | None = None  # the latest live sample

    guess_save: float = 0.5  # stand-ins, set from the model's size and step time (TimeBudget.step_timed)
    guess_sample_per_char: float = 0.005

    def save_s(self) -> float:
        return self.guess_save if self.save is None else self.save

    def sample_s(self, chars: int) -> float:
        return chars * (self.guess_sample_per_char if self.sample_per_char is None else self.sample_per_char)


# The time a run's end keeps for its final evaluation, over that evaluation's estimate. With half a
# step kept for the step that crosses the mark (until 2026-12-07), an evaluation that cost what it
# was estimated to got less than that whenever that step ended past its middle: a 1,200 s run's
# was cut to 104,448 of 111,539 characters (6%, about a step of its 2x512). Evaluations on a shared
# machine also vary by a few percent; 10% more costs ~0.4 s of a 600 s run (2x512).
EVAL_MARGIN = 1.1


def lr_at(cfg: TrainConfig, step: int, fraction: float) -> float:
    """The learning rate of step `step` (0-based) at `fraction` of the run: a linear warm-up over
    --warmup steps, then --lr (constant) or a cosine from --lr to --lr x --min-lr-frac."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
    if cfg.lr_schedule == "constant":
        return cfg.lr * warm
    floor = cfg.min_lr_frac
    return cfg.lr * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction)))


class TimeBudget:
    """The limits of a run and the time it has spent, in seconds of `clock`.

    `val_chars`: the validation characters this process evaluates; `chars_per_step`: the
    characters of one of its training steps; `parameters`: the model's (a save writes them)."""

    def __init__(
        self,
        cfg: TrainConfig,
        chunks_per_epoch: int,
        clock: Callable[[], float],
        val_chars: float,
        chars_per_step: int,
        parameters: int,
    ):
        self.cfg, self.chunks_per_epoch, self.clock = cfg, chunks_per_epoch, clock
        self.val_chars, self.chars_per_step, self.parameters = val_chars, chars_per_step, parameters
        self.costs = Costs()
        self.last_eval_seconds = 0.0  # the latest one (the cost of the next where no validation was timed)
        self.reserve = 0.0  # seconds kept for the end of a --time-budget run (agreed by all processes)
        self.time_up = False
        self._recent_steps: collections.deque[float] = collections.deque(maxlen=25)
        self._tick = clock()  # progress.train_seconds counts up to this reading

    # ----------------------------------------------------------------- queries
    def limit_fractions(self, progress: Progress) -> dict[str, float]:
        """How far along each limit that is set the run is, by the flag that sets it."""
        cfg, fracs = self.cfg, {}
        if cfg.max_steps:
            fracs[f"--max-steps {cfg.max_steps}"] = progress.step / cfg.max_steps
        if cfg.max_epochs:
            fracs[f"--max-epochs {cfg.max_epochs:g}"] = progress.step / (cfg.max_epochs * self.chunks_per_epoch)
        if cfg.time_budget:  # the clock runs until the time kept for the end of the run; then it is up
            fracs[f"--time-budget {cfg.time_budget:g}"] = 1.0 if self.time_up else self._time_fraction(progress)
        return fracs

    def fraction_done(self, progress: Progress) -> float:
        """How far through training the run is, by the first limit that will be reached."""
        fracs = self.limit_fractions(progress).values()
        return min(1.0, max(fracs)) if fracs else 0.0

    def limits_reached(self, progress: Progress) -> str:
        """The flags of the limits the run has reached, joined ("" while none is)."""
        return ", ".join(flag for flag, frac in self.limit_fractions(progress).items() if frac >= 1.0)

    def _time_fraction(self, progress: Progress) -> float:
        return progress.train_seconds / max(self.budget_end() - self.reserve, 1e-9)

    def budget_end(self) -> float:
        """When a --time-budget run aims to end, in seconds of the run: 1% past the budget, since
        the cost guesses err early and a budget promises that much training."""
        return 1.01 * self.cfg.time_budget

    def elapsed(self, progress: Progress) -> float:
        """Seconds of the run so far, the time since the last count included."""
        return progress.train_seconds + self.clock() - self._tick

    def time_left(self, progress: Progress) -> float:
        """Seconds left of --time-budget (infinite without one)."""
        if not self.cfg.time_budget:
            return math.inf
        return self.budget_end() - self.elapsed(progress)

    def room_for_sample(self, progress: Progress, chars: int) -> bool:
        """Whether the time left holds a live sample of `chars` and the save that may follow it."""
        return self.time_left(progress) > self.costs.save_s() + self.costs.sample_s(chars)

    def eval_deadline(self, progress: Progress, sample_chars: int) -> float | None:
        """The clock reading at which an evaluation starting now must stop, so that the save and
        a live sample of `sample_chars` still fit in --time-budget; None without a budget."""
        ends = self.time_left(progress) - self.costs.save_s() - self.costs.sample_s(sample_chars)
        return self.clock() + max(ends, 0.0) if math.isfinite(ends) else None

    def eval_s(self) -> float:
        """What an evaluation would take now: its measured cost, scaled by how much slower steps
        are now than then (before one ran: a forward pass costs about a third of a training step)."""
        c = self.costs
        step = c.step or 0.0
        if c.eval_per_char is not None:
            return c.eval_per_char * self.val_chars * (step / c.step_at_eval if c.step_at_eval and step else 1.0)
        return step * self.val_chars / self.chars_per_step / 3

    def eval_room(self, progress: Progress) -> bool:
        """Whether an evaluation due by --eval-every runs: always without a --time-budget or with
        --eval-share 0, and the run's first (also without a validation split: then the latest
        one's time is the next one's cost; after a resume, until one is timed, a guess); else
        while the evaluations, this one included, take at most --eval-share of the run's time so
        far, and not when the final one comes first (`final_comes_first`). Evaluating the
        validation tenth of a 1 M-character text every 200 steps took ~7% of a 600 s run's time
        on 2 cores (LSTM 2x512, bf16: ~4 s of each ~59 s; `make demo`'s 200 K characters every
        200 steps of 16 streams, ~15%), time its training lacked; the best loss comes at the
        cosine's end, not from evaluations on the way."""
        share = self.cfg.eval_share
        if not self.cfg.time_budget or not share or not progress.eval_seconds:
            return True
        cost = self.eval_s() if self.val_chars else self.last_eval_seconds  # (a guess until one is timed)
        if self.final_comes_first(progress, cost):
            return False
        return progress.eval_seconds + cost <= share * progress.train_seconds

    def final_comes_first(self, progress: Progress, cost: float) -> bool:
        """Whether, after an evaluation of `cost` seconds now, --time-budget would be up (by the
        reserve in force) sooner than --eval-every more steps at today's step time: the final
        evaluation would follow within fewer steps than apart, and this one only take time from
        the last steps (`make demo`, 2026-12-07: evaluations at steps 2,000 and 2,018, ~6 s of
        300). Skipped, its time goes to training."""
        if not self.cfg.time_budget or not self.costs.step:
            return False
        left = self.budget_end() - self.reserve - progress.train_seconds - cost
        return left < self.cfg.eval_every * self.costs.step

    def end_reserve(self, sample_chars: int) -> float:
        """Seconds a --time-budget run keeps for its end, so that the whole command ends on time
        and its final evaluation is whole: that evaluation (its measured cost, scaled by how much
        slower steps are now than then, and EVAL_MARGIN more), a live sample of `sample_chars`
        and the save, and a step (the time is found up after a step, which can end anywhere up
        to a step past the mark). At most half the budget."""
        if not self.cfg.time_budget:
            return 0.0
        c = self.costs
        return min(
            0.5 * self.cfg.time_budget,
            EVAL_MARGIN * self.eval_s() + c.sample_s(sample_chars) + c.save_s() + (c.step or 0),
        )

    # ----------------------------------------------------------------- changes
    def begin(self, progress: Progress, started_at: float) -> float:
        """Start-up (since `started_at`) counts against the budget; returns now."""
        now = self.clock()
        progress.train_seconds += now - started_at
        self._tick = now
        return now

    def count_until(self, now: float, progress: Progress) -> float:
        """The seconds since the last count are the run's; returns them."""
        seconds = now - self._tick
        progress.train_seconds += seconds
        self._tick = now
        return seconds

    def keep(self, reserve: float, progress: Progress) -> None:
        """The reserve all processes agreed on, with their agreed seconds in `progress`: once the
        time is up by the reserve in force (the old one, then the new), it stays up."""
        self.time_up = self.time_up or (bool(self.cfg.time_budget) and self._time_fraction(progress) >= 1.0)
        self.reserve = reserve
        self.time_up = self.time_up or (bool(self.cfg.time_budget) and self._time_fraction(progress) >= 1.0)

    def step_timed(self, seconds: float) -> None:
        """A training step took `seconds`. Also the guesses for what has not run yet: a save
        writes the weights and two AdamW moments (at a modest 200 MB/s); a live sample's
        character costs about a forward time step of the batch, a third of a training step over
        seq_len (at least 0.5 ms)."""
        c = self.costs
        self._recent_steps.append(seconds)
        c.step = float(np.median(self._recent_steps))  # one slow step under load would swing the reserve
        c.guess_save = 0.01 + 12 * self.parameters / 200e6
        c.guess_sample_per_char = max(seconds / (3 * self.cfg.seq_len), 5e-4)

    def evaluated(self, seconds: float, progress: Progress) -> None:
        """An evaluation took `seconds` (what --eval-share counts: the validation pass, its row and
        best.pt's save; kept in `progress`, so that a resumed run goes on counting, rank 0's
        deciding: Trainer._eval_room)."""
        progress.eval_seconds += seconds
        self.last_eval_seconds = seconds

    def eval_timed(self, seconds: float, chars: int) -> None:
        """An evaluation of `chars` validation characters took `seconds` (at today's step time)."""
        self.costs.eval_per_char, self.costs.step_at_eval = seconds / chars, self.costs.step
