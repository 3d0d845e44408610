"""The training loop: truncated BPTT, clipping, LR schedule, evaluation, checkpoints, resume.

`Trainer` takes encoded train/validation ids and a config, and runs until the first of
`max_steps`, `max_epochs` or `time_budget` is reached (or `stop()` is called, e.g. by a signal
handler). It reports progress through a callback of plain dicts, so the command line decides how
to show it. Everything needed to continue exactly (weights, optimizer, RNG, data position,
carried hidden state, loss accumulators) goes into `last.pt`.

Under torchrun (`Dist` with several processes) the same loop trains data-parallel: the model is
wrapped in DistributedDataParallel, which averages the gradients; each process walks its own
block of the B x P streams of the corpus; the processes agree at every step on whether to skip a
non-finite step and whether to stop, so they never part ways; validation losses are summed over
the processes' shares of the validation split. Only rank 0 reports, writes metrics and
checkpoints; a checkpoint holds what every process needs to continue (the hidden states and
random states of all of them), laid out as if one process had trained all the streams.

Read it top to bottom: set-up, `fit` (the loop), `train_step` and `gradients` (one step),
`_evaluate`, `save`. It owns, and passes what they need: `budget` (schedule.py: limits, time, the
reserve for the run's end), `folder` (store/run_folder.py), `samples`, `thread_use`; set-up
(parts.py), checkpoints (run_state.py) and its rows (metrics.py) are functions of their arguments.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.cells import parameter_count
from charrnn.config import TrainConfig
from charrnn.data.batches import batchify, get_chunk, num_chunks, release_pages, shard_rows
from charrnn.data.vocab import Vocab
from charrnn.errors import plural
from charrnn.machine.device import pick_device
from charrnn.model import detach_hidden
from charrnn.store import checkpoint
from charrnn.store.files import make_folder, write_failure
from charrnn.store.metadata import Corpus, Progress
from charrnn.store.run_folder import BEST, LAST, RunFolder
from charrnn.training.averaging import WeightAverage
from charrnn.training.distributed import Dist
from charrnn.training.evaluation import validation_sum
from charrnn.training.live_samples import LiveSamples
from charrnn.training.metrics import end_summary, eval_row, start_event, step_event
from charrnn.training.parts import CorpusTooShort, batch_size_per_process, build_model, check_sample_prime
from charrnn.training.resources import CompiledForward, autocast_for, grad_scaler_for
from charrnn.training.resume import ids_digest
from charrnn.training.run_state import DataLayout, checkpoint_info, gather_state, restore
from charrnn.training.schedule import TimeBudget, lr_at
from charrnn.training.thread_use import ThreadUse

Events = Callable[[dict[str, Any]], None]
MAX_BAD_STEPS = 10  # consecutive non-finite losses/gradients before giving up
__all__ = ["CorpusTooShort", "Events", "MAX_BAD_STEPS", "Trainer"]


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        vocab: Vocab,
        train_ids: np.ndarray,
        val_ids: np.ndarray,
        run_dir: str | Path,
        events: Events | None = None,
        resume_from: checkpoint.Checkpoint | None = None,
        init_from: checkpoint.Checkpoint | None = None,
        corpus_path: str = "",
        corpus_digest: str | None = None,
        dist: Dist | None = None,
        started_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """`started_at`: the time.monotonic() at which the command began; --time-budget counts
        from there (start-up included). Default: now. `clock`: what the budget, the step times and
        the costs of the run's end are read from (seconds; time.monotonic, or a test's fake clock
        of which `started_at` is then a reading)."""
        if cfg.precision == "auto":  # (decided when a run is planned, plan.size_model; built directly: fp32, saved so)
            cfg = dataclasses.replace(cfg, precision="fp32")
        self.cfg, self.vocab, self.folder = cfg, vocab, RunFolder(run_dir)
        self.run_dir = self.folder.path
        d = self.dist = dist or Dist()
        self.events = (events or _ignore) if d.main else _ignore
        self.clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.device = d.device if d.world > 1 else pick_device(cfg.device)
        resumed = None if resume_from is None else resume_from.info
        self.batch_size = batch_size_per_process(cfg, d, len(train_ids), resumed, corpus_path, self._warn)
        self.thread_use = ThreadUse(cfg.threads, self.device, d.world, d.local_world, self.batch_size * cfg.seq_len)
        # The data: this process' block of the B x P streams of the training split, a view.
        self.rows = shard_rows(self.batch_size * d.world, d.rank, d.world)
        self.streams = batchify(train_ids, self.batch_size * d.world)[self.rows]  # (B, L)
        self.chunks_per_epoch = num_chunks(self.streams, cfg.seq_len)
        self.corpus = Corpus(corpus_path, len(train_ids), corpus_digest or ids_digest(train_ids))
        self.val_ids = (val_ids if len(val_ids) >= 2 else val_ids[:0])[: cfg.eval_chars or None]
        check_sample_prime(cfg.sample_prime, vocab, d)
        # The model, what a step calls (it, or its DDP wrapper), AdamW, the precision.
        self.model_cfg = cfg.model_config(len(vocab))
        self.model, self.train_model, self.optimizer = build_model(
            cfg, self.model_cfg, self.batch_size, self.device, d, init_from
        )
        self.average = WeightAverage(cfg.average, self.model, cfg.ema_decay, cfg.swa_start)
        self.autocast = autocast_for(cfg.precision, self.model, self.device, self._warn)
        self.scaler = grad_scaler_for(cfg.precision, self.device, self.autocast)
        self._forward = CompiledForward(self.train_model, self._warn) if cfg.compile else self.train_model
        # What the loop owns: the time, the live samples.
        chars = len(self.val_ids) / d.world
        self.budget = TimeBudget(
            cfg, self.chunks_per_epoch, clock, chars, self.batch_size * cfg.seq_len, parameter_count(self.model_cfg)
        )
        self.samples = LiveSamples(cfg, vocab, self.device, clock, self.budget.costs)
        # Where the run stands.
        self.progress, self.hidden, self.last_eval = Progress(), None, None
        self._stop_reason: str | None = None  # asked for in this process (a signal)
        self._stopping: str | None = None  # agreed by all processes
        self._bad_in_a_row = 0
        if resume_from is not None:
            data = DataLayout(
                self.batch_size * d.world, self.rows, self.chunks_per_epoch, self.corpus.digest, train_ids
            )
            self.progress, self.hidden = restore(
                resume_from, self.model, self.optimizer, data, d, self.device, self.folder
            )
            self.average.load(resume_from.average, self.progress.average_count)
            if self.scaler.is_enabled() and self.progress.loss_scale is not None:  # (fp16 on CUDA)
                state = self.scaler.state_dict()
                state.update(scale=self.progress.loss_scale, _growth_tracker=self.progress.loss_scale_growth)
                self.scaler.load_state_dict(state)
        self._evaluated_at = self.progress.step  # the step of the latest evaluation (or where this run began)

    def stop(self, reason: str = "interrupted") -> None:
        """Ask the loop to end after the current step (safe to call from a signal handler)."""
        self._stop_reason = reason

    # ----------------------------------------------------------------- the loop
    def fit(self, until_step: int | None = None) -> dict[str, Any]:
        """Train until a limit is reached, step `until_step`, or a stop; returns the summary."""
        cfg, p, d, budget = self.cfg, self.progress, self.dist, self.budget
        self._begin()
        while True:
            self._agree()  # every process ends here, or none
            if budget.fraction_done(p) >= 1.0:
                if p.step and self._any_train_loss():  # the time ran out after the last step's checks
                    self._evaluate(lr_at(cfg, p.step, 1.0), self._chars_per_sec(self.clock()), sample_follows=False)
                return self._end("done")
            if until_step is not None and p.step >= until_step:
                return self._end("until_step")
            if self._stopping:
                self._evaluate_before_stopping()
                return self._end(self._stopping)

            loss, lr = self.train_step()
            self._window_chars += self.batch_size * cfg.seq_len * d.world
            now = self.clock()
            step_seconds = budget.count_until(now, p)
            budget.step_timed(step_seconds)
            self._note(self.thread_use.step_done(step_seconds, p.step))
            fraction = budget.fraction_done(p)
            self.events(step_event(p, self.chunks_per_epoch, loss, lr, fraction, self.thread_use.threads))

            # What falls due after the step: an evaluation, a live sample, last.pt. Every process
            # computes the same `finished`: it depends on agreed values only.
            self._agree()
            finished = budget.fraction_done(p) >= 1.0  # (an interruption evaluates nothing extra)
            due = p.step % cfg.eval_every == 0  # (--eval-share may skip the evaluation due; not its sample)
            evaluated = (due and self._eval_room()) or (finished and self._any_train_loss())
            if evaluated:
                started = self.clock()
                self._evaluate(lr, self._chars_per_sec(now))
                budget.evaluated(self.clock() - started, p)
            sampled = self.samples.due(p.step, evaluated or due) and budget.room_for_sample(p, cfg.sample_chars)
            if sampled and d.main:  # (rank 0 alone shows it; with --average, the average's)
                with self.average.swapped_in(), self.thread_use.between_steps():
                    text = self.samples.generate(self.model)
                self.events({"event": "sample", "step": p.step, "prime": cfg.sample_prime, "text": text})
            if evaluated or sampled:  # chars/s measures training only
                self._window_start, self._window_chars = self.clock(), 0
            if p.step % cfg.save_every == 0 and not self._bad_in_a_row:  # never save in a bad streak
                self.save(LAST)
            budget.count_until(self.clock(), p)  # evaluation and saving count against the budget

    def _begin(self) -> None:
        """The run folder, the start event, and the clock: start-up counts against the budget."""
        p = self.progress
        if self.dist.main:
            make_folder(self.run_dir, "the run folder", "give another --out")
            checkpoint.remove_stale_temporaries(self.run_dir)
        self.events(start_event(self))
        self._note(self.thread_use.start_note(p.step))
        reached = self.budget.limits_reached(p)
        if p.step and reached:
            why = f"this run already reached its limit at step {p.step:,} ({reached})"
            self._warn(f"{why}; to train on, resume with a higher one")
        self.train_model.train()
        self._window_start, self._window_chars = self.clock(), 0  # what chars/s measures
        self.started_at = self.budget.begin(p, self.started_at)  # (once: fit may be called again)

    def _agree(self) -> None:
        """Every process takes rank 0's clock and its reserve for the run's end, and stops if any
        process was asked to, so that all of them see the same limits at the same step (a single
        process: its own)."""
        p, d = self.progress, self.dist
        reserve = self.budget.end_reserve(self.samples.chars_at(p.step))
        stop, p.train_seconds, reserve = d.sum(
            [1.0 if self._stop_reason else 0.0, p.train_seconds if d.main else 0.0, reserve if d.main else 0.0]
        )
        self.budget.keep(reserve, p)
        if stop:
            self._stopping = self._stop_reason or "stopped by another process"

    def _eval_room(self) -> bool:
        """Whether the evaluation due now runs (--eval-share; every process as rank 0 says, since
        each measured its own costs)."""
        room = self.dist.main and self.budget.eval_room(self.progress)
        return self.dist.sum([1.0 if room else 0.0])[0] > 0

    def _evaluate_before_stopping(self) -> None:
        """A stopped run (Ctrl-C, SIGTERM, `Stop`) evaluates once more where an evaluation due since
        the last one (or since the run resumed) was skipped (--eval-share, or the final one near),
        so that best.pt is not left that old; else, as before the share, nothing extra runs.
        last.pt is saved first: a second Ctrl-C during the evaluation loses no step."""
        p, every = self.progress, self.cfg.eval_every
        if p.step // every == self._evaluated_at // every or not self._any_train_loss():
            return
        self.save(LAST)
        skipped = p.step // every * every
        self.events(
            {
                "event": "stopping",
                "message": f"stopping: evaluating step {p.step:,} first (the evaluation due at step {skipped:,} was "
                "skipped to save time); last.pt is saved",
            }
        )
        started = self.clock()
        self._evaluate(self.optimizer.param_groups[0]["lr"], self._chars_per_sec(started), sample_follows=False)
        self.budget.evaluated(self.clock() - started, p)
        self.budget.count_until(self.clock(), p)  # (the evaluation and the save count, as in the loop)

    def _any_train_loss(self) -> bool:
        """Whether any process has accumulated a training loss since the last evaluation (after a
        resume rank 0 holds what all of them had, so they must ask each other)."""
        return self.dist.sum([self.progress.loss_count])[0] > 0

    def _chars_per_sec(self, now: float) -> float:
        """The training speed since the last evaluation or sample (chars/s measures training only)."""
        return self._window_chars / max(now - self._window_start, 1e-9)

    def _end(self, reason: str) -> dict[str, Any]:
        """last.pt, and the summary of the run (also sent as the "end" event)."""
        p = self.progress
        last = self.save(LAST)
        summary = end_summary(reason, p, last, self.folder.best, self.budget.elapsed(p))
        self.events(summary)
        return summary

    # ----------------------------------------------------------------- one step
    def train_step(self) -> tuple[float, float]:
        """One truncated-BPTT step on the next chunk; returns (loss in nats, learning rate).

        A step whose loss or gradient is not finite (on any process; with fp16 on CUDA, also a
        gradient the loss scale made overflow) changes no weight: it is counted and skipped, and
        only MAX_BAD_STEPS of them in a row end training.
        """
        cfg, p = self.cfg, self.progress
        if p.chunk == 0 or not cfg.carry_state:
            self.hidden = None  # a new epoch (or, without carried state, every chunk) starts from zero
        lr = lr_at(cfg, p.step, self.budget.fraction_done(p))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = (t.to(self.device, non_blocking=True) for t in get_chunk(self.streams, p.chunk, cfg.seq_len))
        loss, grad_norm, hidden = self.gradients(x, y)
        finite = math.isfinite(loss) and math.isfinite(grad_norm)
        if self.dist.sum([0.0 if finite else 1.0])[0] == 0:  # finite everywhere: all processes step, or none
            self.scaler.step(self.optimizer)
            self.average.update(self.budget.fraction_done(p))
            self.hidden = detach_hidden(hidden)
            p.loss_sum, p.loss_count, self._bad_in_a_row = p.loss_sum + loss, p.loss_count + 1, 0
        else:
            p.skipped_steps += 1
            self._bad_in_a_row += 1
            self.hidden = None  # the carried state may be poisoned too
            self._warn(f"step {p.step + 1}: non-finite loss or gradient, update skipped")
            if self._bad_in_a_row >= MAX_BAD_STEPS:
                raise self.dist.error(
                    f"training diverged: {MAX_BAD_STEPS} steps in a row had a non-finite loss or gradient; "
                    f"the last good checkpoint is in {self.run_dir} (try a lower --lr or --grad-clip)",
                    exit_code=1,
                )
        self.scaler.update()  # (fp16 on CUDA: a smaller loss scale after an overflow; else nothing)
        p.step, p.chunk, p.chars_seen = p.step + 1, p.chunk + 1, p.chars_seen + x.numel() * self.dist.world
        if p.chunk >= self.chunks_per_epoch:
            p.chunk, p.epoch = 0, p.epoch + 1
        return loss, lr

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, Any]:
        """Forward, loss, backward and clipping on one chunk (x, y: (B, T) ids): sets every
        parameter's .grad and returns (loss in nats, gradient norm before clipping, new hidden
        state). `charrnn train --engine numpy` replaces this method, and only this one. Under
        DDP, backward() also averages the gradients over the processes."""
        with self.autocast():
            logits, hidden = self._forward(x, self.hidden)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # (fp16 on CUDA: scaled, so that small gradients stay above zero)
        self.scaler.unscale_(self.optimizer)  # the true gradient is what is clipped, measured and checked
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        return loss.item(), grad_norm.item(), hidden

    # ----------------------------------------------------------------- evaluation and checkpoints
    def _evaluate(self, lr: float, chars_per_sec: float, sample_follows: bool = True) -> None:
        """Evaluate now (every process, at the same step; within the time a --time-budget
        leaves, less a live sample's where one may follow): write the row, best.pt if the loss
        improved, and report it."""
        cfg, p, d = self.cfg, self.progress, self.dist
        started = self.clock()
        deadline = self.budget.eval_deadline(p, self.samples.chars_at(p.step) if sample_follows else 0)
        with self.average.swapped_in(), self.thread_use.between_steps():  # (--average: the average is evaluated)
            total, count, cut = validation_sum(
                self.model, self.val_ids, self.batch_size, cfg, self.device, d, deadline, self.clock
            )
        if count:
            self.budget.eval_timed(self.clock() - started, count)
        loss_sum, loss_count, total, count, cut = d.sum([p.loss_sum, p.loss_count, total, count, float(cut)])
        if cut and len(self.val_ids):
            chars = plural(int(count), "validation character")
            self._warn(f"evaluated {chars} of {len(self.val_ids):,} to keep --time-budget {cfg.time_budget:g}")
        release_pages(self.streams)  # the pages of a memory-mapped corpus read so far: let them go
        release_pages(self.val_ids)
        train_loss = loss_sum / loss_count if loss_count else math.nan
        val_loss = total / count if len(self.val_ids) and count else None
        row = eval_row(p, self.chunks_per_epoch, train_loss, val_loss, lr, chars_per_sec, self.thread_use.settled)
        p.loss_sum, p.loss_count, self.last_eval, self._evaluated_at = 0.0, 0, row, p.step
        score = val_loss if val_loss is not None else train_loss
        improved = math.isfinite(score) and score < p.best_loss
        if improved:
            p.best_loss = score
        self._record(row)
        if improved:
            with self.average.swapped_in():  # best.pt holds the weights evaluated
                self.save(BEST)
        self.events({"event": "eval", **row, "best": improved})

    def save(self, filename: str) -> Path:
        """Write a checkpoint into the run folder (rank 0; every process must call this at the
        same step: it gathers what each of them alone knows)."""
        p, d, path = self.progress, self.dist, self.run_dir / filename
        if self.scaler.is_enabled():  # the loss scale goes on from where it was (fp16 on CUDA)
            p.loss_scale, p.loss_scale_growth = self.scaler.get_scale(), self.scaler.state_dict()["_growth_tracker"]
        p.average_count = self.average.count
        state = gather_state(self.model, self.hidden, p, d, self.device)
        if not d.main:
            return path
        info = checkpoint_info(self.vocab, self.model_cfg, self.cfg, p, self.batch_size, d.world, self.corpus, state)
        model = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        average = self.average.state() if filename == LAST else None  # (last.pt: the trained weights, and the average)
        ckpt = checkpoint.Checkpoint(
            info.to_meta(), model, optimizer, state["rng"], state["hidden"], info=info, average=average
        )
        started = self.clock()
        checkpoint.save(ckpt, path)
        self.budget.costs.save = self.clock() - started
        self.events({"event": "save", "path": str(path), "step": p.step})
        return path

    # ----------------------------------------------------------------- reports
    def _record(self, row: dict[str, Any]) -> None:
        """A row of metrics.jsonl (rank 0 writes it)."""
        if not self.dist.main:
            return
        try:
            self.folder.append_metrics(row)
        except OSError as exc:
            raise write_failure(self.folder.metrics, exc, "the metrics") from None

    def _note(self, row: dict[str, Any] | None) -> None:
        """A note about the run (not an evaluation), if any: shown, and kept in metrics.jsonl."""
        if row is not None:
            self.events(row)
            self._record({k: v for k, v in row.items() if k != "message"})

    def _warn(self, message: str) -> None:
        self.events({"event": "warning", "message": message})


def _ignore(event: dict[str, Any]) -> None:
    """The events of a run nobody watches (and of every process but rank 0)."""
