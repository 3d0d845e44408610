"""`--size auto`: the model a run can afford, chosen before it starts.

A model learns about as much as the characters it reads let it: too small and it stops
improving while the budget lasts, too large and it has read too little when the time is up. The
rule, fitted on runs measured across corpora and budgets (README, "What loss to expect"):

- The run will read C characters: its --time-budget (less what start-up, evaluations and saves
  take) times this model's speed on this machine (a few training steps of probing, on the
  threads the run will use), or its epochs (or steps) times what one of them reads.
- The model is the largest of `LADDER` for which C is at least `CHARS_PER_WEIGHT` times the
  weights that compute (those of the recurrent layers and the read-out; the embedding is a
  lookup), `REGULARISED_CHARS_PER_WEIGHT` times where the rule gives that model its most dropout
  (MAX_DROPOUT) at the passes it would make (or such a dropout is given), and which fits in memory.
- And whatever the budget, it has at most `MAX_WEIGHTS_PER_CHAR` of those weights per character
  of the training text: a model far larger than its text memorises it, however long it reads
  (a 2 KB text with 600 s chose LSTM 2×384, 1.9 M weights for 1,800 characters; validation was
  best at its first evaluation and rose from there). For texts too small for the smallest rung,
  the smaller `SMALL_RUNGS` are tried.
- Dropout, on the non-recurrent connections, grows with the passes over the corpus it will
  make: `DROPOUT_PER_DOUBLING` for each doubling of the passes, at most `MAX_DROPOUT`, and at
  most `DROPOUT_PER_WEIGHT_PER_CHAR` for each computing weight the model has per character of
  the training text, but not below `MIN_DROPOUT` (in steps of 0.05: 0.1 up to 1.25 weights a
  character, 0.15 up to 1.75, 0.2 from there); none
  for `FREE_PASSES` passes or fewer and only a share of it over the next `RAMP_PASSES` (until
  2026-12-06 it had no ramp: at four to five passes that cost 0.05 nats/char; see FREE_PASSES),
  and none where the rule gives less than `MIN_DROPOUT`. Its masks are locked (one per stream
  and chunk: `--dropout-mask`), which cost a step next to nothing; the element masks of
  `--dropout-mask element` slow it (by 6-29% on two threads): the rung is chosen at the speed
  without dropout, then timed again with its dropout, and the run is planned (characters,
  passes) at the speed of the dropout it trains with (see `choose`).
- AdamW's weight decay follows the dropout the run trains with (chosen or given):
  `WEIGHT_DECAY` (TrainConfig's default, 0.1) up to a dropout of `MIN_DROPOUT`, then
  `DECAY_PER_DROPOUT` more for each unit of dropout above it, up to `MAX_DROPOUT`'s (0.2 at
  0.15, 0.3 at 0.2 and above): a model that over-fits enough for the most dropout wants more
  decay too, a smaller one or a shorter run less (WEIGHT_DECAY's note).
- The batch is 16 streams for a run that reads its text less than twice (more updates for the
  same characters; a CPU runs 16 streams as fast as 32), else 24 on the CPU (32 until 2026-12-07)
  and 32 on a GPU (`batch_for`).
- The embedding is 64 wide, wider for a vocabulary of thousands of characters (Chinese): there a
  narrow embedding is the bottleneck, and the read-out costs more than the cells anyway.
- For thousands of characters the ladder's rungs have one layer (1x128 ... 1x768): two layers
  learned far less in the same time there (LARGE_VOCAB's note).

It is the default when none of the model options it chooses (CHOSEN) is given; with `--size
auto` and some of them given, only those left out are chosen: explicit flags (and keys of a
--config file) win. A `--weight-decay` given is kept and leaves the rest to the rule; with all of
CHOSEN given nothing is chosen, the decay included (TrainConfig's default).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from charrnn.cells import weights_per_char
from charrnn.config import ModelConfig, TrainConfig

LADDER: tuple[tuple[int, int], ...] = ((1, 128), (2, 128), (2, 192), (2, 256), (2, 384), (2, 512), (3, 512), (3, 768))
SMALL_RUNGS: tuple[tuple[int, int], ...] = ((1, 32), (1, 64))  # below the ladder: for texts of a few KB
# Weights per training character, at most: 2×512 (3.3 M) on tiny-shakespeare's 1.0 M characters,
# with dropout, was the best of the ladder there (MAX_DROPOUT's note); 4 keeps it and refuses
# what only memorises.
MAX_WEIGHTS_PER_CHAR = 4.0
# Characters read per computing weight, at least (fitted; README). Checked again on 2026-12-07 at
# 600 s on tiny-shakespeare, for the same time on two threads: LSTM 2x512 1.409, 2x576 1.414, 2x640
# 1.419 (README, Tried for the 600 s target; all three with dropout 0.2, so now under the lower
# threshold below: 2.1, 1.3 and 0.9 characters a weight).
CHARS_PER_WEIGHT = 2.0
# ... and for a model the rule gives its most dropout (MAX_DROPOUT, so weight decay 0.3) at the
# passes it would make, or given a dropout of at least MAX_DROPOUT:
# regularised, a larger model reads fewer characters a weight before it beats the smaller one.
# tiny-shakespeare, 600 s budget runs the same afternoon (batch 24): LSTM 2x512 read 5.9 M
# characters (1.78 a weight) and reached 1.399; the next run's probe found 2x512 too slow for 2 a
# weight and chose 2x384 (9.8 M characters, 5.2 a weight): 1.411. For the same time on two threads
# (2x384 at 1.6x the 2x512's speed), one thread each side by side, bf16, batch 24, dropout 0.2,
# decay 0.3: 2x512 1,885 steps (5.8 M characters, 1.75 a weight) 1.409, 2x384 3,016 steps 1.431.
# Without dropout (short runs, a large text) 2 stays: at 60 s LSTM 2x256 reading 1.7 a weight lost
# to 2x192 reading 5 (1.712 against 1.685, README). Lower: 2x576 at 1.3 a weight lost to the 2x512
# at 2.1 (above); between 1.3 and 1.75 not measured. The evidence is dropout 0.2 with decay 0.3;
# the ramp's 0.1-0.15 (decay 0.1-0.2) keeps 2. A time-budgeted run at the boundary can so choose
# 2x512 for a text of 1.3 M characters and 2x384 for one of 1.4 M (its passes too few for 0.2).
REGULARISED_CHARS_PER_WEIGHT = 1.75
DROPOUT_PER_DOUBLING = 0.1
# Passes over the text before dropout pays, and the passes over which it ramps up to the full
# rule. Measured step for step (pairs of the same --max-steps side by side, so the machine's load
# cannot change the result): tiny-shakespeare, LSTM 2x256 at 4.6 passes (a 240 s run): no dropout
# 1.558, 0.1 1.563, 0.2 (the rule without the ramp) 1.605; Tang poems, 2x128 at 3.2 passes: 0
# 5.684, 0.15 5.685. And where it pays: Python source (held out), 2x384 at 6 passes: 0.25 1.305
# against 0.05 1.317; tiny-shakespeare 2x512 at 7.2 passes: 0.25 1.441, 0.1 1.430 (kept at 0.25:
# the held-out text asks for it at fewer passes). The model's size is not what gates dropout's start
# (it sets the ceiling, DROPOUT_PER_WEIGHT_PER_CHAR, whose 0.1 the ramp rounds to none below 5.5
# passes), though a larger model over-fits sooner: gated by passes x weights per training character
# instead, the rule
# would give Python source, 2x384 at 4.7 passes, its 0.2 (1.325 against 0: 1.340), and
# tiny-shakespeare, 2x256 at 4.8 passes, its none (1.556 against 0.15: 1.579), but tiny-shakespeare,
# 2x384 at 4.6 passes, 0.2 where none was better (1.519 against 1.489, 2026-12-06): the same
# model at the same passes wants dropout on one text and not the other, so the text, not the size,
# decides there; tried and not kept.
FREE_PASSES = 4.0
RAMP_PASSES = 2.0
# 0.2 since dropout's masks are locked (2026-12-07; 0.25 with element masks before: 2x512 on
# tiny-shakespeare, 7.4 passes: 0.25 reached 1.447 at step 1400, 0.35 1.478). Step for step, LSTM
# 2x384, bf16, side by side on one thread each: Python source (1,190 steps, 4.7 passes) element
# 0.25 1.295, locked 0.25 1.308, locked 0.2 1.298; tiny-shakespeare (1,400 steps, 5.7 passes)
# element 0.25 1.491, locked 0.25 1.488, locked 0.2 1.478. A locked mask regularises more at a rate.
MAX_DROPOUT = 0.2
# Less dropout than this is none: it paid for little (tiny-shakespeare 2x256 at 4.6 passes, step for
# step, 0.1 did not beat none: 1.563 against 1.558, element masks), and an element mask cost a step
# as much as 0.25's did, most of dropout's cost on two threads (bf16, batch 32, 2026-12-07: LSTM
# 2x256 at 0.05 ran at 0.71x the speed without dropout and at 0.25 at 0.80x; 2x384 0.91x and 0.87x;
# on one thread 0.97x-1.01x and 0.94x). Locked masks (the default since) cost next to nothing
# (2x256 0.25: 1.01x on two threads, 2x384 1.02x, 2x512 0.98x, against element masks' 0.82x, 0.92x,
# 0.94x in the same run), so a model is planned at about its speed without dropout. Dropout begins
# at 0.1 near 4.75 passes (5.5 for a model of at most 1.25 weights a character, whose ceiling is 0.1).
MIN_DROPOUT = 0.1
# The most dropout a model gets, for each of its computing weights per character of the training
# text (between MIN_DROPOUT and MAX_DROPOUT, before the rounding to 0.05): a model with fewer weights
# than its text has characters learns it by heart more slowly, and a locked mask's 0.2 held it back.
# Step for step, side by side on one thread each, locked masks, bf16, batch 32, 2026-12-07: LSTM
# 2x256 at 7.3 passes, tiny-shakespeare (0.87 weights a character, 1,777 steps) none 1.498, 0.1
# 1.482, 0.2 1.515; Python source (0.84, 1,855 steps) none 1.366, 0.1 1.309, 0.2 1.316. LSTM 2x384
# (1.9 a character) at 8.6 passes on tiny-shakespeare (2,100 steps): 0.1 1.465, 0.2 1.462, the same
# (the rule gives it 0.2); LSTM 2x512 (3.3) at 7.1 passes (1,750 steps): 0.1 1.431, 0.2 1.434, the
# same. The slope rests on that one small model.
DROPOUT_PER_WEIGHT_PER_CHAR = 0.1
# AdamW's decay with dropout up to MIN_DROPOUT (and none), and the decay added for each unit of
# dropout above it. Step for step, side by side on one thread each, locked masks, bf16, batch 32,
# 2026-12-07, validation against weight decay 0 / 0.1 / 0.3: tiny-shakespeare LSTM 2x512, dropout
# 0.2, 7.1 passes 1.434 / 1.418 / 1.409; 2x384, 0.2, 8.6 passes 1.462 / 1.446 / 1.435; 2x256, 0.1,
# 7.3 passes 1.482 / 1.469 / 1.479; Python source 2x256, 0.1, 7.3 passes 1.309 / 1.296 / 1.308;
# tiny-shakespeare 2x384 without dropout, 4.5 passes, 1.479 / 1.479 / 1.485. The models the rule
# gives the most dropout wanted 0.3, the others 0.1.
WEIGHT_DECAY = TrainConfig().weight_decay  # (0.1: config.py's note)
DECAY_PER_DROPOUT = 2.0
# The share of a --time-budget spent on training steps: 0.92 while evaluations ran every 200 steps
# (evaluations, saves, live samples: ~5-8%); since --eval-share (0.03) keeps the evaluations to 3%
# of the time, with the last evaluation, the saves and the live samples ~5%.
BUDGET_FOR_STEPS = 0.95
ESTIMATE_SLACK = 1.5  # larger models use the cores better than the probed rung: estimate generously, then probe
MAX_PROBES = 3  # models probed after the first (a second each, at most)
FEW_PASSES = 2.0  # below this many passes over the text, smaller batches (more updates) pay
CHOSEN = ("layers", "hidden", "embed", "batch_size", "dropout")
LARGE_VOCAB = 1000  # more characters than an alphabet has (Chinese: thousands): a wider embedding, and fp32
# and one layer: on the Tang poems (6,523 characters, fp32) two layers sat on a plateau near the
# characters' frequencies for hundreds of steps where one layer learned at once. The same 600 s,
# side by side on one thread each, 2026-12-07: LSTM 2x128 (what the ladder gave) 6.296 at 1.0 M
# characters read, 5.931 at its end (2.5 M); LSTM 1x256 5.389 at 1.0 M, 5.209 at its end (1.9 M).
# (2x128 for 673 steps, 2.8 M characters, got off the plateau near step 350 and reached 5.740;
# 1x128 for 572 steps, 5.507.) And CHARS_PER_WEIGHT is too strict there: the 1x256, a character a
# weight, beat the 1x128 the ladder picks at 300 s (5.209 at 1.9 M characters against 5.349 at
# 2.0 M); not refitted, with one text of the kind.


@dataclass(frozen=True)
class Choice:
    """What --size auto chose, and why (one line for the user)."""

    values: dict  # the options chosen: those of CHOSEN the user left out, and weight_decay unless given
    reads: float  # characters the run is expected to read
    passes: float  # passes over the training split
    speed: float | None  # measured characters per second of the chosen model, with its dropout (None: not probed)

    def describe(self, cfg: TrainConfig) -> str:
        model = (
            f"{cfg.cell.upper()} {cfg.layers}×{cfg.hidden}, embedding {cfg.embed}, "
            f"dropout {cfg.dropout:g}, batch {cfg.batch_size}, weight decay {cfg.weight_decay:g}"
        )
        pace = f" at {self.speed:,.0f} chars/s" if self.speed else ""
        return (
            f"--size auto: {model}: the run will read about {self.reads / 1e6:,.1f} M characters{pace}, "
            f"{self.passes:,.1f} passes over the training text "
            "(explicit flags win; --size default for the fixed defaults)"
        )


def embed_for(vocab: int, hidden: int) -> int:
    """64 for an alphabet (no wider than the cells); half the hidden width (64 to 256) for
    thousands of characters."""
    return min(64, hidden) if vocab <= LARGE_VOCAB else max(64, min(hidden // 2, 256))


def batch_for(passes: float, device_type: str = "cpu") -> int:
    """16 streams when the run reads its text less than twice (every update counts: on the
    full Shakespeare, 2.5 M characters in 1,200 steps of 16 reached 1.614 where 600 steps of 32
    reached 1.665; a CPU trains 16 or 32 streams at about the same chars/s), else 24: a third more
    updates than 32 at 0.95-0.97x its characters per second (two threads, bf16: LSTM 2x256 0.96x,
    2x384 0.95x, 2x512 0.96-0.97x). For the same time on two threads, seeds 1337 / 7, batch 32
    against 24: tiny-shakespeare, LSTM 2x512, dropout 0.2, decay 0.3 (a 600 s run's model) 1.409 /
    1.406 against 1.399 / 1.397; 2x384 without dropout (240 s) 1.479 / 1.463 against 1.474 / 1.456;
    2x256 (120 s) 1.516 / 1.507 against 1.495 / 1.484; held-out Python source, 2x256 at 7 passes,
    1.296 / 1.295 against 1.288 / 1.293. Batch 16 lost 0.005 at 2x512 (README, Tried for the 600 s
    target). The rungs are still probed at 32 streams: the run reads ~3-5% fewer characters than
    planned, which its clock absorbs (the schedule runs on the time left). 24 was measured on the
    CPU only: on a GPU, where 32 streams cost about what 24 do, it stays 32 (as before 2026-12-07)
    until a GPU run says otherwise."""
    if passes < FEW_PASSES:
        return 16
    return 24 if device_type == "cpu" else 32


def dropout_for(passes: float, per_char: float = math.inf) -> float:
    """The dropout of a run that makes `passes` over its text with a model that has `per_char`
    computing weights per character of that text (see the module's docstring; by default no
    ceiling by size)."""
    if passes <= FREE_PASSES:
        return 0.0
    ceiling = min(MAX_DROPOUT, max(MIN_DROPOUT, DROPOUT_PER_WEIGHT_PER_CHAR * per_char))
    full = min(ceiling, DROPOUT_PER_DOUBLING * math.log2(passes))
    share = min(1.0, (passes - FREE_PASSES) / RAMP_PASSES)
    dropout = round(full * share * 20) / 20  # in steps of 0.05
    return dropout if dropout >= MIN_DROPOUT else 0.0


def weight_decay_for(dropout: float) -> float:
    """AdamW's weight decay for a run that trains with `dropout` (see WEIGHT_DECAY)."""
    return round(WEIGHT_DECAY + DECAY_PER_DROPOUT * max(0.0, min(dropout, MAX_DROPOUT) - MIN_DROPOUT), 2)


def choose(
    cfg: TrainConfig,
    given: set[str],
    train_chars: int,
    vocab: int,
    speed_of: Callable[[ModelConfig, int, int], float] | None,
    seconds_left: float | None,
    fits: Callable[[ModelConfig, int], bool] = lambda m, b: True,
    device_type: str = "cpu",
) -> Choice | None:
    """The options of CHOSEN that are not in `given` (and the weight decay, unless given), for a
    run of `cfg` on `train_chars` characters of a `vocab`-character alphabet. `speed_of(model,
    batch, seq_len)` measures characters per second (used when the run has a time budget:
    `seconds_left` of it); `fits(model, batch)`: whether the model fits in memory; `device_type`:
    where it trains (cpu, cuda, mps: `batch_for`). None when nothing is left to choose."""
    free = [name for name in CHOSEN if name not in given]
    if not free:
        return None
    batch = cfg.batch_size if "batch_size" in given else 32
    ladder, model = _ladder(cfg, given, train_chars, vocab)

    def weights(m: ModelConfig) -> int:
        return weights_per_char(m.cell, m.layers, m.hidden, m.embed, vocab)

    def enough(m: ModelConfig, reads: float) -> bool:  # (see REGULARISED_CHARS_PER_WEIGHT)
        w = weights(m)
        if "dropout" in given:  # (a dropout given counts at any passes: the user chose it)
            regularised = cfg.dropout >= MAX_DROPOUT
        else:
            regularised = dropout_for(reads / max(train_chars, 1), w / max(train_chars, 1)) >= MAX_DROPOUT
        return reads >= (REGULARISED_CHARS_PER_WEIGHT if regularised else CHARS_PER_WEIGHT) * w

    reads_limit = untimed_reads(cfg, train_chars, batch * cfg.seq_len)
    speed = None
    if cfg.time_budget is not None and speed_of is not None and seconds_left is not None:
        seconds = max(seconds_left, 0.0) * BUDGET_FOR_STEPS
        speed_at = lambda rung: speed_of(model(*rung), batch, cfg.seq_len)  # noqa: E731
        pick, reads, speed = _timed_pick(ladder, model, weights, enough, fits, batch, speed_at, seconds, reads_limit)
    else:
        pick = _largest(ladder, model, enough, fits, batch, lambda m: reads_limit)
        reads = reads_limit
    m = model(*pick)
    passes = reads / max(train_chars, 1)
    per_char = weights(m) / max(train_chars, 1)
    dropout = dropout_for(passes, per_char)  # (a dropout given is kept: `values` below holds only what is free)
    if speed is not None and dropout > 0 and "dropout" not in given:
        # The rungs were timed without dropout, which can slow a training step (bf16, batch 32, two
        # threads, 0.25: element masks LSTM 2x256 by ~20%, 2x384 ~12%, 2x512 ~3%; locked masks, the
        # default, by 0-2%, 10% on one thread for 2x512: MIN_DROPOUT's note and README, Locked
        # dropout). The rung stays (chosen at the speed without); the run is planned at the speed
        # of the dropout it trains with: the one for the passes it makes at the first dropout's
        # speed (fewer, so no more dropout), timed too where it is another (none: already timed).
        first = dropout
        timed = {0.0: speed, first: speed_of(replace(m, dropout=first), batch, cfg.seq_len)}
        dropout = dropout_for(min(seconds * timed[first], reads_limit) / max(train_chars, 1), per_char)
        if dropout not in timed:
            timed[dropout] = speed_of(replace(m, dropout=dropout), batch, cfg.seq_len)
        speed = timed[dropout]
        reads = min(seconds * speed, reads_limit)
        passes = reads / max(train_chars, 1)
    if "batch_size" not in given:
        batch = batch_for(passes, device_type)
        if cfg.max_steps:  # a step of fewer streams reads fewer characters
            reads = min(reads, float(cfg.max_steps * batch * cfg.seq_len))
            passes = reads / max(train_chars, 1)
    chosen = {
        "layers": m.layers,
        "hidden": m.hidden,
        "embed": m.embed,
        "batch_size": batch,
        "dropout": dropout,
    }
    values = {k: v for k, v in chosen.items() if k in free}
    if "weight_decay" not in given:  # (chosen with the rest, but giving it leaves the rest to the rule)
        values["weight_decay"] = weight_decay_for(values.get("dropout", cfg.dropout))
    return Choice(values, reads, passes, speed)


def _ladder(cfg: TrainConfig, given: set[str], train_chars: int, vocab: int):
    """The rungs (layers, hidden) --size auto may choose for this text, keeping what is `given`,
    smallest first, and `model(layers, hidden)`: the ModelConfig of a rung."""
    ladder = [(L, H) for L, H in LADDER]
    if vocab > LARGE_VOCAB:  # thousands of characters: one-layer rungs (see LARGE_VOCAB)
        ladder = sorted({(1, H) for _, H in LADDER}, key=lambda lh: lh[1])
    if "layers" in given or "hidden" in given:  # one of them fixed: the ladder's rungs that keep it
        ladder = [(cfg.layers if "layers" in given else L, cfg.hidden if "hidden" in given else H) for L, H in ladder]
        ladder = sorted(set(ladder), key=lambda lh: weights_per_char(cfg.cell, lh[0], lh[1], 64, vocab))

    def model(L: int, H: int) -> ModelConfig:
        embed = cfg.embed if "embed" in given else H if cfg.tie_weights else embed_for(vocab, H)
        return ModelConfig(
            vocab_size=vocab,
            cell=cfg.cell,
            layers=L,
            hidden=H,
            embed=embed,
            dropout=cfg.dropout if "dropout" in given else 0.0,  # (timed with the dropout it will train with)
            tie_weights=cfg.tie_weights and embed == H,
        )

    if not {"layers", "hidden"} <= given:  # (the rungs below the ladder keep what is given, too)
        small = [
            (cfg.layers if "layers" in given else L, cfg.hidden if "hidden" in given else H) for L, H in SMALL_RUNGS
        ]
        weights = lambda rung: weights_per_char(cfg.cell, *rung, model(*rung).embed, vocab)  # noqa: E731
        ladder = _for_the_text(ladder, small, weights, train_chars)
    return ladder, model


def reference(cfg: TrainConfig, given: set[str], train_chars: int, vocab: int) -> tuple[ModelConfig, int]:
    """The model and batch a run's precision is probed on before it is sized: the rung --size auto
    probes first (`_timed_pick`'s reference: 2x256 on a text large enough for it, 1x384 on the
    one-layer ladder of thousands of characters) with what is `given`, and 32 streams unless given."""
    ladder, model = _ladder(cfg, given, train_chars, vocab)
    return model(*_reference_rung(ladder)), cfg.batch_size if "batch_size" in given else 32


def _reference_rung(ladder):
    """The rung probed first: the fourth (2x256 on the full ladder, 1x384 on the one-layer one), or the
    largest of a shorter one."""
    return ladder[min(3, len(ladder) - 1)]


def _timed_pick(ladder, model, weights, enough, fits, batch: int, speed_of, seconds: float, reads_limit: float):
    """For a run with `seconds` of training: probe a middle rung's speed (`speed_of(rung)`),
    estimate the others' from it (generously), then probe down from the pick while the estimate
    does not hold. Returns (the rung, the characters the run will read, its speed)."""
    measured: dict[tuple[int, int], float] = {}

    def speed_at(rung) -> float:
        if rung not in measured:
            measured[rung] = speed_of(rung)
        return measured[rung]

    reference = _reference_rung(ladder)
    ref_speed, ref_weights = speed_at(reference), weights(model(*reference))

    def estimate(rung) -> float:
        return measured.get(rung) or ESTIMATE_SLACK * ref_speed * ref_weights / weights(model(*rung))

    def reads_at(rung) -> float:
        return min(seconds * estimate(rung), reads_limit)

    pick = _largest(ladder, model, enough, fits, batch, lambda m: reads_at((m.layers, m.hidden)))
    for _ in range(MAX_PROBES):  # the estimate was generous: measure, and step down while it does not hold
        index = ladder.index(pick)
        speed_at(pick)  # (measured now: estimate() uses it)
        if index == 0 or enough(model(*pick), reads_at(pick)):
            break
        pick = ladder[index - 1]
    return pick, reads_at(pick), estimate(pick)


def _for_the_text(ladder, small, weights_of, train_chars: int):
    """The rungs of `ladder` with at most MAX_WEIGHTS_PER_CHAR weights per character of a text of
    `train_chars`; when none has, the largest of the `small` rungs that has, or the smallest."""
    cap = MAX_WEIGHTS_PER_CHAR * max(train_chars, 1)
    kept = [rung for rung in ladder if weights_of(rung) <= cap]
    if kept:
        return kept
    candidates = sorted(set(small) | {ladder[0]}, key=weights_of)
    return [max((r for r in candidates if weights_of(r) <= cap), key=weights_of, default=candidates[0])]


def untimed_reads(cfg: TrainConfig, train_chars: int, per_step: int) -> float:
    """Characters the run reads by its step or epoch limit (infinite without one)."""
    limits = [math.inf]
    if cfg.max_epochs:
        limits.append(cfg.max_epochs * train_chars)
    if cfg.max_steps:
        limits.append(cfg.max_steps * per_step)
    return min(limits)


def _largest(ladder, model, enough, fits, batch, reads_of) -> tuple[int, int]:
    """The largest rung that reads enough characters for its weights (`enough(model, reads)`) and
    fits; else the smallest."""
    best = ladder[0]
    for rung in ladder:
        m = model(*rung)
        if enough(m, reads_of(m)) and fits(m, batch):
            best = rung
    return best


def apply(cfg: TrainConfig, choice: Choice | None) -> TrainConfig:
    if choice is None:
        return cfg
    return replace(cfg, **choice.values).validate()


def probe_seconds(budget_left: float | None) -> float:
    """How long to time each model: a second, less for a budget under 100 s (at least 0.1 s)."""
    return 1.0 if budget_left is None else min(1.0, max(0.1, 0.01 * budget_left))


def measure_speed(
    model_cfg: ModelConfig,
    batch: int,
    seq_len: int,
    seconds: float = 1.0,
    device=None,
    clock=time.perf_counter,
    precision: str = "fp32",
    dropout_mask: str = "locked",
) -> float:
    """Characters per second of training steps of this model (random ids; one warm-up step, then
    steps for about `seconds`), on the threads torch is set to use now, its forward pass in
    `precision` (fp32 or bf16, autocast as the Trainer runs it): a step's characters over the
    median step's time, so that a busy moment (a neighbour's burst over less than half the probe)
    does not pass for the machine's speed and shrink the model chosen. Dropout's masks drawn as
    `dropout_mask` says (train --dropout-mask: element masks cost more)."""
    return speed_probe(model_cfg, batch, seq_len, device, clock, precision, dropout_mask)(seconds)


def speed_probe(
    model_cfg: ModelConfig,
    batch: int,
    seq_len: int,
    device=None,
    clock=time.perf_counter,
    precision: str = "fp32",
    dropout_mask: str = "locked",
) -> Callable[..., float]:
    """`measure_speed`'s probe, made once (the model, its optimizer, one warm-up step) and timed
    as often as asked: `probe(seconds, min_steps=3)` is the characters per second of the median
    of the steps it runs for about `seconds` (at least `min_steps` of them). torch's random
    numbers are as they were before each call."""
    import torch
    import torch.nn.functional as F

    from charrnn.model import CharRNN, detach_hidden

    kind = torch.device(device or "cpu").type  # (a GPU runs asynchronously: a step ends when it is done)
    sync = {"cuda": lambda: torch.cuda.synchronize(), "mps": lambda: torch.mps.synchronize()}.get(kind)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    rng = torch.random.get_rng_state()
    try:
        model = CharRNN(model_cfg).to(device or "cpu")
        model.dropout_mask = dropout_mask
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, model_cfg.vocab_size, (batch, seq_len + 1), device=device or "cpu")
    finally:
        torch.random.set_rng_state(rng)
    state = {"hidden": None, "warm": False}

    def step() -> float:
        with torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits, hidden = model(x[:, :-1], state["hidden"])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["hidden"] = detach_hidden(hidden)
        if sync is not None:
            sync()
        return clock()

    def probe(seconds: float, min_steps: int = 3) -> float:
        rng = torch.random.get_rng_state()
        try:
            last = step() if not state["warm"] else clock()  # (the first step of all warms up)
            state["warm"] = True
            started, times = last, []
            while True:
                now = step()
                times.append(now - last)
                last = now
                if now - started >= seconds and len(times) >= min_steps:
                    times.sort()  # (the lower median: of two steps, the one not slowed by the cache it found)
                    return batch * seq_len / times[(len(times) - 1) // 2]
        finally:
            torch.random.set_rng_state(rng)

    return probe


# --precision auto: bf16 only where the CPU computes it natively (AVX512-BF16 or AMX: elsewhere
# torch emulates it, slower than fp32) and a probe of the model finds it at least this much faster.
# Measured on a 2-core AVX512-BF16 VM (Zen 4), training steps, bf16 over fp32: LSTM 2x256 batch 16
# 1.6x (1 thread 1.9x), 2x384 1.4x, 2x512 1.5-1.6x; a vanilla RNN 2x256 0.7x (too little to compute).
# Step for step the losses match: 600 steps of 2x256 side by side, val 1.760 fp32, 1.755 bf16 at 400.
BF16_GAIN = 1.15
PROBE_ROUNDS = 3  # slices of each precision's probe, taken in turn (see choose_precision)
# A run that would train for less than this is left in fp32 without probing: the probe would cost
# more than bf16 could save. Without a time budget, the run's size in FLOP (6 per computing weight
# per character, forward and backward) at 1 GFLOP/s, a floor below any CPU torch runs on.
SHORT_RUN_SECONDS = 30.0
SLOW_FLOPS = 1e9
# A vocabulary of thousands of characters stays fp32: on the Tang poems (6,523 characters, LSTM
# 2x128, batch 32, the same 673 steps side by side) bf16 learned less per step, 5.967 against
# fp32's 5.740 (6.219 against 6.011 at step 400; the read-out kept in fp32 did not change it),
# where on tiny-shakespeare (65) it matched fp32 step for step.
LARGE_VOCAB_LINE = (
    "--precision auto: fp32 (a vocabulary of {vocab:,} characters: on such text bf16 learned less per step; "
    "--precision bf16 to try it)"
)


def bf16_native(device) -> bool:
    """Whether `device` is a CPU with native bf16 arithmetic (torch's own CPU-capability checks)."""
    import torch

    if torch.device(device).type != "cpu":
        return False
    cpu = torch.cpu
    return any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def short_run(model_cfg: ModelConfig, reads: float, seconds_left: float | None) -> bool:
    """Whether a run is too short for the precision probe to pay: under SHORT_RUN_SECONDS of budget,
    or of computing at SLOW_FLOPS the characters its step or epoch limit lets it read."""
    if seconds_left is not None and seconds_left < SHORT_RUN_SECONDS:
        return True
    work = (
        6
        * reads
        * weights_per_char(model_cfg.cell, model_cfg.layers, model_cfg.hidden, model_cfg.embed, model_cfg.vocab_size)
    )
    return work / SLOW_FLOPS < SHORT_RUN_SECONDS


def choose_precision(probe: Callable[[str, float], float], seconds: float = 1.0) -> tuple[str, str, dict[str, float]]:
    """--precision auto on a CPU with native bf16: fp32 or bf16 by a probe of the model in each
    (`probe(precision, seconds)`, characters per second), in PROBE_ROUNDS slices of each taken in
    turn (fp32, bf16, fp32, ...), each precision's fastest slice against the other's: a
    neighbour's burst slows the slices it falls on, in either precision, and leaves the others.
    (One second of each, one after the other, once read fp32 at 9,234 chars/s where it ran at
    ~26,000: a burst over most of its second.) Returns (the precision, one line for the user,
    each precision's median slice: the speed to plan a run at, which the fastest would overstate)."""
    slices: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(PROBE_ROUNDS):
        for precision in slices:
            slices[precision].append(probe(precision, seconds / PROBE_ROUNDS))
    fp32, bf16 = max(slices["fp32"]), max(slices["bf16"])
    typical = {precision: sorted(speeds)[len(speeds) // 2] for precision, speeds in slices.items()}
    ratio = bf16 / fp32
    if ratio >= BF16_GAIN:
        return (
            "bf16",
            (
                f"--precision auto: bf16, {ratio:.2f}x fp32's speed on this CPU ({bf16:,.0f} against {fp32:,.0f} "
                "chars/s in a probe; the validation loss is computed in fp32; --precision fp32 to train in fp32)"
            ),
            typical,
        )
    return (
        "fp32",
        f"--precision auto: fp32 (bf16 probed at {ratio:.2f}x its speed on this CPU, under {BF16_GAIN}x)",
        typical,
    )
