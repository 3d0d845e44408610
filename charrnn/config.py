"""Configuration: the defaults of every option in one place, their validation, TOML files.

`TrainConfig` and `SampleConfig` are plain dataclasses. Each option of `charrnn train` is declared
once, here, with `option(default, help)`: its default and its help text (the field's metadata),
which the command line shows in `--help` and `charrnn.train()` documents. The command line merges
`--config FILE.toml` under the flags given on the command line, and calls `validate()` before any
work starts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from charrnn.cells import CELLS as _CELL_DESCRIPTIONS
from charrnn.errors import CharRNNError

CELLS = tuple(_CELL_DESCRIPTIONS)  # lstm, gru, rnn: described in cells.py
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRAIN_ENGINES = ("torch", "numpy")
AVERAGES = ("none", "ema", "swa")  # train --average (training/averaging.py)
DROPOUT_MASKS = ("locked", "element")  # train --dropout-mask (the model's CharRNN._dropped)
SIZES = ("auto", "default")
DEFAULT_EPOCHS = 10.0  # the limit of a run given no --max-steps, --max-epochs or --time-budget
DEFAULT_SEPARATOR = "\n\n"  # between the files of a corpus made of several


def option(default: Any, help: str, default_text: str | None = None) -> Any:
    """A field with its default and its help text (plain text: the command line adds its markup).
    `default_text` says in words what the default is where the value alone would not (a None that
    means "at each evaluation"); None: the value says it."""
    return field(default=default, metadata={"help": help, "default_text": default_text})


def help_of(cls, name: str) -> tuple[str, str | None]:
    """The help text of a field of `cls` and its default in words (None: the value says it)."""
    metadata = {f.name: f.metadata for f in fields(cls)}[name]
    return metadata["help"], metadata.get("default_text")


@dataclass
class ModelShape:
    """The options that shape a model, shared by `ModelConfig` (a model's shape, stored in its
    checkpoint) and `TrainConfig` (the options of a run): declared once, here."""

    cell: str = option("lstm", "Recurrent cell: lstm, gru or rnn.")
    layers: int = option(2, "Number of stacked recurrent layers.")
    hidden: int = option(256, "Hidden units per layer.")
    embed: int = option(64, "Size of the character embedding.")
    dropout: float = option(
        0.0,
        "Dropout on the non-recurrent connections: the embedding's output, between layers and before the read-out.",
    )
    tie_weights: bool = option(  # the read-out shares the embedding's matrix (needs embed == hidden)
        False, "Share one matrix between the embedding and the read-out (needs --embed equal to --hidden)."
    )


@dataclass
class _VocabSize:
    vocab_size: int


@dataclass
class ModelConfig(ModelShape, _VocabSize):
    """The shape of a CharRNN: everything needed to rebuild it from a checkpoint. Its fields, in
    this order (the bases' fields come in reverse order of the bases): vocab_size, then those of
    `ModelShape` (cell, layers, hidden, embed, dropout, tie_weights)."""


@dataclass
class TrainConfig(ModelShape):
    """Every option of `charrnn train` (and of `charrnn.train()`): the model's shape (`ModelShape`)
    first, then these."""

    size: str | None = option(  # None: auto when no model option is given
        None,
        "auto: choose --layers, --hidden, --embed, --batch-size and --dropout (and --weight-decay with the "
        "dropout) for this corpus, --time-budget (or epochs) and this machine's measured speed (the flags you "
        "give win); default: the fixed defaults shown here.",
        "auto when none of those five flags is given, else default",
    )
    # Data
    seq_len: int = option(  # truncated-BPTT chunk length T
        128, "Characters per truncated-BPTT chunk (the gradient is cut between chunks; the hidden state is carried)."
    )
    batch_size: int = option(32, "Parallel streams of the corpus per step.")  # B
    val_frac: float = option(0.1, "Fraction of the corpus (its contiguous tail) held out for validation.")
    carry_state: bool = option(
        True,
        "Carry the hidden state from chunk to chunk (stateful truncated BPTT); --no-carry-state resets it every "
        "chunk, for comparison.",
    )
    # Optimisation
    # 6e-3 since 2026-12-06 (3e-3 before): step for step, side by side, bf16, the runs --size auto
    # makes on tiny-shakespeare learned more at twice the peak (LSTM 2x256, 930 steps: 1.597 ->
    # 1.517, 1e-2: 1.515, the same; 2x384, 1,127 steps: 1.489 -> 1.485; 2x512, dropout 0.25, 1,390
    # steps: 1.466 -> 1.454) and so did make demo's (full Shakespeare, 2x384, batch 16, 2,400 steps:
    # 1.525 -> 1.499). README, "What loss to expect".
    lr: float = option(6e-3, "Peak learning rate (AdamW).")
    lr_schedule: str = option("cosine", "constant or cosine (decays to lr × min-lr-frac).")
    warmup: int = option(50, "Steps of linear learning-rate warm-up.")
    # 0.01 tried on 2026-12-07, step for step: better in two runs of six, worse in three (make demo's
    # model by 0.020); README, Tried for the 600 s target.
    min_lr_frac: float = option(0.1, "Final learning rate of the cosine schedule, as a fraction of --lr.")
    # 5 since 2026-12-07 (1 before): step for step, one thread each, LSTM 2x512 with dropout 0.2 (a
    # 600 s run's model) 1.392 / 1.390 against 1.399 / 1.397 (two seeds), 2x384 (240 s) 1.459
    # against 1.474; on English at most 0.004 worse, the Tang poems 0.011 (README, What loss to expect:
    # Evaluations and clipping).
    grad_clip: float = option(5.0, "Clip the global gradient norm to this; 0 = off.")
    # 0.1 since 2026-12-07 (0 before): step for step it gained 0.013-0.016 nats/char at seven passes
    # and cost nothing at four; --size auto raises it with its dropout. The runs: sizing.WEIGHT_DECAY's
    # note and README, What loss to expect.
    weight_decay: float = option(
        0.1, "AdamW weight decay (decoupled: each step multiplies every weight by 1 - lr × this)."
    )
    weight_drop: float = option(
        0.0,
        "Weight drop (DropConnect, AWD-LSTM): while training, zero this fraction of each recurrent "
        "hidden-to-hidden matrix's weights, a new draw per chunk; 0 = off.",
    )
    # locked since 2026-12-07: at 0.2 as good step for step as element masks at 0.25, and on two
    # threads 0.98-1.02x the speed without dropout where element masks ran at 0.71-0.94x (README,
    # What loss to expect: Locked dropout)
    dropout_mask: str = option(
        "locked",
        "How --dropout draws its masks: locked (each stream drops the same units at every step of a chunk: "
        "variational dropout) or element (a new mask at every step).",
    )
    average: str = option(
        "none",
        "Averaged weights: none; ema (an exponential moving average of the weights, updated every step); or swa "
        "(the mean of the weights after every step from --swa-start on). Evaluations, best.pt and the live samples "
        "use the average; last.pt keeps both.",
    )
    ema_decay: float = option(
        0.999,
        "--average ema: how much of the average each step keeps, at most: early on it keeps less, (1 + n) / (10 + n) "
        "at step n, so the average spans about the last ninth of the run until 1 / (1 - decay) steps are reached.",
    )
    swa_start: float = option(0.5, "--average swa: the fraction of the run after which the weights are averaged.")
    # Length of training: the first limit reached ends it
    max_steps: int | None = option(None, "Stop after this many steps.")
    max_epochs: float | None = option(
        None,
        "Stop after this many passes over the corpus.",
        "10 when neither --max-steps nor --time-budget is given",  # DEFAULT_EPOCHS
    )
    time_budget: float | None = option(
        None,
        "Stop after this many seconds of wall clock: the whole command, start-up, evaluations and the final save "
        "included, aiming at 1% past it (600: by about 10:06; the LR schedule follows the clock). With --resume, the "
        "run's total: the time it trained before counts.",
    )
    # Evaluation and checkpoints
    eval_every: int = option(200, "Evaluate on the validation split every N steps.")
    eval_chars: int = option(200_000, "Validation characters per evaluation (0 = all).")
    eval_share: float = option(
        0.03,
        "With --time-budget only: the fraction of the run's time so far (0.03 = 3%) that evaluations may take; one "
        "due by --eval-every that would take more is skipped (the next multiple asks again), and so is one due when "
        "the run will end, and evaluate, within --eval-every more steps; the first and the last always run, the live "
        "sample still comes. 0 = every --eval-every.",
    )
    save_every: int = option(200, "Write last.pt every N steps.")
    # Live samples: a short text at a fixed prime and seed, to watch the same sentence improve
    sample_every: int | None = option(  # None = at each evaluation due (--eval-every) and the last
        None,
        "Show a short sample (fixed prime and seed, temperature 0.8) every N steps; 0 = never.",
        "every --eval-every",
    )
    sample_chars: int = option(200, "Characters per live sample.")  # after the prime
    sample_prime: str = option("", "Prime text of the live samples.", "none: start as after a newline")
    # Run
    precision: str = option(
        "auto",
        "auto, fp32, bf16 or fp16: the forward pass under autocast (fp16 on CUDA only; falls back to fp32 with a "
        "warning). auto: bf16 where this CPU computes it natively and a probe finds it 1.15x faster or more, else "
        "fp32; fp32 without a probe on GPUs, for more than 1,000 distinct characters and for runs under ~30 s. The "
        "validation loss is computed in fp32 either way.",
    )
    compile: bool = option(
        False, "torch.compile the model (needs a C++ compiler on the CPU; falls back with a warning)."
    )
    engine: str = option(
        "torch",
        "Who computes the gradients: torch (autograd), or numpy: the hand-written BPTT of charrnn/numpy_ref.py, "
        "with everything else (AdamW, schedule, checkpoints) shared. numpy: CPU, fp32, no dropout; slow, for small "
        "models.",
    )
    seed: int = option(1337, "Random seed (weights, dropout).")
    device: str = option("auto", "auto, cpu, cuda or mps.")
    threads: int | str | None = option(
        "auto",
        "CPU threads per process: auto chooses them from the cores that are free, and re-chooses while training "
        "when the load changes; a number pins it (exact resume needs the same number).",
        "auto",
    )
    name: str | None = option(None, "Run name: the folder under --out.", "the corpus file's name")
    out: str = option("checkpoints", "Folder that holds the runs.")

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, **{f.name: getattr(self, f.name) for f in fields(ModelShape)})

    def validate(self) -> TrainConfig:
        _check_choice("cell", self.cell, CELLS)
        _check_choice("lr-schedule", self.lr_schedule, SCHEDULES)
        _check_choice("device", self.device, DEVICES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("engine", self.engine, TRAIN_ENGINES)
        if self.size is not None:
            _check_choice("size", self.size, SIZES)
        if self.tie_weights and self.embed != self.hidden:
            raise CharRNNError(
                "--tie-weights shares one matrix between the embedding and the read-out: it needs --embed equal to "
                f"--hidden (here {self.embed} and {self.hidden})"
            )
        for name in ("layers", "hidden", "embed", "seq_len", "batch_size", "eval_every", "save_every"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        _check(0 <= self.weight_drop < 1, "weight_drop", self.weight_drop, "must be in [0, 1)")
        _check_choice("dropout_mask", self.dropout_mask, DROPOUT_MASKS)
        _check_choice("average", self.average, AVERAGES)
        _check(0 < self.ema_decay < 1, "ema_decay", self.ema_decay, "must be in (0, 1)")
        _check(0 <= self.swa_start < 1, "swa_start", self.swa_start, "must be in [0, 1)")
        _check(0 <= self.val_frac < 0.5, "val_frac", self.val_frac, "must be in [0, 0.5)")
        _check(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "must be a positive number")
        _check(self.warmup >= 0, "warmup", self.warmup, "must be 0 or more")
        _check(0 <= self.min_lr_frac <= 1, "min_lr_frac", self.min_lr_frac, "must be in [0, 1]")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, "must be 0 (off) or more")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be 0 or more")
        _check(self.eval_chars >= 0, "eval_chars", self.eval_chars, "must be 0 (all) or more")
        _check(0 <= self.eval_share < 1, "eval_share", self.eval_share, "must be 0 (off) or more, and below 1")
        _check(
            self.sample_every is None or self.sample_every >= 0,
            "sample_every",
            self.sample_every,
            "must be 0 (never) or more",
        )
        _check(self.sample_chars >= 1, "sample_chars", self.sample_chars, "must be at least 1")
        for name in ("max_steps", "max_epochs", "time_budget"):
            value = getattr(self, name)
            _check(value is None or value > 0, name, value, "must be positive")
        if self.max_steps is None and self.max_epochs is None and self.time_budget is None:
            self.max_epochs = DEFAULT_EPOCHS  # a run needs a limit; a --time-budget alone is not cut short by this one
        if self.threads is None:  # (checkpoints from before --threads auto)
            self.threads = "auto"
        _check(
            self.threads == "auto" or (isinstance(self.threads, int) and self.threads >= 1),
            "threads",
            self.threads,
            "must be auto or at least 1",
        )
        _check_seed(self.seed)
        _check(
            self.out.strip() != "", "out", self.out, "must name a folder (an empty one would mean the current folder)"
        )
        if self.name is not None:
            _check(
                self.name.strip() != "" and "/" not in self.name and self.name not in (".", ".."),
                "name",
                self.name,
                "must be a plain folder name",
            )
        return self


@dataclass
class ReadConfig:
    """How a corpus is read from its files (`charrnn train`, `charrnn prepare`, `charrnn.train()`)."""

    encoding: str = option("utf-8", "Text encoding of the corpus.")
    errors: str = option(
        "strict",
        "On undecodable bytes: strict (error), replace (U+FFFD), ignore (drop them) or another Python error handler.",
    )
    keep_newlines: bool = option(False, "Keep \\r\\n and \\r line endings instead of turning them into \\n.")
    separator: str = option(DEFAULT_SEPARATOR, "Text put between the files of a corpus of several files.")


@dataclass
class SampleConfig:
    """Every option of `charrnn sample` that shapes the text (and the help texts of their flags)."""

    length: int = option(1000, "Characters to generate (after the prime).")
    temp: float = option(
        0.8, "Temperature: lower is safer, higher is wilder, 0 always takes the most likely character."
    )
    top_k: int = option(0, "Sample only among the k most likely characters (0 = off).")
    top_p: float = option(1.0, "Sample only among the most likely characters whose mass reaches p (1 = off).")
    prime: str = option("", "Text to start from (echoed, then continued).")
    seed: int | None = option(None, "Random seed: the same seed gives the same text.", default_text="random")
    num_samples: int = option(
        1,
        "Generate this many samples together (one batch), printed one after the other, the first as it is generated.",
    )
    stop: list[str] = field(
        default_factory=list,
        metadata={"help": "End a sample right after this string appears (repeatable).", "default_text": None},
    )
    beam: int = option(
        0,
        "Beam search of this width instead of sampling: the most likely continuation, the same every time "
        "(--temp, --top-k, --top-p and --seed do not apply); with --num-samples K (at most the width), the K best, "
        "best first. 0 = sample.",
    )
    beam_norm: float = option(
        0.0,
        "Compare beams by log-probability / length^this, so that beams ended early by --stop are not preferred for "
        "being short; 0 = plain log-probability.",
    )

    def validate(self) -> SampleConfig:
        _check(self.length >= 0, "length", self.length, "must be 0 or more")
        _check(math.isfinite(self.temp), "temp", self.temp, "must be a finite number")
        _check(self.temp >= 0, "temp", self.temp, "must be 0 (greedy) or more")
        _check(self.top_k >= 0, "top_k", self.top_k, "must be 0 (off) or more")
        _check(0 < self.top_p <= 1, "top_p", self.top_p, "must be in (0, 1]")
        _check(self.num_samples >= 1, "num_samples", self.num_samples, "must be at least 1")
        if "" in self.stop:
            raise CharRNNError("--stop must not be an empty string")
        _check(self.beam >= 0, "beam", self.beam, "must be 0 (sample) or more")
        _check(
            0 <= self.beam_norm <= MAX_BEAM_NORM,
            "beam_norm",
            self.beam_norm,
            f"must be in [0 (off), {MAX_BEAM_NORM:g}]",
        )
        if self.beam and self.num_samples > self.beam:
            raise CharRNNError(
                f"--num-samples {self.num_samples} must be at most --beam {self.beam}: the best beams are printed"
            )
        if self.seed is not None:
            _check_seed(self.seed)
        return self


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise CharRNNError(f"{_flag(name)} {value!r} {why}")


MAX_BEAM_NORM = 10.0  # length^norm: beyond a few, no ranking changes, and length^1e308 overflows
# dynamic evaluation (`eval --dynamic`, insight/scores.py): the RMS-normalised step on each
# segment's mean loss, the characters scored before each step, and how slowly the mean squared
# gradient that normalises the step forgets (tiny-shakespeare's validation text: lr 3e-4 gained
# 0.063 nats/char, 2e-4 0.059, 1e-3 less than 3e-4 on its first 20,000 characters)
DYNAMIC_LR = 3e-4
DYNAMIC_SEGMENT = 50
DYNAMIC_SQUARES_DECAY = 0.99
MAX_DYNAMIC_LR = 0.05  # (an SGD-sized 0.1, this option's default before the steps were normalised, ruins the score)
MAX_SEED = 2**63 - 1  # torch.manual_seed takes up to 2**64 - 1, numpy any size: a round, safe bound


def _check_seed(seed: int) -> None:
    _check(0 <= seed <= MAX_SEED, "seed", seed, f"must be in [0, {MAX_SEED}]")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CharRNNError(f"{_flag(name)} {value!r} is not one of: {', '.join(choices)}")


def defaults(cls) -> dict[str, Any]:
    """The default value of each field of a config dataclass."""
    out = {}
    for f in fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def read_toml(path: str | Path, cls) -> dict[str, Any]:
    """Read option values for `cls` from a TOML file; keys may use '-' or '_'. Unknown keys fail."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise CharRNNError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise CharRNNError(f"{path}: is a directory, not a config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CharRNNError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    known = {f.name for f in fields(cls)}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise CharRNNError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if any("\0" in text for text in _strings(value)):  # no path, name or prime text holds one
            raise CharRNNError(f"{path}: {key}: a NUL character (\\u0000) cannot be part of an option")
        values[name] = value
    return values


def _strings(value: Any) -> list[str]:
    """The strings in a TOML value: itself, or the items of a list."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def build(cls, file_values: dict[str, Any], cli_values: dict[str, Any]):
    """Defaults < config file < command line; `None` on the command line means 'not given'."""
    merged = {**file_values, **{k: v for k, v in cli_values.items() if v is not None}}
    known = [f.name for f in fields(cls)]
    unknown = [name for name in merged if name not in known]
    if unknown:  # (charrnn.train's keywords; a config file's keys are checked where it is read)
        import difflib

        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CharRNNError(f"unknown option {unknown[0]!r}{hint}")
    try:
        cfg = cls(**merged)
    except TypeError as exc:
        raise CharRNNError(f"bad configuration: {exc}") from None
    for f in fields(cfg):
        setattr(cfg, f.name, _typed(f, getattr(cfg, f.name)))
    return cfg.validate()


def _typed(f: dataclasses.Field, value: Any) -> Any:
    try:
        return typed_value(str(f.type), value)
    except TypeError:
        raise CharRNNError(f"{_flag(f.name)} {value!r} should be of type {f.type}") from None


def typed_value(annotation: str, value: Any) -> Any:
    """`value` as a field annotated `annotation` (a string: 'int', 'float | None', 'list[str]')
    holds it, or TypeError. An int stands for a float (TOML and JSON write 3.0 as 3); a bool is
    never an int. Used for config files and for checkpoint metadata."""
    kind = annotation.replace(" ", "").split("|")
    if value is None and "None" in kind:
        return value
    if "float" in kind and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an exact integer beyond float's range (JSON's 1000...0, 400 digits)
            raise TypeError(f"an integer of {value.bit_length():,} bits is too large for {annotation}") from None
    for name, types in (("int", int), ("str", str), ("bool", bool)):
        if name in kind and isinstance(value, types) and not (name == "int" and isinstance(value, bool)):
            return value
    if "list[str]" in kind and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise TypeError(f"{value!r} is not of type {annotation}")
