"""`charrnn.train(corpus, **options)`: a training run from Python, with every decision the command
makes (`charrnn train` is a thin driver over it).

    run = charrnn.train("shakespeare.txt", time_budget=300, callbacks=[PlainProgress()])
    run.best, run.metrics[-1]["val_loss"], run.model().generate("ROMEO:")

A run goes through the same steps as the command, in this order: the options (keyword arguments,
over a `config` TOML file, over the defaults of `TrainConfig`), the run folder (locked: one writer
per folder), the plan (new, resumed or started from another model's weights: training/plan.py), the
corpus (prepared once into the cache), `--size auto` (training/sizing.py), the Trainer, and the fit.
Under torchrun each process calls `train()`; rank 0 decides and reports.

Progress goes to `callbacks`: callables taking the event dicts the Trainer emits ("start", "step",
"eval", "sample", "save", "threads", "warning", "stopping" (a stopped run evaluating its last
step first; a "message"), "end") and those the run adds around them:

- "preparing" (phase, done, total: bytes of a corpus being prepared), then "prepared";
- "planned" (run_dir, resumed, init_from), "engine" (numpy's gradients), "corpus" (its size and
  split), "sized" (what --size auto chose), "precision" (what --precision auto probed and chose):
  each with a "message", a line for people;
- "done" (the summary, as the Trainer's "end" event, once the callbacks' contexts are closed), and
  after it a "warning" if the model over-fitted (its validation loss rose from its best while the
  training loss fell) or learned nothing (judged on its best loss), or else a "verdict" (how the
  loss compares with runs like it; a "message");
- a "warning", once, while a run's validation loss has only risen for a while (over-fitting).
- a "warning", before training, for a new model of several layers on thousands of distinct
  characters that no one asked for (two layers learned far less than one on such text).

Callbacks are called in the main process only. A callback that is a context manager (the
command's live display) is entered just before training starts and left when it ends. Nothing
here prints, exits or installs a signal handler: errors are `CharRNNError`s with the command's
one-line messages, and a run is stopped by a `Stop` (which the command calls from its handlers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from charrnn.api.run import Run, Stop
from charrnn.config import ReadConfig, TrainConfig, build, defaults, read_toml
from charrnn.errors import CharRNNError, WriteError, plural

Callback = Callable[[dict[str, Any]], None]
READ_OPTIONS = tuple(defaults(ReadConfig))  # encoding, errors, keep_newlines, separator
__all__ = ["Callback", "Run", "Stop", "check_processes", "prepare_run", "train"]


def train(
    corpus: str | Path | Iterable[str | Path],
    *,
    config: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    init_from: str | Path | None = None,
    cache_dir: str | Path | None = None,
    callbacks: Iterable[Callback] = (),
    stop: Stop | None = None,
    started_at: float | None = None,
    resume_hint: Callable[[bool], str] | None = None,
    **options: Any,
) -> Run:
    """Train a model on `corpus` (a file or folder, or several: joined with `separator`) and
    return its `Run`, with the command's defaults, checks, --size auto and time budget.

    `options`: the fields of `charrnn.TrainConfig` (cell, layers, hidden, max_steps, time_budget, out,
    name...; `help(charrnn.TrainConfig)` lists them with their defaults, `charrnn train --help` with
    their meanings)
    and `ReadConfig`'s (encoding, errors, keep_newlines, separator); None means "not given", as a
    flag left out (--size auto chooses the model options not given). `config`: a TOML file of
    options, under these. `resume`: continue the run in out/name from its last.pt; `overwrite`:
    replace it; `init_from`: start from that checkpoint's weights. `cache_dir`: where prepared
    corpora are kept ($CHARRNN_CACHE or .charrnn-cache). `stop`: a `Stop` to end it early.
    `started_at`: the time.monotonic() a time budget counts from (default: now; the command
    passes when it began). `resume_hint(resumable)`: how the error of a failed write says to go
    on (the command writes its own command line)."""
    setup = _Setup(
        corpus,
        config=config,
        resume=resume,
        overwrite=overwrite,
        init_from=init_from,
        cache_dir=cache_dir,
        callbacks=callbacks,
        started_at=started_at,
        **options,
    )
    return setup.run(stop or Stop(), resume_hint or _python_hint)


@contextlib.contextmanager
def prepare_run(corpus, processes: int, **kwargs: Any) -> Iterator[Path]:
    """For a run the caller launches in `processes` processes (the command's --nproc starts
    torchrun): plan and check it, its device, and prepare the corpus, once, here. Takes `train`'s
    arguments (but stop and resume_hint); yields the run folder, locked while inside (the
    launched processes find it held for them)."""
    from charrnn.machine.device import pick_device

    check_processes(processes)
    setup = _Setup(corpus, **kwargs)

    with setup.lock:
        planned = setup.plan(processes)
        pick_device(planned.cfg.device)  # a device that is not here: one error now, not one per process
        setup.load(planned.vocab)  # the processes find it in the cache
        yield setup.run_dir


def check_processes(nproc: int | None) -> None:
    """A number of processes to train in (the command's --nproc): at least 1, and not asked of a
    process that already runs under torchrun."""
    from charrnn.training import plan
    from charrnn.training.distributed import Dist

    plan.check_flags(False, False, None, nproc, Dist.from_env().world)


def _python_hint(resumable: bool) -> str:
    return "call train() again with resume=True" if resumable else "call train() again"


class _Setup:
    """One call of `train()`: its options, process, run folder and callbacks, and its steps."""

    def __init__(
        self,
        corpus,
        *,
        config=None,
        resume: bool = False,
        overwrite: bool = False,
        init_from=None,
        cache_dir=None,
        callbacks: Iterable[Callback] = (),
        started_at: float | None = None,
        **options: Any,
    ):
        from charrnn.training import plan
        from charrnn.training.distributed import Dist
        from charrnn.training.runlock import RunLock

        self.corpora = [Path(corpus)] if isinstance(corpus, (str, Path)) else [Path(c) for c in corpus]
        if not self.corpora:
            raise CharRNNError("no corpus given: name one or more files or folders")
        self.read_options = {**defaults(ReadConfig), **{k: options.pop(k) for k in READ_OPTIONS if k in options}}
        self.resume, self.overwrite = resume, overwrite
        self.init_from = Path(init_from) if init_from is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.started = time.monotonic() if started_at is None else started_at
        self.dist = Dist.from_env()
        plan.check_flags(resume, overwrite, self.init_from, None, self.dist.world)
        self.file_values = read_toml(config, TrainConfig) if config else {}
        if isinstance(options.get("out"), Path):  # (a folder: TrainConfig keeps it as text, as the flag)
            options["out"] = str(options["out"])
        self.given = {k: v for k, v in options.items() if v is not None}
        self.cfg = build(TrainConfig, self.file_values, self.given)
        self.run_dir = plan.run_folder(self.cfg, self.corpora)
        self.lock = RunLock(self.run_dir)  # taken by plan(), on the process that writes the run folder
        self.precision_line: str | None = None  # what --precision auto probed (size())
        self.callbacks = list(callbacks) if self.dist.main else []
        self.last_eval: dict[str, Any] | None = None
        from charrnn.training.expected import Overfitting

        self.overfitting, self.told_overfitting = Overfitting(), False

    def emit(self, event: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback(event)
        if event["event"] == "eval":
            self.last_eval = event
            self.watch(event)

    def watch(self, row: dict[str, Any]) -> None:
        """Tell, once, a run whose validation loss has only risen for a while (PATIENCE
        evaluations) while its training loss fell: it goes on to its limit, but the user may
        stop it (best.pt keeps the best)."""
        from charrnn.training.expected import PATIENCE

        self.overfitting.add(row)
        if not self.told_overfitting:
            line = self.overfitting.diagnosis(PATIENCE)
            if line:
                self.told_overfitting = True
                self.warn(f"{line} (the run goes on to its limit; stopping it now loses nothing)")

    def warn(self, message: str) -> None:
        self.emit({"event": "warning", "message": message})

    def plan(self, world: int):
        """Lock the run folder, check it, read what the run continues or starts from."""
        from charrnn.training import plan

        planned = plan.plan_run(
            self.lock,
            self.run_dir,
            self.cfg,
            self.file_values,
            self.given,
            self.resume,
            self.overwrite,
            self.init_from,
            world,
        )
        resumed = planned.resume_ckpt is not None
        init_from = None if self.init_from is None else str(self.init_from)
        self.emit({"event": "planned", "run_dir": str(self.run_dir), "resumed": resumed, "init_from": init_from})
        return planned

    def load(self, vocab):
        """The corpus, prepared into the cache (or found there), read with `vocab` if one is fixed."""
        from charrnn.data.prepare import default_cache_dir, load_corpus

        def progress(phase: str, done: int, total: int) -> None:
            self.emit({"event": "preparing", "phase": phase, "done": done, "total": total})

        try:
            return load_corpus(
                self.corpora,
                vocab=vocab,
                cache_dir=self.cache_dir or default_cache_dir(),
                progress=progress,
                warn=self.warn,
                **self.read_options,
            )
        finally:
            self.emit({"event": "prepared"})

    def run(self, stop: Stop, hint: Callable[[bool], str]) -> Run:
        from charrnn.training import plan

        dist = self.dist
        if dist.world > 1:  # (a single process picks its device in the Trainer, after checking the options)
            from charrnn.machine.device import pick_device

            dist.start(pick_device(self.cfg.device))
        try:
            planned = dist.from_main(lambda: self.plan(dist.world))
            data = dist.local_first(lambda: self.load(planned.vocab))
            planned, choice = self.size(planned, data)
            trainer = self.trainer(planned, data)
            step_s = (
                None if choice is None or not choice.speed else trainer.batch_size * planned.cfg.seq_len / choice.speed
            )
            dist.from_main(lambda: plan.check_time_to_train(trainer, step_s or 0.0))  # (before --overwrite deletes)
            if self.overwrite and dist.main:  # only now that all checked out: replaced, not lost to a typo
                plan.clear_for_overwrite(self.run_dir)
            self.describe(data, planned.cfg, choice, fresh=planned.resume_ckpt is None and planned.init_ckpt is None)
            summary = self.fit(trainer, stop, hint)
        finally:
            dist.close()
            self.lock.release()
        self.report(summary, data)
        return Run(self.run_dir, summary, planned.cfg)

    def size(self, planned, data):
        """--size auto (training/sizing.py), decided by rank 0 for every process: the plan with the
        chosen model options, and the choice (None when nothing was chosen)."""
        from charrnn.training import plan
        from charrnn.training.distributed import command_started

        given, dist = set(self.given) | set(self.file_values), self.dist
        train_chars = len(data.split(planned.cfg.val_frac)[0])
        cfg, choice, self.precision_line = dist.from_main(
            lambda: plan.size_model(
                planned, given, train_chars, len(data.vocab), command_started(self.started), dist.local_world
            )
        )
        return dataclasses.replace(planned, cfg=cfg), choice

    def trainer(self, planned, data):
        """The Trainer of the planned run on the loaded corpus (a corpus too short for it leaves
        no cache entry behind)."""
        from charrnn.data.prepare import forget
        from charrnn.training import plan
        from charrnn.training.distributed import command_started
        from charrnn.training.trainer import CorpusTooShort

        cfg = planned.cfg
        plan.check_init_vocab(planned, len(data.vocab), self.init_from)
        train_ids, val_ids = data.split(cfg.val_frac)
        if cfg.engine == "numpy":
            message = "engine numpy: gradients by the hand-written BPTT of charrnn/numpy_ref.py"
            self.emit({"event": "engine", "message": message})
        try:
            return plan.trainer_class(cfg)(
                cfg,
                data.vocab,
                train_ids,
                val_ids,
                self.run_dir,
                events=self.emit,
                resume_from=planned.resume_ckpt,
                init_from=planned.init_ckpt,
                corpus_path=data.path,
                corpus_digest=data.digest,
                dist=self.dist,
                started_at=command_started(self.started),
            )
        except CorpusTooShort:
            forget(data)  # a refused corpus leaves no cache entry behind
            raise

    def describe(self, data, cfg: TrainConfig, choice, fresh: bool) -> None:
        """The corpus and its split, what --size auto chose, and a warning for a new model of
        several layers on thousands of distinct characters that no one asked for."""
        train_ids, val_ids = data.split(cfg.val_frac)
        self.emit(
            {
                "event": "corpus",
                "message": f"{data.path}: {plural(len(data.ids), 'character')}, {len(data.vocab):,} distinct"
                f"{_prepared(data.info)}; {len(train_ids):,} to train on, {len(val_ids):,} for validation",
                "path": str(data.path),
                "chars": len(data.ids),
                "distinct": len(data.vocab),
                "train_chars": len(train_ids),
                "val_chars": len(val_ids),
            }
        )
        if choice is not None:
            self.emit({"event": "sized", "message": choice.describe(cfg), "values": dict(choice.values)})
        if self.precision_line:
            self.emit({"event": "precision", "message": self.precision_line, "precision": cfg.precision})
        from charrnn.training.sizing import LARGE_VOCAB

        given = set(self.given) | set(self.file_values)
        if fresh and "layers" not in given and cfg.layers > 1 and len(data.vocab) > LARGE_VOCAB:
            auto = ", or --size auto (which chooses one layer here)" if cfg.engine != "numpy" else ""
            message = (
                f"{cfg.layers} layers on {len(data.vocab):,} distinct characters: on such text two layers learned "
                f"far less in the same time than one (README, The recipe as it is); --layers 1{auto}"
            )
            self.emit({"event": "warning", "message": message})

    def fit(self, trainer, stop: Stop, hint: Callable[[bool], str]) -> dict[str, Any]:
        """Train, with `stop` reaching the trainer and the callbacks that are context managers
        entered; a failed write leaves the run folder resumable (or clean) and says how to go on."""
        from charrnn.training import plan

        try:
            with stop.attached(trainer), contextlib.ExitStack() as inside:
                for callback in self.callbacks:
                    if hasattr(callback, "__enter__"):
                        inside.enter_context(callback)
                return trainer.fit()
        except WriteError as exc:
            raise plan.after_failed_write(exc, self.run_dir, hint) from None

    def report(self, summary: dict[str, Any], data) -> None:
        """The "done" event, then a warning if the model learned nothing, or how its loss compares."""
        self.emit({**summary, "event": "done"})
        last = self.last_eval
        if summary["reason"] != "done" or last is None:
            return
        from charrnn.store.run_folder import RunFolder
        from charrnn.training.evaluation import learned_nothing
        from charrnn.training.expected import overfitting, run_verdict

        # Judged on the whole run (metrics.jsonl: a resumed run's earlier evaluations too), and on
        # its best loss, not its last: best.pt is what the run leaves to use.
        over = overfitting(RunFolder(self.run_dir).read_metrics()) if self.dist.main else None
        if over:
            self.warn(over)
            return
        judged = dict(last)
        if math.isfinite(summary["best_loss"]):
            judged["val_loss" if last["val_loss"] is not None else "train_loss"] = summary["best_loss"]
        warning = learned_nothing(judged, data.ids, len(data.vocab))
        if warning:
            self.warn(warning)
        elif last["val_loss"] is not None:
            line = run_verdict(summary["best_loss"], summary["chars_seen"], data.vocab.chars, data.ids)
            if line:
                self.emit({"event": "verdict", "message": line})


def _prepared(info: dict | None) -> str:
    if not info or info.get("cached"):
        return ""
    seconds = (info.get("counted_s") or 0) + (info.get("encoded_s") or 0)
    return f" (prepared in {seconds:.1f} s)" if seconds >= 0.5 else ""
