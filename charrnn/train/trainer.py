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

This module holds the class, its set-up and the loop; its parts, split out by idea, are mixins:
step.py (one step), metrics.py (evaluations and metrics.jsonl), agreement.py (what the processes
agree on), schedule.py, thread_use.py, live_samples.py and run_state.py.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.cells import parameter_count
from charrnn.config import TrainConfig
from charrnn.data.batches import batchify, fit_batch_size, num_chunks, shard_rows
from charrnn.data.vocab import Vocab, describe_chars
from charrnn.errors import CharRNNError, plural
from charrnn.machine.device import pick_device
from charrnn.model import CharRNN
from charrnn.store import checkpoint
from charrnn.store.files import make_folder
from charrnn.store.metadata import Progress
from charrnn.train.agreement import Agreement
from charrnn.train.distributed import Dist
from charrnn.train.live_samples import LiveSamples
from charrnn.train.metrics import Metrics
from charrnn.train.resources import autocast_for, memory_problem
from charrnn.train.resume import ids_digest, resumed_batch_size
from charrnn.train.run_state import RunState
from charrnn.train.schedule import Costs, Schedule
from charrnn.train.step import Step
from charrnn.train.thread_use import ThreadUse

Events = Callable[[dict[str, Any]], None]


class CorpusTooShort(CharRNNError):
    """The corpus has not one chunk of --seq-len to train on (the command line forgets its cache entry)."""


class Trainer(Step, Metrics, Agreement, Schedule, ThreadUse, LiveSamples, RunState):
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
        self.cfg, self.vocab, self.run_dir = cfg, vocab, Path(run_dir)
        self.dist = dist or Dist()
        self.events = (events or (lambda event: None)) if self.dist.main else (lambda event: None)
        self.corpus_path = corpus_path
        self.device = self.dist.device if self.dist.world > 1 else pick_device(cfg.device)
        self.clock = clock
        self.started_at = clock() if started_at is None else started_at
        self.costs = Costs()
        self._recent_steps: collections.deque[float] = collections.deque(maxlen=25)
        self._reserve = 0.0  # seconds kept for the end of a --time-budget run (agreed by all processes)
        self._time_up = False
        self._tick = self.clock()
        self.batch_size = self._batch_size_per_process(len(train_ids), resume_from)
        self.policy = self._thread_policy()
        self.threads = self.policy.threads if self.policy else cfg.threads
        torch.set_num_threads(self.threads)
        self._lay_out_data(train_ids, val_ids, corpus_digest)
        self._build_model(init_from)
        self.progress = Progress()
        self.hidden = None
        self._stop_reason: str | None = None  # asked for in this process (a signal)
        self._stopping: str | None = None  # agreed by all processes
        self._bad_in_a_row = 0
        self.last_eval: dict[str, Any] | None = None  # the last evaluation of this process' run
        self.autocast = autocast_for(cfg.precision, self.model, self.device, self._warn)
        self._forward = self._compiled_forward if cfg.compile else self.train_model
        if resume_from is not None:
            self._restore(resume_from)

    # ----------------------------------------------------------------- set-up
    def _batch_size_per_process(self, train_chars: int, resume_from: checkpoint.Checkpoint | None) -> int:
        """--batch-size (or the resumed run's), cut down where the corpus is too short for as
        many streams of one chunk each; an error where it is too short for one."""
        cfg, world = self.cfg, self.dist.world
        wanted = cfg.batch_size
        if resume_from is not None:
            try:
                wanted, note = resumed_batch_size(resume_from.meta, world, cfg.batch_size)
            except CharRNNError as exc:
                raise self._error(str(exc)) from None
            if note:
                self._warn(note)
        batch_size = fit_batch_size(train_chars, cfg.seq_len, wanted * world) // world  # per process
        if batch_size < 1:
            raise self._error(
                f"{self.corpus_path or 'corpus'}: too short: the training split has {plural(train_chars, 'character')}, "
                f"at least {(cfg.seq_len + 1) * world} are needed for one chunk of --seq-len {cfg.seq_len}"
                + (f" in each of {world} processes" if world > 1 else ""),
                kind=CorpusTooShort,
            )
        if batch_size < wanted:
            self._warn(
                f"the corpus is short: using --batch-size {batch_size} instead of {wanted} "
                f"so that every stream holds a chunk of {cfg.seq_len}"
            )
        return batch_size

    def _lay_out_data(self, train_ids: np.ndarray, val_ids: np.ndarray, corpus_digest: str | None) -> None:
        """This process' streams of the training split, the validation ids, the corpus digest."""
        cfg, world = self.cfg, self.dist.world
        self.rows = shard_rows(self.batch_size * world, self.dist.rank, world)  # this process' streams
        self.streams = batchify(train_ids, self.batch_size * world)[self.rows]  # (B, L), a view
        self.chunks_per_epoch = num_chunks(self.streams, cfg.seq_len)
        self.train_chars = len(train_ids)
        self.val_ids = val_ids if len(val_ids) >= 2 else val_ids[:0]
        if cfg.eval_chars:
            self.val_ids = self.val_ids[: cfg.eval_chars]
        self.data_digest = corpus_digest or ids_digest(train_ids)
        self._train_ids = train_ids  # (a view: for the digest of checkpoints from older versions)
        unknown = self.vocab.unknown(cfg.sample_prime)
        if unknown:
            raise self._error(f"--sample-prime has characters that are not in the corpus: {describe_chars(unknown)}")

    def _build_model(self, init_from: checkpoint.Checkpoint | None) -> None:
        """The model (checked to fit in memory first), its DDP wrapper and the optimizer."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the same on every process: the same initial weights
        self.model_cfg = cfg.model_config(len(self.vocab))
        too_large = memory_problem(self.model_cfg, self.batch_size, cfg.seq_len, self.device, self.dist.local_world)
        if too_large:  # (before allocating it: a --hidden 1000000 would ask for terabytes)
            raise self._error(too_large)
        self.model = CharRNN(self.model_cfg).to(self.device)
        if init_from is not None:
            self.model.load_state_dict(init_from.model)
        self.train_model = self.model  # what the step calls: the model, or its DDP wrapper
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
            torch.manual_seed(cfg.seed + self.dist.rank)  # but each its own dropout
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
        )

    # ----------------------------------------------------------------- the loop
    def fit(self, until_step: int | None = None) -> dict[str, Any]:
        self._begin()
        while (reason := self._reason_to_end(until_step)) is None:
            self._one_step()
        return self._end(reason)

    def _begin(self) -> None:
        """The run folder, the start event, and the clock: start-up counts against the budget."""
        p = self.progress
        if self.dist.main:
            make_folder(self.run_dir, "the run folder", "give another --out")
            checkpoint.remove_stale_temporaries(self.run_dir)
        self.events(self._start_event())
        if self.policy:
            self._note(
                {
                    "event": "threads",
                    "step": p.step,
                    "threads": self.threads,
                    "reason": "start",
                    "cores": self.policy.cores,
                    "others": self.policy.others,
                }
            )
        if p.step and self.fraction_done() >= 1.0:
            self._warn(
                f"this run already reached its limit at step {p.step:,} "
                f"({', '.join(flag for flag, frac in self._limit_fractions().items() if frac >= 1.0)}); "
                f"to train on, resume with a higher one"
            )
        self.train_model.train()
        self._window_start, self._window_chars = self.clock(), 0  # what chars/s measures
        p.train_seconds += self.clock() - self.started_at  # start-up counts against the budget
        self.started_at = self.clock()  # (once: fit may be called again)
        self._tick = self.clock()  # p.train_seconds counts up to here

    def _start_event(self) -> dict[str, Any]:
        return {
            "event": "start",
            "parameters": parameter_count(self.model.cfg),
            "device": str(self.device),
            "threads": self.threads,
            "threads_auto": self.policy is not None,
            "cores": self.policy.cores if self.policy else None,
            "others": self.policy.others if self.policy else None,
            "batch_size": self.batch_size,
            "processes": self.dist.world,
            "chunks_per_epoch": self.chunks_per_epoch,
            "train_chars": self.train_chars,
            "val_chars": len(self.val_ids),
            "step": self.progress.step,
            "run_dir": str(self.run_dir),
        }

    def _reason_to_end(self, until_step: int | None) -> str | None:
        """Why the loop ends before the next step, agreed by all processes; None: it goes on."""
        p = self.progress
        self._agree_on_stop_and_clock()
        if self.fraction_done() >= 1.0:
            if (
                p.step and self._any_train_loss()
            ):  # the time ran out after the last step's checks (a save, a larger reserve)
                self._evaluate(self.lr_at(p.step, 1.0), self._chars_per_sec(self.clock()))
            return "done"
        if until_step is not None and p.step >= until_step:
            return "until_step"
        return self._stopping or None

    def _chars_per_sec(self, now: float) -> float:
        """The training speed since the last evaluation or sample (chars/s measures training only)."""
        return self._window_chars / max(now - self._window_start, 1e-9)

    def _one_step(self) -> None:
        """A training step, its report, and what falls due after it."""
        p = self.progress
        loss_value, lr = self.train_step()
        self._window_chars += self.batch_size * self.cfg.seq_len * self.dist.world
        now = self.clock()
        self._measured_step(now - self._tick)
        self._adapt_threads(now - self._tick)
        p.train_seconds += now - self._tick
        self._tick = now
        self.events(
            {
                "event": "step",
                "step": p.step,
                "epoch": p.epoch + p.chunk / self.chunks_per_epoch,
                "loss": loss_value,
                "lr": lr,
                "fraction": self.fraction_done(),
                "chars_seen": p.chars_seen,
                "elapsed_s": p.train_seconds,
                "threads": self.threads,
            }
        )
        self._due_after_step(lr, now)
        after = self.clock()
        p.train_seconds += after - self._tick  # evaluation and saving count against the budget
        self._tick = after

    def _due_after_step(self, lr: float, now: float) -> None:
        """An evaluation, a live sample and a save of last.pt, each when it is due."""
        cfg, p = self.cfg, self.progress
        # (every process computes the same `finished`: it depends on agreed values only)
        self._agree_on_stop_and_clock()
        finished = self.fraction_done() >= 1.0  # (an interruption evaluates nothing extra)
        evaluated = p.step % cfg.eval_every == 0 or (finished and self._any_train_loss())
        if evaluated:
            self._evaluate(lr, self._chars_per_sec(now))
        sampled = self._sample_due(evaluated) and self._time_left() > self.costs.save_s() + self.costs.sample_s(
            cfg.sample_chars
        )
        if sampled:
            self._sample()
        if evaluated or sampled:  # chars/s measures training only
            self._window_chars = 0
            self._window_start = self.clock()
        if p.step % cfg.save_every == 0 and not self._bad_in_a_row:  # never save in a bad streak
            self.save("last.pt")

    def _end(self, reason: str) -> dict[str, Any]:
        """last.pt, and the summary of the run (also sent as the "end" event)."""
        p = self.progress
        last_path = self.save("last.pt")
        summary = {
            "event": "end",
            "reason": reason,
            "step": p.step,
            "chars_seen": p.chars_seen,
            "best_loss": p.best_loss,
            "last": str(last_path),
            "best": str(self.run_dir / "best.pt"),
            "skipped_steps": p.skipped_steps,
            "elapsed_s": p.train_seconds + self.clock() - self._tick,
        }
        self.events(summary)
        return summary

    def _warn(self, message: str) -> None:
        self.events({"event": "warning", "message": message})
