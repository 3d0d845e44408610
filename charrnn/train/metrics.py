"""What a run's evaluations record: the validation loss (within the time a --time-budget leaves),
the row of metrics.jsonl it makes, best.pt when the loss improves; and metrics.jsonl itself,
appended to and, on resume, cut back to the checkpoint's step."""

from __future__ import annotations

import json
import math
from typing import Any

from charrnn.data.batches import release_pages
from charrnn.errors import plural
from charrnn.store.files import write_failure
from charrnn.train.evaluation import evaluate_sum
from charrnn.units import LN2


class Metrics:
    """A part of `Trainer` (see trainer.py), split out by idea; it uses the trainer's attributes."""

    def _evaluate(self, lr: float, chars_per_sec: float) -> None:
        """Evaluate now (every process, at the same step): write the row, best.pt if it improved,
        and report it."""
        p = self.progress
        train_loss, val_loss = self._losses_since_last()
        row = self._eval_row(train_loss, val_loss, lr, chars_per_sec)
        p.loss_sum, p.loss_count = 0.0, 0
        self.last_eval = row
        score = val_loss if val_loss is not None else train_loss
        improved = math.isfinite(score) and score < p.best_loss
        if improved:
            p.best_loss = score
        if self.dist.main:
            self._append_metrics(row)
        if improved:
            self.save("best.pt")
        self.events({"event": "eval", **row, "best": improved})

    def _losses_since_last(self) -> tuple[float, float | None]:
        """The training loss accumulated since the last evaluation and the validation loss (None
        without a validation split), over all processes; the validation is cut short where a
        --time-budget would not leave time for the run's end."""
        p, d, costs = self.progress, self.dist, self.costs
        started = self.clock()
        ends = (
            self._time_left()
            - costs.save_s()
            - (costs.sample_s(self.cfg.sample_chars) if self._sample_due(True) else 0.0)
        )
        deadline = started + max(ends, 0.0) if math.isfinite(ends) else None  # keep --time-budget
        total, count = (
            evaluate_sum(
                self.model,
                self.val_ids,
                self.batch_size,
                self.cfg.seq_len,
                self.device,
                self.cfg.carry_state,
                d.rank,
                d.world,
                deadline,
                self.clock,
            )
            if len(self.val_ids)
            else (0.0, 0)
        )
        if count:
            costs.eval_per_char, costs.step_at_eval = (self.clock() - started) / count, costs.step
        cut = deadline is not None and self.clock() >= deadline
        loss_sum, loss_count, total, count, cut = d.sum([p.loss_sum, p.loss_count, total, count, float(cut)])
        if cut and len(self.val_ids):
            self._warn(
                f"evaluated {plural(int(count), 'validation character')} of {len(self.val_ids):,} to keep --time-budget {self.cfg.time_budget:g}"
            )
        release_pages(self.streams)  # the pages of a memory-mapped corpus read so far: let them go
        release_pages(self.val_ids)
        train_loss = loss_sum / loss_count if loss_count else math.nan
        val_loss = total / count if len(self.val_ids) and count else None
        return train_loss, val_loss

    def _eval_row(self, train_loss: float, val_loss: float | None, lr: float, chars_per_sec: float) -> dict[str, Any]:
        """The row of metrics.jsonl (and of the "eval" event) for an evaluation now."""
        p = self.progress
        return {
            "step": p.step,
            "epoch": round(p.epoch + p.chunk / self.chunks_per_epoch, 4),
            "chars_seen": p.chars_seen,
            "train_loss": train_loss,
            "train_bpc": train_loss / LN2,
            "val_loss": val_loss,
            "val_bpc": None if val_loss is None else val_loss / LN2,
            "lr": lr,
            "chars_per_sec": round(chars_per_sec, 1),
            "elapsed_s": round(p.train_seconds, 2),
            "skipped_steps": p.skipped_steps,
            "threads": self.threads,
        }

    def _append_metrics(self, row: dict[str, Any]) -> None:
        try:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise write_failure(self.run_dir / "metrics.jsonl", exc, "the metrics") from None

    def _truncate_metrics(self, step: int) -> None:
        """Drop metrics written after the checkpoint we resume from (they will be redone)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
