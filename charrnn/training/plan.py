"""Planning a run before it starts: its folder, whether it is new, resumed or started from
another model's weights (and what may change on a resume), what --overwrite deletes and when,
which engine computes the gradients, and what is left after a write failed mid-run.

The command line parses the flags and calls these; every decision about a run is made here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.config import TrainConfig, build
from charrnn.errors import CharRNNError, WriteError
from charrnn.store.run_folder import RUN_FILES, RunFolder
from charrnn.training.runlock import RunLock

# Options that may change when a run is resumed: they do not change the model or the data.
RESUMABLE = {
    "max_steps",
    "max_epochs",
    "time_budget",
    "eval_every",
    "eval_chars",
    "eval_share",
    "save_every",
    "device",
    "threads",
    "precision",
    "compile",
    "engine",
    "name",
    "out",
    "size",
}

RESUMABLE |= {"sample_every", "sample_chars", "sample_prime"}  # live samples change nothing of the run


@dataclass
class Plan:
    """What a run starts from: its config, the checkpoint it resumes or takes its weights from,
    and the vocabulary those fix (None for a new run: the corpus decides)."""

    cfg: TrainConfig
    resume_ckpt: Any = None
    init_ckpt: Any = None
    vocab: Any = None


def check_flags(resume: bool, overwrite: bool, init_from: Path | None, nproc: int | None, world: int) -> None:
    """The flags that contradict each other, or this process."""
    if nproc is not None and nproc < 1:
        raise CharRNNError(f"--nproc {nproc} must be at least 1")
    if nproc is not None and world > 1:
        raise CharRNNError("--nproc launches torchrun; this process already runs under torchrun: leave --nproc out")
    if resume and overwrite:
        raise CharRNNError("--resume and --overwrite contradict each other: choose one")
    if resume and init_from:
        raise CharRNNError("--resume continues a run; --init-from starts a new one from weights: choose one")


def run_folder(cfg: TrainConfig, corpora: list[Path]) -> Path:
    """--out/--name, the name taken from the corpus when none is given."""
    first = corpora[0]
    return Path(cfg.out) / (cfg.name or (first.resolve().name if first.is_dir() else first.stem) or "corpus")


def plan_run(
    lock: RunLock,
    run_dir: Path,
    cfg: TrainConfig,
    file_values: dict,
    given: dict,
    resume: bool,
    overwrite: bool,
    init_from: Path | None,
    world: int,
) -> Plan:
    """Lock the run folder, check it and read the checkpoint to continue or start from (on
    `world` processes)."""
    lock.acquire()  # before anything in the folder is read: one writer per run folder
    plan = read_run(run_dir, cfg, file_values, given, resume, overwrite, init_from, world)
    if plan.cfg.engine == "numpy":
        from charrnn.training.numpy_engine import check_one_process

        check_one_process(world)
    return plan


def read_run(
    run_dir: Path,
    cfg: TrainConfig,
    file_values: dict,
    given: dict,
    resume: bool,
    overwrite: bool,
    init_from: Path | None,
    world: int,
) -> Plan:
    from charrnn.store import checkpoint

    if resume:
        return _resumed(run_dir, file_values, given, world)
    existing = RunFolder(run_dir).existing()
    if existing and not overwrite:
        raise CharRNNError(
            f"{run_dir} already holds a run ({', '.join(existing)}): use --resume to continue it, "
            f"--overwrite to replace it, or --name to start another"
        )
    if not init_from:
        return Plan(cfg)
    init_ckpt = checkpoint.load(init_from)
    shape = {k: getattr(init_ckpt.info.model, k) for k in ("cell", "layers", "hidden", "embed", "tie_weights")}
    clash = sorted(k for k, v in shape.items() if k in given and given[k] != v)
    if clash:
        flags = ", ".join("--" + k.replace("_", "-") for k in clash)
        raise CharRNNError(f"--init-from {init_from}: the model's shape is fixed by the checkpoint; drop {flags}")
    cfg = build(TrainConfig, {**file_values, **shape}, given)
    return Plan(cfg, init_ckpt=init_ckpt, vocab=init_ckpt.info.vocab)


def _resumed(run_dir: Path, file_values: dict, given: dict, world: int) -> Plan:
    from dataclasses import asdict

    from charrnn.store import checkpoint
    from charrnn.training.resume import layout_to_continue

    last = RunFolder(run_dir).last
    if not last.exists():
        raise CharRNNError(f"--resume: there is no {last} to continue (train without --resume first)")
    resume_ckpt = checkpoint.load(last)
    saved = resume_ckpt.info.config
    changed = sorted(k for k, v in {**file_values, **given}.items() if k not in RESUMABLE and getattr(saved, k) != v)
    if changed:
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        raise CharRNNError(f"--resume continues the run as it was: cannot change {flags}")
    cfg = build(TrainConfig, {**asdict(saved), **file_values}, given)
    if world > 1:  # can the run go on with this many processes? (the Trainer asks too; one process always can)
        layout_to_continue(resume_ckpt.info, world)  # (refused here, before torchrun starts any)
    return Plan(cfg, resume_ckpt=resume_ckpt, vocab=resume_ckpt.info.vocab)


def check_init_vocab(plan: Plan, vocab_size: int, init_from: Path | None) -> None:
    """The corpus read with an --init-from checkpoint's vocabulary must fit its model."""
    if plan.init_ckpt is not None and vocab_size != plan.init_ckpt.info.model.vocab_size:
        raise CharRNNError(f"--init-from {init_from}: damaged checkpoint (vocabulary and model disagree)")


def trainer_class(cfg: TrainConfig):
    """Who computes the gradients: torch's autograd, or the hand-written BPTT (--engine numpy)."""
    if cfg.engine == "numpy":
        from charrnn.training.numpy_engine import NumpyTrainer

        return NumpyTrainer
    from charrnn.training.trainer import Trainer

    return Trainer


def clear_for_overwrite(run_dir: Path) -> None:
    """--overwrite: the old run's files go, only once the new run has checked out (so a typo
    does not lose a run)."""
    for f in RUN_FILES:
        (run_dir / f).unlink(missing_ok=True)


def after_failed_write(exc: WriteError, run_dir: Path, hint: Callable[[bool], str]) -> WriteError:
    """A write failed during training (a full disk): leave the run folder resumable, or clean if
    nothing of the run can be resumed, and say the one command that goes on once there is room
    (`hint(resume)` writes it)."""
    folder = RunFolder(run_dir)
    last, best = folder.last, folder.best
    if not last.exists() and best.exists():  # best.pt is a whole checkpoint: the run resumes from its step
        try:
            os.link(best, last)  # a second name takes no room on a full disk
        except OSError:
            with contextlib.suppress(OSError):
                os.replace(best, last)
    if last.exists():
        return WriteError(f"{exc}; once there is room, {hint(True)}")
    for path in (best, folder.metrics):  # a new run with nothing to resume from: leave no trace
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    return WriteError(f"{exc}; nothing of this run was kept: once there is room, {hint(False)}")


def size_model(plan: Plan, given: set[str], train_chars: int, vocab_size: int, started: float, local_world: int = 1):
    """--size auto and --precision auto, decided for this corpus, budget and machine (see
    sizing.py): the model options `given` leaves out, on a new run (a resumed run or one started
    from another model's weights keeps its shape), and the precision. Returns (config, Choice or
    None, the precision's line for the user or None when nothing was probed for it).

    With a time budget the precision is probed first (on the model the run will train if its
    shape is given, else on the ladder's reference rung), so that the model is sized at the speed
    it will train at; without one, on the model chosen."""
    import time

    from charrnn.training import sizing

    cfg = plan.cfg
    size = cfg.size or ("default" if given & set(sizing.CHOSEN) else "auto")  # auto unless a model option is given
    sizes = size == "auto" and plan.resume_ckpt is None and plan.init_ckpt is None and cfg.engine != "numpy"
    if cfg.precision == "auto" and cfg.engine == "numpy":
        cfg = dataclasses.replace(cfg, precision="fp32")
    if not sizes and cfg.precision != "auto":
        return cfg, None, None
    import torch

    from charrnn.machine.device import pick_device
    from charrnn.machine.threads import cores_here, threads_for_command
    from charrnn.training.resources import memory_problem

    device = pick_device(cfg.device)
    if cfg.precision == "auto" and not sizing.bf16_native(device):  # (emulated bf16 is slower than fp32)
        cfg = dataclasses.replace(cfg, precision="fp32")
        if not sizes:
            return cfg, None, None
    threads = cfg.threads if isinstance(cfg.threads, int) else threads_for_command(max(1, cores_here() // local_world))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        left = None if cfg.time_budget is None else cfg.time_budget - (time.monotonic() - started)
        measured: dict = {}

        def speed_of(m, batch: int, seq_len: int, precision: str) -> float:
            key = (repr(m), batch, seq_len, precision)  # (ModelConfig is not hashable)
            if key not in measured:
                seconds = sizing.probe_seconds(left)
                measured[key] = sizing.measure_speed(
                    m, batch, seq_len, seconds, device, precision=precision, dropout_mask=cfg.dropout_mask
                )
            return measured[key]

        def decide_precision(c: TrainConfig, model, batch: int):
            fp32 = dataclasses.replace(c, precision="fp32")
            if sizing.short_run(model, sizing.untimed_reads(c, train_chars, batch * c.seq_len), left):
                return fp32, None
            if memory_problem(model, batch, c.seq_len, device, local_world) is not None:
                return fp32, None  # (the Trainer refuses it, in one line, before allocating anything)
            if vocab_size > sizing.LARGE_VOCAB:
                return fp32, sizing.LARGE_VOCAB_LINE.format(vocab=vocab_size)
            probes: dict = {}

            def probe(precision: str, seconds: float) -> float:
                if precision not in probes:
                    probes[precision] = sizing.speed_probe(
                        model, batch, c.seq_len, device, precision=precision, dropout_mask=c.dropout_mask
                    )
                return probes[precision](seconds, min_steps=2)

            try:
                precision, line, speeds = sizing.choose_precision(probe, sizing.probe_seconds(left))
                for p, speed in speeds.items():  # (sizing reuses them: the same model is not timed twice)
                    measured[(repr(model), batch, c.seq_len, p)] = speed
            except RuntimeError as exc:  # (torch refused bf16 here after all: the Trainer's own check would too)
                return fp32, f"--precision auto: fp32 (bf16 could not be timed here: {str(exc).splitlines()[0][:120]})"
            return dataclasses.replace(c, precision=precision), line

        line = None
        if cfg.precision == "auto" and left is not None:
            model, batch = sizing.reference(cfg, given if sizes else set(sizing.CHOSEN), train_chars, vocab_size)
            cfg, line = decide_precision(cfg, model, batch)
            left = cfg.time_budget - (time.monotonic() - started)  # (less the probe's seconds)
        choice = None
        if sizes:
            choice = sizing.choose(
                cfg,
                given,
                train_chars,
                vocab_size,
                speed_of=lambda m, batch, seq_len: speed_of(m, batch, seq_len, cfg.precision),
                seconds_left=left,
                fits=lambda m, batch: memory_problem(m, batch, cfg.seq_len, device, local_world) is None,
                device_type=device.type,
            )
            cfg = sizing.apply(cfg, choice)
        if cfg.precision == "auto":
            cfg, line = decide_precision(cfg, cfg.model_config(vocab_size), cfg.batch_size)
    finally:
        torch.set_num_threads(before)
    return cfg, choice, line


def check_time_to_train(trainer, step_seconds: float = 0.0) -> None:
    """Refuse a --time-budget that start-up has used up, before the first step: one the loop
    would end at once, with 0 steps trained and an untrained last.pt written, after --size auto
    had promised characters to read. Asked of the built Trainer, with its own clock and the
    numbers its loop decides by: the time counted so far (start-up included), the time kept for
    the run's end (a last evaluation, a live sample, the save), and `step_seconds` (one step, as
    --size auto measured it; 0 when unknown). A resumed run that had already reached its limit
    is not refused here (the Trainer says so, and ends)."""
    import math

    budget, progress = trainer.budget, trainer.progress
    if not trainer.cfg.time_budget or budget.limits_reached(progress):
        return
    startup = trainer.clock() - trainer.started_at
    reserve = budget.end_reserve(trainer.samples.chars_at(progress.step))
    left = budget.budget_end() - reserve - (progress.train_seconds + startup)
    if left > step_seconds:
        return
    needed = progress.train_seconds + startup + reserve + step_seconds
    suggest = max(10, math.ceil(2 * needed / 5) * 5)  # (room for some training: twice the cost, in 5 s)
    before = (  # a resumed run's budget is its total: say what it had used already
        f"the run already used {progress.train_seconds:.1f} s of it, " if progress.train_seconds > 0 else ""
    )
    raise CharRNNError(
        f"--time-budget {trainer.cfg.time_budget:g} leaves no time to train: {before}start-up took {startup:.1f} s "
        f"and the run's end keeps {reserve:.1f} s (a last evaluation and save), so not one step would run; "
        f"nothing was trained or written. Give --time-budget {suggest} or more"
    )
