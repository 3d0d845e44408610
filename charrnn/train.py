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
import contextlib
import hashlib
import json
import math
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from charrnn import __version__, checkpoint
from charrnn.batches import batchify, fit_batch_size, get_chunk, num_chunks, release_pages, resume_batch_size, shard_rows
from charrnn.config import ModelConfig, SampleConfig, TrainConfig
from charrnn.device import memory_bytes, pick_device
from charrnn.distributed import Dist, state_digest
from charrnn.errors import CharRNNError, plural
from charrnn.files import make_folder, write_failure
from charrnn.metadata import CheckpointInfo, Corpus, Progress
from charrnn.model import CharRNN, count_parameters, detach_hidden, hidden_from_list, hidden_to_list
from charrnn.numpy_ref import CELLS
from charrnn.sample import generate_text
from charrnn.stepper import TorchStepper
from charrnn.threads import METER, ThreadPolicy, cores_here
from charrnn.vocab import Vocab, describe_chars
from charrnn.weights import expected_shapes

LN2 = math.log(2)
MAX_BAD_STEPS = 10  # consecutive non-finite losses/gradients before giving up

Events = Callable[[dict[str, Any]], None]


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


SAMPLED_DIGEST_POINTS = 1 << 20


def ids_digest(ids: np.ndarray) -> str:
    """A cheap fingerprint of an id array of any size: its length, dtype and about a million ids
    spread evenly over it (a memory-mapped corpus of gigabytes is not read whole). The command
    line uses the prepared corpus' content hash instead; this is for ids from elsewhere."""
    h = hashlib.sha1(f"{len(ids)}:{ids.dtype}".encode())
    step = max(1, len(ids) // SAMPLED_DIGEST_POINTS)
    h.update(np.ascontiguousarray(ids[::step]).tobytes())
    h.update(np.ascontiguousarray(ids[-4096:]).tobytes())
    return h.hexdigest()


def unigram_entropy(ids: np.ndarray, chunk: int = 1 << 20) -> float:
    """The loss (nats/char) of predicting every character by its frequency in `ids` alone: what a
    model that learned nothing of the order of characters reaches. Counted a chunk at a time, and
    the pages of a memory-mapped corpus let go after, so memory does not grow with the corpus."""
    counts = np.zeros(0, dtype=np.int64)
    for start in range(0, len(ids), chunk):
        c = np.bincount(ids[start : start + chunk])
        counts = np.pad(counts, (0, max(0, len(c) - len(counts))))
        counts[: len(c)] += c
    release_pages(ids)
    p = counts[counts > 0] / max(1, counts.sum())
    return float(-(p * np.log(p)).sum())


def learned_nothing(last_eval: dict[str, Any], ids: np.ndarray, vocab_size: int) -> str | None:
    """A warning when a run's last evaluation (validation loss, else training loss) is above its
    corpus' unigram entropy: it learned nothing that counting characters would not give (a --lr
    far too high, or far too few steps); None when it did better."""
    loss = last_eval["val_loss"] if last_eval["val_loss"] is not None else last_eval["train_loss"]
    floor = unigram_entropy(ids)
    if loss <= floor:
        return None
    diverged = not loss <= 2 * math.log(vocab_size)  # (or nan) far worse than an untrained model's guess
    return (
        f"the model did not learn: its loss {loss:.4g} is above the corpus' unigram entropy {floor:.3f} nats/char "
        f"(the loss of predicting characters by their frequency alone); {'' if diverged else 'train longer, or '}try a lower --lr"
    )


def training_bytes(model_cfg: ModelConfig, batch_size: int, seq_len: int) -> tuple[int, int]:
    """(parameters, bytes) to train a model of this shape, at least: 16 bytes a parameter (fp32
    weights, gradients and AdamW's two moments) and the activations that one chunk of
    `batch_size` x `seq_len` characters keeps for back-propagation (the embedding, each layer's
    gates and states, the logits and their gradient). Computed from the shapes, allocating
    nothing."""
    params = sum(math.prod(shape) for shape in expected_shapes(model_cfg).values())
    layer = (CELLS[model_cfg.cell].gates + 2) * model_cfg.hidden
    per_char = model_cfg.embed + model_cfg.layers * layer + 3 * model_cfg.vocab_size
    return params, 4 * (4 * params + batch_size * seq_len * per_char)


def memory_problem(model_cfg: ModelConfig, batch_size: int, seq_len: int, device: torch.device, processes: int = 1) -> str | None:
    """Why a model cannot be trained on `device` (shared by `processes` processes when it is the
    machine's memory), or None when it may fit."""
    params, need = training_bytes(model_cfg, batch_size, seq_len)
    have = memory_bytes(device)
    share = processes if device.type != "cuda" else 1
    if have is None or need * share <= have:
        return None
    where = "the GPU" if device.type == "cuda" else "this machine"
    return (
        f"the model is too large to train here: {params:,} parameters need about {need * share / 1e9:,.1f} GB "
        f"(weights, gradients, optimizer state and activations{f' in each of {share} processes' if share > 1 else ''}), "
        f"and {where} has {have / 1e9:,.1f} GB; choose a smaller --hidden, --layers, --embed or --batch-size"
    )


def evaluate_sum(model: CharRNN, ids: np.ndarray, batch_size: int, seq_len: int, device, carry_state: bool = True, rank: int = 0, world: int = 1, deadline: float | None = None) -> tuple[float, int]:
    """Summed cross-entropy (nats) and the number of characters it covers, over this process'
    share of `ids`: the ids are laid out as `batch_size` x `world` streams, and process `rank`
    evaluates its block of them with carried state (unless told not to). At `deadline` (a
    time.perf_counter() value) it stops after the chunk in hand: the loss of the first chunks."""
    seq_len = min(seq_len, len(ids) - 1)
    n_streams = max(1, fit_batch_size(len(ids), seq_len, batch_size * world))
    streams = batchify(ids, n_streams)[shard_rows(n_streams, rank, world)]
    was_training = model.training
    model.eval()
    total, count, hidden = 0.0, 0, None
    with torch.no_grad():
        for index in range(num_chunks(streams, seq_len) if len(streams) else 0):
            x, y = (t.to(device) for t in get_chunk(streams, index, seq_len))
            logits, hidden = model(x, hidden if carry_state else None)
            total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
            count += y.numel()
            if deadline is not None and time.perf_counter() >= deadline:
                break
    model.train(was_training)
    return total, count


def evaluate(model: CharRNN, ids: np.ndarray, batch_size: int, seq_len: int, device, carry_state: bool = True) -> float:
    """Mean cross-entropy (nats/char) over `ids`, streaming with carried state (unless told not to)."""
    total, count = evaluate_sum(model, ids, batch_size, seq_len, device, carry_state)
    return total / max(count, 1)


def resumed_batch_size(meta: dict[str, Any], world: int, default: int) -> tuple[int, str | None]:
    """Streams per process that continue the run saved with `meta` on `world` processes (the same
    streams, from the same position), and a note when that is not how it was trained. A clear
    error when its streams cannot be split evenly over `world` processes."""
    saved_batch, saved_world = meta.get("batch_size"), meta.get("world_size", 1)
    if not isinstance(saved_batch, int) or not isinstance(saved_world, int):
        return default, None
    if saved_world == world:
        return saved_batch, None
    batch = resume_batch_size(saved_batch, saved_world, world)
    total = saved_batch * saved_world
    trained = f"{saved_world} process{'es' if saved_world > 1 else ''} x {saved_batch} streams"
    if batch is None:
        raise CharRNNError(
            f"cannot resume on {world} processes: the run was trained by {trained}, and its {total} "
            f"streams do not split evenly over {world}; resume with {saved_world} processes "
            f"(--nproc {saved_world}), or any number that divides {total}"
        )
    return batch, (
        f"the run was trained by {trained}; continuing on {world} x {batch}: the same {total} streams "
        f"from the same position (dropout draws other random numbers)"
    )


def autocast_for(precision: str, model: CharRNN, device: torch.device, warn: Callable[[str], None]):
    """A context-manager factory that runs the forward pass in `precision` (autocast), or in
    fp32 with a warning where this device cannot (fp16 on a CPU; bf16 RNN kernels on CPUs
    without bf16 support, found by a one-off probe that touches no state or RNG)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    if device.type == "cpu" and dtype is torch.float16:
        warn("--precision fp16 is not supported on the CPU; training in fp32 (try bf16)")
        return contextlib.nullcontext
    factory = lambda: torch.autocast(device_type=device.type, dtype=dtype)  # noqa: E731
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), factory():
            model(torch.zeros(1, 2, dtype=torch.long, device=device))
    except RuntimeError as exc:
        warn(f"--precision {precision} is not supported here ({str(exc).splitlines()[0][:120]}); training in fp32")
        return contextlib.nullcontext
    finally:
        model.train(was_training)
    return factory


class CorpusTooShort(CharRNNError):
    """The corpus has not one chunk of --seq-len to train on (the command line forgets its cache entry)."""


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

    # ----------------------------------------------------------------- schedule and limits
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
                "parameters": count_parameters(self.model),
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

    # ----------------------------------------------------------------- threads and the clock
    def _thread_policy(self) -> ThreadPolicy | None:
        """--threads N pins the count; auto (None) follows the free cores of this process' share
        of the machine, probing other counts while training on a CPU in a single process (the
        processes of a distributed run, whose steps wait for each other, follow the load alone)."""
        if self.cfg.threads not in (None, "auto"):
            return None
        local = self.dist.local_world
        cores = max(1, cores_here() // local)
        return ThreadPolicy(cores, METER, probe=self.device.type == "cpu" and self.dist.world == 1, siblings=local - 1, chars_per_step=self.batch_size * self.cfg.seq_len)

    def _adapt_threads(self, step_seconds: float) -> None:
        if self.policy is None:
            return
        threads = self.policy.step_done(step_seconds)
        if threads is not None and threads != self.threads:
            torch.set_num_threads(threads)
            self.threads = threads
        decision = self.policy.take_decision()
        if decision is not None and (decision.threads != decision.previous or decision.reason == "first measurement"):
            self._note({"event": "threads", "step": self.progress.step, "threads": decision.threads, "previous": decision.previous,
                        "reason": decision.reason, "others": decision.others, "chars_per_sec": decision.rates, "message": decision.describe()})

    def _note(self, row: dict[str, Any]) -> None:
        """A note about the run (not an evaluation): shown, and kept in metrics.jsonl."""
        self.events(row)
        if self.dist.main:
            self._append_metrics({k: v for k, v in row.items() if k != "message"})

    def _measured_step(self, seconds: float) -> None:
        """Also the guesses for what has not run yet: a save writes the weights and two AdamW
        moments (at a modest 200 MB/s); a live sample's character costs about a forward time
        step of the batch, a third of a training step over seq_len (at least 0.5 ms)."""
        c = self.costs
        self._recent_steps.append(seconds)
        c.step = float(np.median(self._recent_steps))  # one slow step under load would swing the reserve
        c.guess_save = 0.01 + 12 * count_parameters(self.model) / 200e6
        c.guess_sample_per_char = max(seconds / (3 * self.cfg.seq_len), 5e-4)

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
        return self._budget_end() - self.progress.train_seconds - (time.perf_counter() - self._tick)

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

    def _sample_due(self, evaluated: bool) -> bool:
        every = self.cfg.sample_every
        return evaluated if every is None else every > 0 and self.progress.step % every == 0

    def _sample(self) -> None:
        """A short text at the fixed prime and seed, so that the same sentence is seen improving.

        Dropout is off (eval mode) and the draws come from their own NumPy generator, so neither
        the torch RNG nor the model's training mode is changed: resuming stays exact.
        """
        if not self.dist.main:  # only rank 0 shows it
            return
        cfg = self.cfg
        sample_cfg = SampleConfig(length=cfg.sample_chars, temp=0.8, prime=cfg.sample_prime, seed=cfg.seed)
        started = time.perf_counter()
        try:
            text = generate_text(TorchStepper(self.model, self.device), self.vocab, sample_cfg)[0]
        finally:
            self.model.train()
        self.costs.sample_per_char = (time.perf_counter() - started) / max(1, len(cfg.sample_prime) + cfg.sample_chars)
        self.events({"event": "sample", "step": self.progress.step, "prime": cfg.sample_prime, "text": text})

    # ----------------------------------------------------------------- checkpoints
    def _gather_state(self) -> dict[str, Any]:
        """What each process alone knows (hidden and random state, loss accumulators), from all
        of them, laid out as for one process with all the streams. A collective: every process
        calls it at the same step."""
        mine = {
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "hidden": hidden_to_list(self.hidden),
            "loss": (self.progress.loss_sum, self.progress.loss_count),
            "weights": state_digest(self.model.state_dict()) if self.dist.world > 1 else None,
        }
        parts = self.dist.gather(mine)
        digests = [part["weights"] for part in parts]
        if len(set(digests)) > 1:
            raise self._error(f"the processes' weights differ (a bug, please report it): {digests}", exit_code=1)
        rng = {"torch": parts[0]["rng"]}
        if parts[0]["cuda_rng"] is not None:
            rng["cuda"] = parts[0]["cuda_rng"]
        for rank, part in enumerate(parts[1:], start=1):
            rng[f"torch.{rank}"] = part["rng"]
            if part["cuda_rng"] is not None:
                rng[f"cuda.{rank}"] = part["cuda_rng"]
        hidden = [torch.cat(tensors, dim=1) for tensors in zip(*(part["hidden"] for part in parts))]  # (L, B x P, H)
        loss = [sum(part["loss"][i] for part in parts) for i in (0, 1)]
        return {"rng": rng, "hidden": hidden, "loss": loss, "digests": digests}

    def meta(self, state: dict[str, Any] | None = None) -> dict[str, Any]:
        progress = dataclasses.replace(self.progress)
        if state is not None:  # the loss accumulated by all processes
            progress.loss_sum, progress.loss_count = state["loss"]
        return CheckpointInfo(
            charrnn_version=__version__,
            vocab=self.vocab,
            model=self.model_cfg,
            config=self.cfg,
            progress=progress,
            batch_size=self.batch_size,
            world_size=self.dist.world,
            corpus=Corpus(path=self.corpus_path, train_chars=self.train_chars, digest=self.data_digest),
            saved_at=time.time(),
            weights_digests=state["digests"] if state is not None and self.dist.world > 1 else None,
        ).to_meta()

    def save(self, filename: str) -> Path:
        """Write a checkpoint (rank 0; every process must call this at the same step)."""
        path = self.run_dir / filename
        state = self._gather_state()
        if not self.dist.main:
            return path
        ckpt = checkpoint.Checkpoint(
            meta=self.meta(state),
            model={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            optimizer=self.optimizer.state_dict(),
            rng=state["rng"],
            hidden=state["hidden"],
        )
        started = time.perf_counter()
        checkpoint.save(ckpt, path)
        self.costs.save = time.perf_counter() - started
        self.events({"event": "save", "path": str(path), "step": self.progress.step})
        return path

    def _restore(self, ckpt: checkpoint.Checkpoint) -> None:
        meta, d = ckpt.meta, self.dist
        if len(set(d.gather(meta["progress"]["step"]))) > 1:  # they would part ways at the first evaluation
            raise CharRNNError("the processes were given different checkpoints to resume from (load it on rank 0 and share it)", exit_code=1)
        saved_total = meta.get("batch_size", 0) * meta.get("world_size", 1)
        if not self._same_corpus(meta["corpus"]["digest"], "world_size" in meta) or saved_total != self.batch_size * d.world:
            raise self._error(
                "cannot resume: the corpus (or the batch layout) differs from the one this run was "
                "trained on; use --init-from to fine-tune on a new corpus instead"
            )
        if meta["progress"]["chunk"] >= self.chunks_per_epoch:  # (the same corpus and layout: never, unless edited)
            raise self._error(f"cannot resume: the checkpoint is damaged: its position, chunk {meta['progress']['chunk']:,}, is past the end of an epoch ({self.chunks_per_epoch:,} chunks)")
        self.model.load_state_dict(ckpt.model)
        if ckpt.optimizer:
            self.optimizer.load_state_dict(ckpt.optimizer)
        self.progress = Progress(**meta["progress"])
        if not d.main:  # rank 0 carries on with the loss all the processes had accumulated
            self.progress.loss_sum, self.progress.loss_count = 0.0, 0
        rng = ckpt.rng or {}
        same_world = meta.get("world_size", 1) == d.world
        suffix = "" if d.main else f".{d.rank}"
        if (d.main or same_world) and "torch" + suffix in rng:
            torch.set_rng_state(rng["torch" + suffix])
            if "cuda" + suffix in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda" + suffix], self.device)
        hidden = [t[:, self.rows] for t in ckpt.hidden or []]  # this process' streams of all of them
        self.hidden = hidden_from_list(hidden, self.model_cfg.cell, self.device)
        self.progress.best_loss = d.from_main(lambda: self._best_loss_so_far(self.progress.best_loss))

    def _same_corpus(self, digest: str, current_format: bool) -> bool:
        """Whether a checkpoint's corpus digest is this corpus'. Checkpoints from before prepared
        corpora (no world_size) hashed the training ids whole: compare those the same way."""
        if digest == self.data_digest:
            return True
        return not current_format and digest == hashlib.sha1(np.ascontiguousarray(self._train_ids).tobytes()).hexdigest()

    def _best_loss_so_far(self, best_loss: float) -> float:
        """best.pt may be newer than last.pt: never replace it by a worse one."""
        self._truncate_metrics(self.progress.step)
        best = self.run_dir / "best.pt"
        if best.exists():
            try:
                return min(best_loss, checkpoint.load(best).meta["progress"]["best_loss"])
            except (CharRNNError, KeyError, TypeError):
                pass
        return best_loss

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


def model_from_checkpoint(ckpt: checkpoint.Checkpoint, device="cpu") -> tuple[CharRNN, Vocab]:
    """Rebuild the model and vocabulary stored in a checkpoint."""
    try:
        vocab = Vocab.from_json(ckpt.meta["vocab"])
        model = CharRNN(ModelConfig(**ckpt.meta["model"]))
        model.load_state_dict(ckpt.model)
    except Exception as exc:
        raise CharRNNError(f"damaged checkpoint: cannot rebuild the model ({exc})") from None
    return model.to(device).eval(), vocab
