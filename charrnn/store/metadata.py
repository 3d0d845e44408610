"""A checkpoint's metadata as typed records: written from `CheckpointInfo.to_meta`, read back
(and checked) by `read_info`, so that what a file claims is known good before anyone uses it.

The metadata is a JSON object: the vocabulary, the model and training configs, the progress of
the run, its corpus, the batch layout (streams per process x processes) and version fields.
`read_info` refuses a missing or unexpected key, a value of the wrong type (a bool is not an
int), a value out of range, and parts that disagree with each other (vocabulary and model, model
and training config). Checkpoints written before a field existed still load: a training option
missing from their config takes its default, a missing `world_size` means one process.

This module imports no torch; `checkpoint.validate` adds the checks of the tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import PurePath
from typing import Any

from charrnn.config import CELLS, ModelConfig, TrainConfig, typed_value
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError


class Invalid(ValueError):
    """What is wrong with a piece of metadata, for a message that names the file."""


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    chunk: int = 0  # next chunk index within the epoch
    chars_seen: int = 0
    train_seconds: float = 0.0
    best_loss: float = math.inf
    loss_sum: float = 0.0  # train loss accumulated since the last evaluation
    loss_count: int = 0
    skipped_steps: int = 0
    # fp16 on CUDA: the GradScaler's loss scale and its steps since the scale last grew, so that a
    # resumed run goes on with them (None: no scaler; checkpoints from before it have neither)
    loss_scale: float | None = None
    loss_scale_growth: int = 0
    average_count: int = 0  # --average: the steps the averaged weights hold (the checkpoint's "average" part)
    eval_seconds: float = 0.0  # what the evaluations took (--eval-share counts it; absent before 2026-12-07: 0)


@dataclass
class Corpus:
    """The text a run trains on: its path, the length of its training split and a fingerprint."""

    path: str
    train_chars: int
    digest: str


@dataclass
class CheckpointInfo:
    """Everything a checkpoint says about itself besides its tensors."""

    charrnn_version: str
    vocab: Vocab
    model: ModelConfig
    config: TrainConfig
    progress: Progress
    batch_size: int  # streams per process
    world_size: int  # processes (absent before distributed training: 1)
    corpus: Corpus
    saved_at: float  # seconds since the epoch
    weights_digests: list[str] | None  # under distributed training: each process' weights, hashed

    @property
    def streams(self) -> int:
        """Parallel streams of the whole run: the width of its saved hidden state."""
        return self.batch_size * self.world_size

    def to_meta(self) -> dict[str, Any]:
        meta = {f.name: getattr(self, f.name) for f in fields(self)}
        meta |= {
            "vocab": self.vocab.to_json(),
            **{k: asdict(meta[k]) for k in ("model", "config", "progress", "corpus")},
        }
        if self.weights_digests is None:
            del meta["weights_digests"]
        return meta


@dataclass(frozen=True)
class TrainingSummary:
    """What a model file says about the training that made it, for people and model cards: the
    part of a checkpoint's metadata that stays meaningful without the run (no options, no random
    states, no paths of the machine it ran on). Any field may be unknown (None)."""

    step: int | None = None
    chars_seen: int | None = None
    best_val_loss: float | None = None  # nats per character; None before any evaluation
    train_seconds: float | None = None
    corpus: str | None = None  # the corpus file's name (not its folder)
    corpus_digest: str | None = None  # a fingerprint of its training split (Corpus.digest)
    train_chars: int | None = None

    @property
    def best_val_bpc(self) -> float | None:
        """The best validation loss in bits per character."""
        return None if self.best_val_loss is None else self.best_val_loss / math.log(2)

    @classmethod
    def from_info(cls, info: CheckpointInfo) -> TrainingSummary:
        progress, corpus = info.progress, info.corpus
        return cls(
            step=progress.step,
            chars_seen=progress.chars_seen,
            best_val_loss=progress.best_loss if math.isfinite(progress.best_loss) else None,
            train_seconds=progress.train_seconds,
            corpus=PurePath(corpus.path).name or None,
            corpus_digest=corpus.digest or None,
            train_chars=corpus.train_chars,
        )

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON object (best_val_bpc written beside the loss, for readers)."""
        return {**asdict(self), "best_val_bpc": self.best_val_bpc}


def read_summary(data: Any, where: str) -> TrainingSummary:
    """A training summary as `TrainingSummary.to_json` wrote it, or Invalid. A field left out is
    unknown (None). Its best_val_bpc is derived from the loss, so it is only checked to be a
    number (or null)."""
    if isinstance(data, dict) and "best_val_bpc" in data:
        data = dict(data)
        _typed("float | None", data.pop("best_val_bpc"), f"{where}.best_val_bpc")
    summary = read_record(TrainingSummary, data, where, defaults={f.name: None for f in fields(TrainingSummary)})
    for name in ("step", "chars_seen", "train_chars"):
        value = getattr(summary, name)
        _require(value is None or value >= 0, f"{where}.{name}", value, "must be 0 or more")
    for name in ("best_val_loss", "train_seconds"):
        value = getattr(summary, name)
        _require(value is None or (math.isfinite(value) and value >= 0), f"{where}.{name}", value, "must be 0 or more")
    return summary


def read_info(meta: Any) -> CheckpointInfo:
    """The metadata of a checkpoint as a CheckpointInfo, or Invalid saying what is wrong."""
    info = read_record(CheckpointInfo, meta, "meta", defaults={"world_size": 1, "weights_digests": None})
    _at_least(info, "meta", ("batch_size", "world_size"), 1)
    _require(math.isfinite(info.saved_at), "meta.saved_at", info.saved_at, "must be a finite number")
    if info.weights_digests is not None and len(info.weights_digests) != info.world_size:
        raise Invalid(f"meta.weights_digests has {len(info.weights_digests)} entries for {info.world_size} processes")
    check_vocab(info.vocab, info.model)
    for name in ("cell", "layers", "hidden", "embed", "dropout", "tie_weights"):
        mine, theirs = getattr(info.model, name), getattr(info.config, name)
        if mine != theirs:
            raise Invalid(f"meta.model.{name} {mine!r} and meta.config.{name} {theirs!r} disagree")
    return info


def check_vocab(vocab: Vocab, model: ModelConfig) -> None:
    if len(vocab) != model.vocab_size:
        raise Invalid(f"a vocabulary of {len(vocab)} characters, but meta.model.vocab_size is {model.vocab_size}")


def read_record(cls, data: Any, where: str, defaults: dict[str, Any] | None = None):
    """`data` (a JSON object) as a `cls`: each field present (or given in `defaults`), of its
    type, no other key. A field whose type is itself a record is read by its entry in READERS."""
    if not isinstance(data, dict):
        raise Invalid(f"{where} is {_short(data)}, expected an object")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise Invalid(f"unexpected key {where}.{str(key)[:40]}")
    values = dict(defaults or {})
    for name, f in known.items():
        if name in data:
            reader = READERS.get(str(f.type))
            values[name] = (
                reader(data[name], f"{where}.{name}") if reader else _typed(f.type, data[name], f"{where}.{name}")
            )
        elif name not in values:
            raise Invalid(f"{where}.{name} is missing")
    return cls(**values)


def _typed(annotation: str, value: Any, where: str) -> Any:
    try:
        return typed_value(str(annotation), value)
    except (TypeError, OverflowError):  # (OverflowError: an integer too large for a float field)
        raise Invalid(f"{where} is {_short(value)}, expected {annotation}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _require(ok: bool, where: str, value: Any, why: str) -> None:
    if not ok:
        raise Invalid(f"{where} {value!r} {why}")


def _at_least(record, where: str, names: tuple[str, ...], least: int) -> None:
    for name in names:
        _require(getattr(record, name) >= least, f"{where}.{name}", getattr(record, name), f"must be at least {least}")


def read_vocab(data: Any, where: str) -> Vocab:
    chars = read_record(_VocabRecord, data, where).chars
    try:
        return Vocab(tuple(chars))
    except ValueError:
        raise Invalid(f"{where}.chars must be distinct characters sorted by code point") from None


@dataclass
class _VocabRecord:
    chars: str


def read_model(data: Any, where: str) -> ModelConfig:
    model = read_record(ModelConfig, data, where, {"tie_weights": False})  # (older checkpoints: untied)
    _require(model.cell in CELLS, f"{where}.cell", model.cell, f"is not one of {', '.join(CELLS)}")
    _at_least(model, where, ("vocab_size", "layers", "hidden", "embed"), 1)
    _require(0 <= model.dropout < 1, f"{where}.dropout", model.dropout, "must be in [0, 1)")
    _require(
        not model.tie_weights or model.embed == model.hidden,
        f"{where}.tie_weights",
        model.tie_weights,
        "needs embed equal to hidden",
    )
    return model


# What a run saved before an option existed trained with, where that is not the option's default:
# dropout's masks were drawn at every step until --dropout-mask came (its default: locked).
OLDER_RUNS = {"dropout_mask": "element"}


def _read_config(data: Any, where: str) -> TrainConfig:
    """A training config; options that older versions did not have take their defaults, but for
    those whose default changed when they came: a run goes on as it began (`OLDER_RUNS`)."""
    defaults = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING} | OLDER_RUNS
    config = read_record(TrainConfig, data, where, defaults)
    try:
        return config.validate()
    except CharRNNError as exc:
        raise Invalid(f"{where}: {exc}") from None


def _read_progress(data: Any, where: str) -> Progress:
    progress = read_record(
        Progress,
        data,
        where,
        defaults={"loss_scale": None, "loss_scale_growth": 0, "average_count": 0, "eval_seconds": 0.0},
    )
    counts = (
        "step",
        "epoch",
        "chunk",
        "chars_seen",
        "loss_count",
        "skipped_steps",
        "loss_scale_growth",
        "average_count",
    )
    _at_least(progress, where, counts, 0)
    scale = progress.loss_scale
    _require(scale is None or (math.isfinite(scale) and scale > 0), f"{where}.loss_scale", scale, "must be positive")
    for name in ("train_seconds", "loss_sum", "eval_seconds"):
        value = getattr(progress, name)
        _require(math.isfinite(value) and value >= 0, f"{where}.{name}", value, "must be a finite number, 0 or more")
    _require(progress.best_loss >= 0, f"{where}.best_loss", progress.best_loss, "must be 0 or more (or Infinity)")
    return progress


def _read_corpus(data: Any, where: str) -> Corpus:
    corpus = read_record(Corpus, data, where)
    _at_least(corpus, where, ("train_chars",), 0)
    return corpus


READERS: dict[str, Callable[[Any, str], Any]] = {  # a field's type (as annotated) -> its reader
    "Vocab": read_vocab,
    "ModelConfig": read_model,
    "TrainConfig": _read_config,
    "Progress": _read_progress,
    "Corpus": _read_corpus,
}
