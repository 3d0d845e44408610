"""How far a run has gone and what is left of it: the fraction done of its limits (steps, epochs,
--time-budget), the learning rate at a step (warm-up, then constant or cosine), and the time a
--time-budget run keeps for its end (the final evaluation, last.pt, a live sample), measured as
it goes (`Costs`)."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass
class Costs:
    """What the parts of a run cost, measured as it goes (seconds), so that a --time-budget run
    keeps enough time for its end. Guesses stand in until a part has run once."""

    step: float | None = None  # the latest training step
    eval_per_char: float | None = None  # the latest evaluation, per validation character of this process
    step_at_eval: float | None = None  # the step time when it was measured
    save: float | None = None  # the latest checkpoint save
    sample_per_char: float | None = None  # the latest live sample

    guess_save: float = 0.5  # stand-ins, set by the Trainer from the model's size and step time
    guess_sample_per_char: float = 0.005

    def save_s(self) -> float:
        return self.guess_save if self.save is None else self.save

    def sample_s(self, chars: int) -> float:
        return chars * (self.guess_sample_per_char if self.sample_per_char is None else self.sample_per_char)


class Schedule:
    """A part of `Trainer` (see trainer.py), split out by idea; it uses the trainer's attributes."""

    def fraction_done(self) -> float:
        """How far through training we are, by the first limit that will be reached."""
        fracs = self._limit_fractions().values()
        return min(1.0, max(fracs)) if fracs else 0.0

    def _limit_fractions(self) -> dict[str, float]:
        """How far along each limit that is set the run is, by the flag that sets it."""
        p, cfg = self.progress, self.cfg
        fracs = {}
        if cfg.max_steps:
            fracs[f"--max-steps {cfg.max_steps}"] = p.step / cfg.max_steps
        if cfg.max_epochs:
            fracs[f"--max-epochs {cfg.max_epochs:g}"] = p.step / (cfg.max_epochs * self.chunks_per_epoch)
        if cfg.time_budget:  # the clock runs until the time kept for the end of the run; then it is up
            fraction = p.train_seconds / max(self._budget_end() - self._reserve, 1e-9)
            self._time_up = self._time_up or fraction >= 1.0  # (a reserve that shrinks later starts nothing again)
            fracs[f"--time-budget {cfg.time_budget:g}"] = 1.0 if self._time_up else fraction
        return fracs

    def lr_at(self, step: int, fraction: float) -> float:
        cfg = self.cfg
        warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
        if cfg.lr_schedule == "constant":
            return cfg.lr * warm
        floor = cfg.min_lr_frac
        return cfg.lr * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction)))

    def end_reserve(self) -> float:
        """Seconds a --time-budget run keeps for its end: the final evaluation (its measured
        cost, scaled by how much slower steps are now than then), live sample and save, and half
        a step, so that the whole command ends on time. At most half the budget."""
        if not self.cfg.time_budget:
            return 0.0
        c = self.costs
        step = c.step or 0.0
        chars = len(self.val_ids) / self.dist.world
        if c.eval_per_char is not None:
            eval_s = c.eval_per_char * chars * (step / c.step_at_eval if c.step_at_eval and step else 1.0)
        else:  # not measured yet: a forward pass costs about a third of a training step
            eval_s = step * chars / (self.batch_size * self.cfg.seq_len) / 3
        sample_s = c.sample_s(self.cfg.sample_chars) if self._sample_due(True) else 0.0
        return min(0.5 * self.cfg.time_budget, eval_s + sample_s + c.save_s() + step / 2)

    def _budget_end(self) -> float:
        """When a --time-budget run aims to end, in seconds of the run: 1% past the budget, since
        the cost guesses err early and a budget promises that much training."""
        return 1.01 * self.cfg.time_budget

    def _time_left(self) -> float:
        """Seconds left of --time-budget (infinite without one)."""
        if not self.cfg.time_budget:
            return math.inf
        return self._budget_end() - self.progress.train_seconds - (self.clock() - self._tick)
