"""What every process of a run must agree on, so that they never part ways: whether to stop
(asked by a signal to any of them), rank 0's clock, whether a step was finite, and the errors
that all of them meet at the same point (rank 0 reports them)."""

from __future__ import annotations

from charrnn.errors import CharRNNError


class Agreement:
    """A part of `Trainer` (see trainer.py), split out by idea; it uses the trainer's attributes."""

    def stop(self, reason: str = "interrupted") -> None:
        """Ask the loop to end after the current step (safe to call from a signal handler)."""
        self._stop_reason = reason

    def _agree_on_stop_and_clock(self) -> None:
        """Every process takes rank 0's clock and stops if any process was asked to, so that all
        of them see the same limits at the same step (a single process just looks)."""
        self._reserve = self.end_reserve()
        if self.dist.world == 1:
            self._stopping = self._stop_reason
            return
        main = self.dist.main
        stop, seconds, reserve = self.dist.sum(
            [
                1.0 if self._stop_reason else 0.0,
                self.progress.train_seconds if main else 0.0,
                self._reserve if main else 0.0,
            ]
        )
        self.progress.train_seconds, self._reserve = seconds, reserve
        if stop:
            self._stopping = self._stop_reason or "stopped by another process"

    def _any_train_loss(self) -> bool:
        """Whether any process has accumulated a training loss since the last evaluation (after a
        resume rank 0 holds what all of them had, so they must ask each other)."""
        return (
            self.progress.loss_count > 0 if self.dist.world == 1 else self.dist.sum([self.progress.loss_count])[0] > 0
        )

    def _all_finite(self, finite: bool) -> bool:
        """Whether the step was finite on every process: all of them skip it, or none."""
        return finite if self.dist.world == 1 else self.dist.sum([0.0 if finite else 1.0])[0] == 0

    def _error(self, message: str, exit_code: int = 2, kind: type[CharRNNError] = CharRNNError) -> CharRNNError:
        """An error every process meets at the same point: rank 0 reports it, the others just end."""
        return kind(message, exit_code, elsewhere=not self.dist.main)
