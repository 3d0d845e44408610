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
"""

from __future__ import annotations

import collections
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.store import checkpoint
from charrnn.data.batches import batchify, fit_batch_size, get_chunk, num_chunks, release_pages, shard_rows
from charrnn.config import TrainConfig
from charrnn.machine.device import pick_device
from charrnn.train.live_samples import LiveSamples
from charrnn.train.run_state import RunState
from charrnn.train.schedule import Costs, Schedule
from charrnn.train.thread_use import ThreadUse
from charrnn.train.distributed import Dist
from charrnn.errors import CharRNNError, plural
from charrnn.units import LN2
from charrnn.store.files import make_folder, write_failure
from charrnn.store.metadata import Progress
from charrnn.train.evaluation import evaluate_sum
from charrnn.train.resources import autocast_for, memory_problem
from charrnn.train.resume import ids_digest, resumed_batch_size
from charrnn.model import CharRNN, detach_hidden
from charrnn.cells import parameter_count
from charrnn.data.vocab import Vocab, describe_chars

MAX_BAD_STEPS = 10  # consecutive non-finite losses/gradients before giving up

Events = Callable[[dict[str, Any]], None]


class CorpusTooShort(CharRNNError):
    """The corpus has not one chunk of --seq-len to train on (the command line forgets its cache entry)."""


class Trainer(Schedule, ThreadUse, LiveSamples, RunState):
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
    ):
        """`started_at`: the time.monotonic() at which the command began; --time-budget counts
        from there (start-up included). Default: now."""
        self.cfg, self.vocab, self.run_dir = cfg, vocab, Path(run_dir)
        self.dist = dist or Dist()
        self.events = (events or (lambda event: None)) if self.dist.main else (lambda event: None)
        self.corpus_path = corpus_path
        self.device = self.dist.device if self.dist.world > 1 else pick_device(cfg.device)
        self.started_at = time.monotonic() if started_at is None else started_at
        self.costs = Costs()
        self._recent_steps: collections.deque[float] = collections.deque(maxlen=25)
        self._reserve = 0.0  # seconds kept for the end of a --time-budget run (agreed by all processes)
        self._time_up = False
        self._tick = time.perf_counter()
        world = self.dist.world
        wanted = cfg.batch_size
        if resume_from is not None:
            try:
                wanted, note = resumed_batch_size(resume_from.meta, world, cfg.batch_size)
            except CharRNNError as exc:
                raise self._error(str(exc)) from None
            if note:
                self._warn(note)
        self.batch_size = fit_batch_size(len(train_ids), cfg.seq_len, wanted * world) // world  # per process
        if self.batch_size < 1:
            raise self._error(
                f"{self.corpus_path or 'corpus'}: too short: the training split has {plural(len(train_ids), 'character')}, "
                f"at least {(cfg.seq_len + 1) * world} are needed for one chunk of --seq-len {cfg.seq_len}"
                + (f" in each of {world} processes" if world > 1 else ""),
                kind=CorpusTooShort,
            )
        if self.batch_size < wanted:
            self._warn(
                f"the corpus is short: using --batch-size {self.batch_size} instead of {wanted} "
                f"so that every stream holds a chunk of {cfg.seq_len}"
            )
        self.policy = self._thread_policy()
        self.threads = self.policy.threads if self.policy else cfg.threads
        torch.set_num_threads(self.threads)
        self.rows = shard_rows(self.batch_size * world, self.dist.rank, world)  # this process' streams
        self.streams = batchify(train_ids, self.batch_size * world)[self.rows]  # (B, L), a view
        self.chunks_per_epoch = num_chunks(self.streams, cfg.seq_len)
        self.train_chars = len(train_ids)
        self.val_ids = val_ids if len(val_ids) >= 2 else val_ids[:0]
        if cfg.eval_chars:
            self.val_ids = self.val_ids[: cfg.eval_chars]
        self.data_digest = corpus_digest or ids_digest(train_ids)
        self._train_ids = train_ids  # (a view: for the digest of checkpoints from older versions)
        unknown = vocab.unknown(cfg.sample_prime)
        if unknown:
            raise self._error(f"--sample-prime has characters that are not in the corpus: {describe_chars(unknown)}")

        torch.manual_seed(cfg.seed)  # the same on every process: the same initial weights
        self.model_cfg = cfg.model_config(len(vocab))
        too_large = memory_problem(self.model_cfg, self.batch_size, cfg.seq_len, self.device, self.dist.local_world)
        if too_large:  # (before allocating it: a --hidden 1000000 would ask for terabytes)
            raise self._error(too_large)
        self.model = CharRNN(self.model_cfg).to(self.device)
        if init_from is not None:
            self.model.load_state_dict(init_from.model)
        self.train_model = self.model  # what the step calls: the model, or its DDP wrapper
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
            torch.manual_seed(cfg.seed + self.dist.rank)  # but each its own dropout
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99)
        )
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

    # ----------------------------------------------------------------- stopping, agreed by all processes
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
        stop, seconds, reserve = self.dist.sum([1.0 if self._stop_reason else 0.0, self.progress.train_seconds if main else 0.0, self._reserve if main else 0.0])
        self.progress.train_seconds, self._reserve = seconds, reserve
        if stop:
            self._stopping = self._stop_reason or "stopped by another process"

    def _any_train_loss(self) -> bool:
        """Whether any process has accumulated a training loss since the last evaluation (after a
        resume rank 0 holds what all of them had, so they must ask each other)."""
        return self.progress.loss_count > 0 if self.dist.world == 1 else self.dist.sum([self.progress.loss_count])[0] > 0

    def _all_finite(self, finite: bool) -> bool:
        """Whether the step was finite on every process: all of them skip it, or none."""
        return finite if self.dist.world == 1 else self.dist.sum([0.0 if finite else 1.0])[0] == 0

    # ----------------------------------------------------------------- the loop
    def fit(self, until_step: int | None = None) -> dict[str, Any]:
        cfg, p, model = self.cfg, self.progress, self.train_model
        if self.dist.main:
            make_folder(self.run_dir, "the run folder", "give another --out")
            checkpoint.remove_stale_temporaries(self.run_dir)
        self.events(
            {
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
                "step": p.step,
                "run_dir": str(self.run_dir),
            }
        )
        if self.policy:
            self._note({"event": "threads", "step": p.step, "threads": self.threads, "reason": "start", "cores": self.policy.cores, "others": self.policy.others})
        if p.step and self.fraction_done() >= 1.0:
            self._warn(
                f"this run already reached its limit at step {p.step:,} "
                f"({', '.join(flag for flag, frac in self._limit_fractions().items() if frac >= 1.0)}); "
                f"to train on, resume with a higher one"
            )
        model.train()
        window_start, window_chars = time.perf_counter(), 0
        p.train_seconds += time.monotonic() - self.started_at  # start-up counts against the budget
        self.started_at = time.monotonic()  # (once: fit may be called again)
        self._tick = time.perf_counter()  # p.train_seconds counts up to here
        reason = None
        while True:
            self._agree_on_stop_and_clock()
            if self.fraction_done() >= 1.0:
                reason = "done"
                if p.step and self._any_train_loss():  # the time ran out after the last step's checks (a save, a larger reserve)
                    self._evaluate(self.lr_at(p.step, 1.0), window_chars / max(time.perf_counter() - window_start, 1e-9))
                break
            if until_step is not None and p.step >= until_step:
                reason = "until_step"
                break
            if self._stopping:
                reason = self._stopping
                break
            loss_value, lr = self.train_step()
            window_chars += self.batch_size * cfg.seq_len * self.dist.world
            now = time.perf_counter()
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
            # (every process computes the same `finished`: it depends on agreed values only)
            self._agree_on_stop_and_clock()
            finished = self.fraction_done() >= 1.0  # (an interruption evaluates nothing extra)
            evaluated = p.step % cfg.eval_every == 0 or (finished and self._any_train_loss())
            if evaluated:
                chars_per_sec = window_chars / max(now - window_start, 1e-9)
                self._evaluate(lr, chars_per_sec)
            sampled = self._sample_due(evaluated) and self._time_left() > self.costs.save_s() + self.costs.sample_s(cfg.sample_chars)
            if sampled:
                self._sample()
            if evaluated or sampled:  # chars/s measures training only
                window_chars = 0
                window_start = time.perf_counter()
            if p.step % cfg.save_every == 0 and not self._bad_in_a_row:  # never save in a bad streak
                self.save("last.pt")
            after = time.perf_counter()
            p.train_seconds += after - self._tick  # evaluation and saving count against the budget
            self._tick = after
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
            "elapsed_s": p.train_seconds + time.perf_counter() - self._tick,
        }
        self.events(summary)
        return summary

    # ----------------------------------------------------------------- one step, one evaluation, the metrics file
    def _compiled_forward(self, x, hidden):
        """torch.compile'd forward; if compiling fails (no compiler, unsupported device), warn
        once and go on in eager mode."""
        try:
            if not hasattr(self, "_compiled"):
                self._compiled = torch.compile(self.train_model)
            return self._compiled(x, hidden)
        except Exception as exc:  # compilation errors come in many types
            self._warn(f"--compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); training without it")
            self._forward = self.train_model
            return self.train_model(x, hidden)

    def train_step(self) -> tuple[float, float]:
        """One truncated-BPTT step on the next chunk; returns (loss in nats, learning rate).

        A step whose loss or gradient is not finite changes no weight: it is counted and
        skipped, and only MAX_BAD_STEPS of them in a row end training.
        """
        cfg, p = self.cfg, self.progress
        if p.chunk == 0 or not cfg.carry_state:
            self.hidden = None  # a new epoch (or, without carried state, every chunk) starts from zero
        lr = self.lr_at(p.step, self.fraction_done())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = (t.to(self.device, non_blocking=True) for t in get_chunk(self.streams, p.chunk, cfg.seq_len))
        loss_value, grad_norm, hidden = self.gradients(x, y)
        if self._all_finite(math.isfinite(loss_value) and math.isfinite(grad_norm)):
            self.optimizer.step()
            self.hidden = detach_hidden(hidden)
            p.loss_sum += loss_value
            p.loss_count += 1
            self._bad_in_a_row = 0
        else:
            p.skipped_steps += 1
            self._bad_in_a_row += 1
            self.hidden = None  # the carried state may be poisoned too
            self._warn(f"step {p.step + 1}: non-finite loss or gradient, update skipped")
            if self._bad_in_a_row >= MAX_BAD_STEPS:
                raise self._error(
                    f"training diverged: {MAX_BAD_STEPS} steps in a row had a non-finite loss "
                    f"or gradient; the last good checkpoint is in {self.run_dir} "
                    f"(try a lower --lr or --grad-clip)",
                    exit_code=1,
                )
        p.step += 1
        p.chunk += 1
        p.chars_seen += x.numel() * self.dist.world
        if p.chunk >= self.chunks_per_epoch:
            p.chunk, p.epoch = 0, p.epoch + 1
        return loss_value, lr

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, Any]:
        """Forward, loss, backward and clipping on one chunk (x, y: (B, T) ids): sets every
        parameter's .grad and returns (loss in nats, gradient norm before clipping, new hidden
        state). `charrnn train --engine numpy` replaces this method, and only this one. Under
        DDP, backward() also averages the gradients over the processes."""
        with self.autocast():
            logits, hidden = self._forward(x, self.hidden)  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        return loss.item(), grad_norm.item(), hidden

    def _evaluate(self, lr: float, chars_per_sec: float) -> None:
        p, d, costs = self.progress, self.dist, self.costs
        started = time.perf_counter()
        ends = self._time_left() - costs.save_s() - (costs.sample_s(self.cfg.sample_chars) if self._sample_due(True) else 0.0)
        deadline = started + max(ends, 0.0) if math.isfinite(ends) else None  # keep --time-budget
        total, count = (
            evaluate_sum(self.model, self.val_ids, self.batch_size, self.cfg.seq_len, self.device, self.cfg.carry_state, d.rank, d.world, deadline)
            if len(self.val_ids)
            else (0.0, 0)
        )
        if count:
            costs.eval_per_char, costs.step_at_eval = (time.perf_counter() - started) / count, costs.step
        cut = deadline is not None and time.perf_counter() >= deadline
        loss_sum, loss_count, total, count, cut = d.sum([p.loss_sum, p.loss_count, total, count, float(cut)])
        if cut and len(self.val_ids):
            self._warn(f"evaluated {plural(int(count), 'validation character')} of {len(self.val_ids):,} to keep --time-budget {self.cfg.time_budget:g}")
        release_pages(self.streams)  # the pages of a memory-mapped corpus read so far: let them go
        release_pages(self.val_ids)
        train_loss = loss_sum / loss_count if loss_count else math.nan
        val_loss = total / count if len(self.val_ids) and count else None
        row = {
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
        p.loss_sum, p.loss_count = 0.0, 0
        self.last_eval = row
        score = val_loss if val_loss is not None else train_loss
        improved = math.isfinite(score) and score < p.best_loss
        if improved:
            p.best_loss = score
        if d.main:
            self._append_metrics(row)
        if improved:
            self.save("best.pt")
        self.events({"event": "eval", **row, "best": improved})

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

    def _error(self, message: str, exit_code: int = 2, kind: type[CharRNNError] = CharRNNError) -> CharRNNError:
        """An error every process meets at the same point: rank 0 reports it, the others just end."""
        return kind(message, exit_code, elsewhere=not self.dist.main)

    def _warn(self, message: str) -> None:
        self.events({"event": "warning", "message": message})
