"""--size auto: the rule on fake speeds and sizes, and its place in a real `charrnn train`."""

import json

import pytest
from tiny_run import invoke, structured_text

from charrnn.cells import weights_per_char
from charrnn.config import ModelConfig, TrainConfig
from charrnn.training import plan, sizing
from charrnn.training.sizing import CHARS_PER_WEIGHT, choose

VOCAB = 65


def weights_of(m) -> int:
    return weights_per_char(m.cell, m.layers, m.hidden, m.embed, m.vocab_size)


def speed_inverse_to_weights(flops_per_second: float = 6e10):
    """A fake machine: characters per second = its FLOP/s over 6 FLOPs per weight per character."""
    calls = []

    def speed_of(m, batch, seq_len):
        calls.append((m.layers, m.hidden, m.dropout))
        return flops_per_second / (6 * weights_of(m))

    speed_of.calls = calls
    return speed_of


def pick(seconds=None, train_chars=1_000_000, given=(), fits=lambda m, b: True, speed_of=None, **cfg):
    config = TrainConfig(time_budget=seconds, **cfg).validate()
    choice = choose(config, set(given), train_chars, VOCAB, speed_of or speed_inverse_to_weights(), seconds, fits)
    return sizing.apply(config, choice), choice


def size(cfg) -> int:
    return weights_per_char(cfg.cell, cfg.layers, cfg.hidden, cfg.embed, VOCAB)


def test_a_longer_budget_never_chooses_a_smaller_model():
    sizes = [size(pick(seconds)[0]) for seconds in (5, 30, 60, 300, 600, 3600, 36_000, 360_000)]
    assert sizes == sorted(sizes)
    assert sizes[0] < sizes[-1]  # (the rule does move)
    assert len(set(sizes)) >= 4


def test_more_epochs_or_a_larger_corpus_never_choose_a_smaller_model():
    by_epochs = [size(pick(max_epochs=e)[0]) for e in (0.1, 1, 3, 10, 30, 100)]
    by_corpus = [
        size(pick(train_chars=n, max_epochs=10)[0]) for n in (10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
    ]
    assert by_epochs == sorted(by_epochs) and by_epochs[0] < by_epochs[-1]
    assert by_corpus == sorted(by_corpus) and by_corpus[0] < by_corpus[-1]


def needed(weights: int, reads: float, train_chars: int = 1_000_000) -> float:
    """Characters a model of `weights` must read: fewer a weight where the rule gives it its most dropout."""
    regularised = sizing.dropout_for(reads / train_chars, weights / train_chars) >= sizing.MAX_DROPOUT
    return (sizing.REGULARISED_CHARS_PER_WEIGHT if regularised else CHARS_PER_WEIGHT) * weights


def test_the_chosen_model_reads_enough_characters_for_its_weights():
    for seconds in (60, 600, 6000):
        cfg, choice = pick(seconds)
        assert choice.reads >= needed(size(cfg), choice.reads)
        allowed = sizing.MAX_WEIGHTS_PER_CHAR * 1_000_000  # (larger ones are too large for the text)
        bigger = [
            w for rung in sizing.LADDER if size(cfg) < (w := weights_per_char("lstm", *rung, 64, VOCAB)) <= allowed
        ]
        if bigger:  # and the next rung up would not have
            big = bigger[0]
            reads_big = choice.reads * size(cfg) / big
            assert reads_big < needed(big, reads_big)


TWO_BY_512 = weights_per_char("lstm", 2, 512, 64, VOCAB)


@pytest.mark.parametrize(
    "train_chars, per_weight, given, chosen",
    [
        (1_000_000, 1.9, {}, (2, 512)),  # 6.3 passes: the rule's most dropout, so 1.9 characters a weight are enough
        (900_000, 1.8, {}, (2, 512)),
        (900_000, 1.7, {}, (2, 384)),  # 6.3 passes too, but below REGULARISED_CHARS_PER_WEIGHT
        (1_258_000, 1.9, {}, (2, 384)),  # 5 passes: the ramp's 0.1 only, so 2 a weight
        (4_200_000, 1.9, {}, (2, 384)),  # 1.5 passes: no dropout
        (1_000_000, 1.9, {"dropout": 0.0}, (2, 384)),  # a dropout given decides
        (1_000_000, 1.9, {"dropout": 0.1}, (2, 384)),
        (4_200_000, 1.9, {"dropout": 0.2}, (2, 512)),
    ],
)
def test_a_regularised_model_needs_fewer_characters_a_weight(train_chars, per_weight, given, chosen):
    """Where the run has the most dropout (and the decay that goes with it) a larger model beats a
    smaller one at fewer characters a weight (REGULARISED_CHARS_PER_WEIGHT)."""
    reads = per_weight * TWO_BY_512
    cfg, _ = pick(train_chars=train_chars, max_epochs=reads / train_chars, given=set(given), **given)
    assert (cfg.layers, cfg.hidden) == chosen


@pytest.mark.parametrize("per_weight, chosen", [(1.8, (2, 512)), (1.7, (2, 384))])
def test_a_timed_run_probes_its_pick_against_the_regularised_threshold(per_weight, chosen):
    """The same on a time budget: the 2x512's measured speed reads `per_weight` characters a weight
    in the seconds the run trains (the estimate from the reference rung is generous: the probe
    decides)."""
    seconds = 600
    flops = per_weight * TWO_BY_512 * 6 * TWO_BY_512 / (sizing.BUDGET_FOR_STEPS * seconds)
    cfg, choice = pick(seconds, train_chars=900_000, speed_of=speed_inverse_to_weights(flops))  # (6+ passes)
    assert (cfg.layers, cfg.hidden) == chosen and cfg.dropout == sizing.MAX_DROPOUT


def test_dropout_grows_with_the_passes_over_the_corpus_and_is_off_for_the_first_few():
    dropouts = [pick(600, train_chars=n)[0].dropout for n in (100_000_000, 10_000_000, 1_000_000, 100_000, 10_000)]
    assert dropouts[0] == 0.0  # less than one pass: every character is new
    assert dropouts == sorted(dropouts) and dropouts[-1] == sizing.MAX_DROPOUT
    free, ramp = sizing.FREE_PASSES, sizing.RAMP_PASSES
    assert sizing.dropout_for(1.5) == sizing.dropout_for(free) == 0.0  # (a 240 s run on 1 MB: 4-5 passes)
    ramped = [sizing.dropout_for(free + ramp * k / 4) for k in range(5)]
    assert ramped == sorted(ramped) and ramped[-1] == sizing.MAX_DROPOUT  # (6: the full rule)
    assert 0 < ramped[2] < sizing.MAX_DROPOUT  # (part of it half way)
    dropouts = {sizing.dropout_for(free + ramp * k / 100) for k in range(1, 101)}
    assert min(dropouts - {0.0}) == sizing.MIN_DROPOUT  # none below: its mask costs as much as more's


def test_a_model_with_fewer_weights_than_its_text_has_characters_gets_less_dropout():
    by_size = [sizing.dropout_for(10.0, per_char) for per_char in (0.3, 0.9, 1.5, 1.9, 3.0, 30.0)]
    assert by_size == [0.1, 0.1, 0.15, 0.2, 0.2, 0.2]  # (0.1 a weight a character, rounded to 0.05)
    assert by_size[0] == sizing.MIN_DROPOUT and by_size[-1] == sizing.MAX_DROPOUT
    # the ramp's share of a 0.1 ceiling rounds to none longer: dropout begins at 5.5 passes, not 4.75
    assert [sizing.dropout_for(passes, 0.87) for passes in (5.0, 5.5)] == [0.0, 0.1]
    assert [sizing.dropout_for(passes, 3.0) for passes in (4.7, 4.75)] == [0.0, 0.1]
    # through the rule: ten passes over 1 M characters, LSTM 2x256 (0.87 weights a character) and 2x512 (3.3)
    small, _ = pick(train_chars=1_000_000, max_epochs=10, given=("layers", "hidden"), layers=2, hidden=256)
    large, _ = pick(train_chars=1_000_000, max_epochs=10, given=("layers", "hidden"), layers=2, hidden=512)
    assert small.dropout == sizing.MIN_DROPOUT and large.dropout == sizing.MAX_DROPOUT


def test_the_model_fits_in_memory():
    limit = weights_per_char("lstm", 2, 256, 64, VOCAB)
    cfg, _ = pick(360_000, fits=lambda m, b: weights_of(m) <= limit)
    assert size(cfg) == limit  # the largest that fits, although the budget would allow more


def test_a_slower_model_than_estimated_steps_one_rung_down():
    fast = speed_inverse_to_weights()
    reference = weights_per_char("lstm", 2, 256, 64, VOCAB)  # the rung probed first
    honest, _ = pick(6000, speed_of=fast)
    assert size(honest) > reference

    def slow_for_large(m, batch, seq_len):  # the reference is measured right; larger models are 5x slower
        return fast(m, batch, seq_len) / (5 if weights_of(m) > reference else 1)

    cautious, choice = pick(6000, speed_of=slow_for_large)
    assert size(cautious) < size(honest)
    assert choice.speed is not None


def test_given_options_win_and_the_rest_is_chosen():
    cfg, choice = pick(600, given={"hidden", "dropout"}, hidden=100, dropout=0.05)
    assert cfg.hidden == 100 and cfg.dropout == 0.05
    assert "hidden" not in choice.values and "dropout" not in choice.values
    assert set(choice.values) == {"layers", "embed", "batch_size", "weight_decay"}
    assert pick(600, given=set(sizing.CHOSEN))[1] is None  # nothing left to choose


def test_weight_decay_follows_the_dropout():
    assert [sizing.weight_decay_for(d) for d in (0.0, 0.1, 0.15, 0.2, 0.5)] == [0.1, 0.1, 0.2, 0.3, 0.3]
    # through the rule: ten passes over 1 M characters, LSTM 2x256 (dropout 0.1) and 2x512 (0.2); three passes (none)
    small, _ = pick(train_chars=1_000_000, max_epochs=10, given=("layers", "hidden"), layers=2, hidden=256)
    large, _ = pick(train_chars=1_000_000, max_epochs=10, given=("layers", "hidden"), layers=2, hidden=512)
    short, _ = pick(train_chars=1_000_000, max_epochs=3, given=("layers", "hidden"), layers=2, hidden=512)
    assert (small.dropout, small.weight_decay) == (0.1, 0.1)
    assert (large.dropout, large.weight_decay) == (0.2, 0.3)
    assert (short.dropout, short.weight_decay) == (0.0, 0.1)
    # a dropout given sets the decay as the rule's would; a decay given is kept, and the rest still chosen
    given_dropout, _ = pick(train_chars=1_000_000, max_epochs=3, given=("dropout",), dropout=0.2)
    assert given_dropout.weight_decay == 0.3
    kept, choice = pick(train_chars=1_000_000, max_epochs=10, given=("weight_decay",), weight_decay=0.05)
    assert kept.weight_decay == 0.05 and "weight_decay" not in choice.values and "layers" in choice.values
    assert f"batch {kept.batch_size}, weight decay 0.05:" in choice.describe(kept)


def test_large_alphabets_get_a_wider_embedding():
    assert sizing.embed_for(65, 512) == 64
    assert 64 < sizing.embed_for(6523, 512) <= 512


def test_tied_weights_make_the_embedding_as_wide_as_the_cells():
    cfg, _ = pick(600, tie_weights=True, embed=64, hidden=64)
    assert cfg.tie_weights and cfg.embed == cfg.hidden


def test_auto_is_the_default_only_without_model_options(tmp_path):
    started = __import__("time").monotonic()
    fresh = plan.Plan(TrainConfig(max_steps=5, precision="fp32").validate())
    cfg, choice, _ = plan.size_model(fresh, set(), 50_000, VOCAB, started)
    assert choice is not None and choice.values["layers"] == cfg.layers
    assert plan.size_model(fresh, {"hidden"}, 50_000, VOCAB, started) == (fresh.cfg, None, None)
    decayed = plan.Plan(TrainConfig(max_steps=5, precision="fp32", weight_decay=0.05).validate())
    cfg, choice, _ = plan.size_model(decayed, {"weight_decay"}, 50_000, VOCAB, started)  # (not a model option)
    assert choice is not None and "layers" in choice.values and cfg.weight_decay == 0.05
    explicit = plan.Plan(TrainConfig(max_steps=5, size="auto", hidden=48, precision="fp32").validate())
    cfg, choice, _ = plan.size_model(explicit, {"hidden"}, 50_000, VOCAB, started)
    assert cfg.hidden == 48 and "hidden" not in choice.values
    off = plan.Plan(TrainConfig(max_steps=5, size="default", precision="fp32").validate())
    assert plan.size_model(off, set(), 50_000, VOCAB, started) == (off.cfg, None, None)
    numpy = plan.Plan(TrainConfig(max_steps=5, engine="numpy").validate())
    cfg, choice, line = plan.size_model(numpy, set(), 50_000, VOCAB, started)
    assert choice is None and line is None and cfg.precision == "fp32"  # (numpy computes in fp32: no probe)


def test_train_without_model_flags_says_what_it_chose_and_trains_that(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(structured_text(30_000))
    result = invoke(
        "train",
        corpus,
        "--max-steps",
        2,
        "--seq-len",
        16,
        "--out",
        tmp_path / "runs",
        "--threads",
        1,
        "--cache-dir",
        tmp_path / "cache",
    )
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("--size auto:"))
    info = invoke("info", tmp_path / "runs" / "c" / "last.pt", "--json")
    model = json.loads(info.stdout)["model"]
    assert f"{model['layers']}×{model['hidden']}, embedding {model['embed']}" in line
    given = invoke(
        "train",
        corpus,
        "--max-steps",
        2,
        "--seq-len",
        16,
        "--hidden",
        16,
        "--out",
        tmp_path / "runs",
        "--name",
        "d",
        "--threads",
        1,
        "--cache-dir",
        tmp_path / "cache",
    )
    assert given.exit_code == 0, given.stderr
    assert "--size auto" not in given.stderr


@pytest.mark.parametrize("value", ["big", "AUTO"])
def test_bad_size_values_are_refused(value, tmp_path):
    result = invoke("train", tmp_path / "missing.txt", "--size", value)
    assert result.exit_code == 2
    assert "--size" in result.stderr and "auto, default" in result.stderr


def test_the_probe_times_few_models():
    speed_of = speed_inverse_to_weights(1e9)  # a very slow machine: every estimate fails, down the ladder
    pick(600, speed_of=speed_of)
    assert len(speed_of.calls) <= 1 + sizing.MAX_PROBES
    assert len(set(speed_of.calls)) == len(speed_of.calls)  # none twice
    speed_of = speed_inverse_to_weights()
    _, choice = pick(6000, train_chars=100_000, speed_of=speed_of)  # many passes: dropout, timed once more
    assert choice.values["dropout"] > 0
    assert speed_of.calls[-1] == (choice.values["layers"], choice.values["hidden"], choice.values["dropout"])
    assert len(speed_of.calls) <= 2 + sizing.MAX_PROBES
    assert len(set(speed_of.calls)) == len(speed_of.calls)


def slowed_by_dropout(factor):
    """The fake machine, `factor` times as fast for a model with dropout."""
    fast = speed_inverse_to_weights()

    def speed_of(m, batch, seq_len):
        return fast(m, batch, seq_len) * (factor if m.dropout > 0 else 1)

    speed_of.calls = fast.calls
    return speed_of


@pytest.mark.parametrize(
    "factor, chars, what",
    [
        (0.9, 100_000, "the same dropout: many passes either way"),
        (0.35, 400_000, "less dropout (15.9 passes at full speed: 0.2; 5.6 with dropout: 0.15), timed too"),
        (0.8, 900_000, "the size's ceiling either way (2x256, 0.97 a character: 7.1 passes, 5.6 with dropout: 0.1)"),
        (0.5, 700_000, "none (9.1 passes at full speed: 0.1; 4.5 with dropout): planned at the speed without"),
    ],
)
def test_the_run_is_planned_at_the_speed_of_the_dropout_it_will_train_with(factor, chars, what):
    naive, naive_choice = pick(600, train_chars=chars)
    speed_of = slowed_by_dropout(factor)
    cfg, choice = pick(600, train_chars=chars, speed_of=speed_of)
    assert naive.dropout > 0 and (cfg.layers, cfg.hidden) == (naive.layers, naive.hidden)  # (the rung stays)
    assert naive.dropout == sizing.dropout_for(naive_choice.passes, size(naive) / chars)  # (the size's ceiling)
    first = sizing.dropout_for(naive_choice.passes * factor, size(cfg) / chars)  # the pick timed with its dropout...
    assert (cfg.layers, cfg.hidden, naive.dropout) in speed_of.calls
    assert cfg.dropout == first <= naive.dropout  # ... gives the dropout for the passes it makes with it
    if cfg.dropout > 0:
        assert speed_of.calls[-1] == (cfg.layers, cfg.hidden, cfg.dropout)
    expected = naive_choice.speed * (factor if cfg.dropout > 0 else 1)  # planned at the dropout it trains with
    assert choice.speed == pytest.approx(expected)
    assert choice.reads == pytest.approx(naive_choice.reads * expected / naive_choice.speed)
    assert choice.passes == pytest.approx(choice.reads / chars)
    assert len(set(speed_of.calls)) == len(speed_of.calls)  # none timed twice (without dropout: not again)
    assert cfg.weight_decay == sizing.weight_decay_for(cfg.dropout)  # (the dropout it trains with)


def test_the_run_is_planned_at_the_dropout_s_speed_in_a_real_plan(monkeypatch):
    """Through `plan.size_model` (its cache of probes, precision fp32): the model chosen is timed with
    its dropout, and the run planned at that speed."""
    calls = []

    def measure_speed(m, batch, seq_len, seconds, device, precision="fp32", dropout_mask="locked"):
        calls.append((m.layers, m.hidden, m.dropout))
        return 6e10 / (6 * weights_of(m)) * (0.9 if m.dropout > 0 else 1)

    monkeypatch.setattr(sizing, "measure_speed", measure_speed)
    started = __import__("time").monotonic()
    config = TrainConfig(time_budget=600, size="auto", precision="fp32", threads=1, device="cpu").validate()
    cfg, choice, _ = plan.size_model(plan.Plan(config), set(), 100_000, VOCAB, started)
    assert cfg.dropout > 0 and calls[-1] == (cfg.layers, cfg.hidden, cfg.dropout)
    assert cfg.batch_size == 24  # (on the CPU: sizing.batch_for)
    assert len(set(calls)) == len(calls)
    assert choice.speed == pytest.approx(6e10 / (6 * size(cfg)) * 0.9)


@pytest.mark.parametrize("mask", ["locked", "element"])
def test_the_probes_draw_dropout_s_masks_as_the_run_will(monkeypatch, mask):
    """Element masks cost a step more than locked ones (README): every probe, of the precision
    and of the rungs, times the run's own."""
    seen = []

    def probe(m, batch, seq_len, device=None, clock=None, precision="fp32", dropout_mask="locked"):
        seen.append(dropout_mask)
        return lambda seconds, min_steps=3: 6e10 / (6 * weights_of(m))

    monkeypatch.setattr(sizing, "speed_probe", probe)
    monkeypatch.setattr(sizing, "bf16_native", lambda device: True)
    started = __import__("time").monotonic()
    config = TrainConfig(time_budget=600, dropout_mask=mask, threads=1, device="cpu").validate()
    plan.size_model(plan.Plan(config), set(), 1_000_000, VOCAB, started)
    assert len(seen) > 2 and set(seen) == {mask}


def test_the_speed_probe_builds_its_model_with_the_mask_asked_for(monkeypatch):
    import charrnn.model

    built = []
    real = charrnn.model.CharRNN.__init__

    def init(self, cfg):
        real(self, cfg)
        built.append(self)

    monkeypatch.setattr(charrnn.model.CharRNN, "__init__", init)
    cfg = ModelConfig(vocab_size=VOCAB, layers=2, hidden=8, embed=4, dropout=0.2)
    sizing.speed_probe(cfg, 2, 5, dropout_mask="element")
    sizing.speed_probe(cfg, 2, 5)
    assert [m.dropout_mask for m in built] == ["element", "locked"]


def test_a_dropout_given_is_timed_with_every_rung():
    speed_of = speed_inverse_to_weights()
    pick(600, given={"dropout"}, dropout=0.3, speed_of=speed_of)
    assert speed_of.calls and all(dropout == 0.3 for _, _, dropout in speed_of.calls)


def test_a_run_that_reads_its_text_less_than_twice_takes_more_smaller_steps():
    few, _ = pick(600, train_chars=100_000_000)
    many, _ = pick(600, train_chars=100_000)
    assert few.batch_size < many.batch_size
    assert sizing.batch_for(sizing.FEW_PASSES - 0.1) == 16 and sizing.batch_for(sizing.FEW_PASSES) == 24
    assert sizing.batch_for(sizing.FEW_PASSES, "cuda") == 32  # (24 was measured on the CPU only)
    assert sizing.batch_for(sizing.FEW_PASSES - 0.1, "cuda") == 16
    config = TrainConfig(time_budget=600).validate()
    on_gpu = choose(config, set(), 100_000, VOCAB, speed_inverse_to_weights(), 600, device_type="cuda")
    assert on_gpu.values["batch_size"] == 32 and on_gpu.passes >= sizing.FEW_PASSES
    assert pick(600, train_chars=100_000_000, given={"batch_size"}, batch_size=48)[0].batch_size == 48


def test_a_run_limited_by_steps_reads_what_its_chosen_batch_reads():
    cfg, choice = pick(train_chars=100_000_000, max_steps=1000)
    assert choice.reads == 1000 * cfg.batch_size * cfg.seq_len


def test_a_tiny_text_gets_a_model_bounded_by_its_size_whatever_the_budget():
    """Before: a 2 KB text with --time-budget 600 chose LSTM 2×384 (1.9 M weights for 1,800
    characters): the budget allowed thousands of passes, and nothing bounded the model by the
    text. Now it has at most MAX_WEIGHTS_PER_CHAR weights per character, or is the smallest rung."""
    for seconds in (60, 600, 36_000):
        cfg, _ = pick(seconds, train_chars=1800)
        assert (cfg.layers, cfg.hidden) == sizing.SMALL_RUNGS[0] and cfg.embed <= cfg.hidden
    cfg, _ = pick(600, train_chars=20_000)  # 80 K weights allowed: the larger small rung
    assert (cfg.layers, cfg.hidden) == sizing.SMALL_RUNGS[-1]
    assert size(cfg) <= sizing.MAX_WEIGHTS_PER_CHAR * 20_000
    for n in (100_000, 1_000_000, 10_000_000):  # larger texts: within the bound, from the ladder
        cfg, _ = pick(36_000, train_chars=n)
        assert size(cfg) <= sizing.MAX_WEIGHTS_PER_CHAR * n and (cfg.layers, cfg.hidden) in sizing.LADDER
    by_text = [size(pick(36_000, train_chars=n)[0]) for n in (1000, 2000, 20_000, 100_000, 1_000_000, 10_000_000)]
    assert by_text == sorted(by_text) and len(set(by_text)) >= 4  # a larger text never gets a smaller model


def test_a_given_width_or_depth_is_kept_on_a_tiny_text():
    cfg, choice = pick(600, train_chars=1800, given={"hidden"}, hidden=256)
    assert cfg.hidden == 256 and cfg.layers == 1 and "hidden" not in choice.values
    cfg, _ = pick(600, train_chars=1800, given={"layers"}, layers=3)
    assert cfg.layers == 3 and cfg.hidden == sizing.SMALL_RUNGS[0][1]
    cfg, choice = pick(600, train_chars=1800, given={"layers", "hidden"}, layers=2, hidden=384)
    assert (cfg.layers, cfg.hidden) == (2, 384)  # both given: the user's model, however large


@pytest.mark.parametrize(
    "steps, expected_step",
    [
        ([0.05] * 4 + [0.5] * 3, 0.05),  # a neighbour's burst over part of the probe: the free machine's speed
        ([0.5] * 3, 0.5),  # busy throughout: the busy machine's speed
    ],
)
def test_the_speed_probe_is_not_fooled_by_a_busy_moment(steps, expected_step):
    """The probe times each step on its clock (injected here) and takes the median step: a burst
    over less than half the probe leaves it as it is; load over all of it counts."""
    from charrnn.config import ModelConfig

    times = [0.0]
    for step in steps:
        times.append(times[-1] + step)
    clock = iter(times)
    model = ModelConfig(vocab_size=VOCAB, layers=1, hidden=8, embed=4)
    speed = sizing.measure_speed(model, batch=2, seq_len=5, seconds=1.0, clock=lambda: next(clock))
    assert speed == pytest.approx(2 * 5 / expected_step)


# --precision auto


def fake_probe(monkeypatch, bf16_gain: float = 1.6, native: bool = True):
    """A fake machine for plan.size_model: fp32 steps at 6e10 FLOP/s, bf16 `bf16_gain` times that;
    returns the probes made, as ((layers, hidden), batch, precision)."""
    calls = []

    def probe(m, batch, seq_len, device=None, clock=None, precision="fp32", dropout_mask="locked"):
        calls.append(((m.layers, m.hidden), batch, precision))
        return lambda seconds, min_steps=3: (bf16_gain if precision == "bf16" else 1.0) * 6e10 / (6 * weights_of(m))

    monkeypatch.setattr(sizing, "speed_probe", probe)
    monkeypatch.setattr(sizing, "bf16_native", lambda device: native)
    return calls


def size_with_budget(seconds, **cfg):
    started = __import__("time").monotonic()
    config = TrainConfig(time_budget=seconds, threads=1, device="cpu", **cfg).validate()
    return plan.size_model(plan.Plan(config), set(), 1_000_000, VOCAB, started)


@pytest.mark.parametrize(
    "gain, chosen", [(1.6, "bf16"), (sizing.BF16_GAIN + 0.01, "bf16"), (1.1, "fp32"), (0.7, "fp32")]
)
def test_precision_auto_takes_bf16_only_when_the_probe_finds_it_faster(gain, chosen):
    precision, line, _ = sizing.choose_precision(lambda p, s: {"fp32": 10_000.0, "bf16": 10_000.0 * gain}[p])
    assert precision == chosen and line.startswith(f"--precision auto: {chosen}")
    assert f"{gain:.2f}x" in line


@pytest.mark.parametrize(
    "fp32_slices, bf16_slices, chosen",
    [
        ([9_234.0, 26_000.0, 26_000.0], [38_000.0] * 3, "bf16"),  # a burst on fp32's first slice (1.46x, not 4.1x)
        ([26_000.0] * 3, [20_000.0, 38_000.0, 37_000.0], "bf16"),  # a burst on bf16's (1.46x, not 0.77x)
        ([26_000.0, 12_000.0, 26_500.0], [28_000.0, 14_000.0, 27_000.0], "fp32"),  # load over both: 1.06x
    ],
)
def test_the_precision_probe_takes_turns_so_a_busy_moment_cannot_decide(fp32_slices, bf16_slices, chosen):
    """The two precisions are timed in slices taken in turn, each at its fastest slice: a burst
    on one precision's probe neither buys bf16 nor costs it."""
    asked, slices = [], {"fp32": iter(fp32_slices), "bf16": iter(bf16_slices)}

    def probe(precision, seconds):
        asked.append((precision, seconds))
        return next(slices[precision])

    precision, line, speeds = sizing.choose_precision(probe, seconds=0.9)
    assert asked == [("fp32", pytest.approx(0.3)), ("bf16", pytest.approx(0.3))] * sizing.PROBE_ROUNDS
    assert precision == chosen and speeds == {"fp32": sorted(fp32_slices)[1], "bf16": sorted(bf16_slices)[1]}
    assert f"{max(bf16_slices) / max(fp32_slices):.2f}x" in line


def test_the_probe_is_made_once_and_timed_in_slices(monkeypatch):
    """`speed_probe` builds its model and warms up once; each call times more steps on its clock."""
    from charrnn import model as model_module
    from charrnn.config import ModelConfig

    steps, detach = [], model_module.detach_hidden
    monkeypatch.setattr(model_module, "detach_hidden", lambda h: steps.append(1) or detach(h))  # (once a step)
    ticks = iter(range(1000))
    cfg = ModelConfig(vocab_size=VOCAB, layers=1, hidden=8, embed=4)
    probe = sizing.speed_probe(cfg, 2, 5, clock=lambda: next(ticks))
    assert probe(2.5) == pytest.approx(10.0) and len(steps) == 4  # (a tick a step: the warm-up, then 3)
    assert probe(0.0, min_steps=2) == pytest.approx(10.0) and len(steps) == 6  # (warm: 2 steps, no warm-up)


def test_a_probe_slice_is_its_faster_step_of_two():
    """Of a slice's two steps, the first follows the other precision's model (its cache): the
    lower median is the step not slowed by that."""
    from charrnn.config import ModelConfig

    ticks = iter([0.0, 3.0, 4.0])  # (the warm-up ends at 0; then steps of 3 and 1 ticks)
    probe = sizing.speed_probe(
        ModelConfig(vocab_size=VOCAB, layers=1, hidden=8, embed=4), 2, 5, clock=lambda: next(ticks)
    )
    assert probe(0.0, min_steps=2) == pytest.approx(10.0)  # (10 characters in 1 tick, not in 3)


def test_precision_auto_sizes_the_model_at_the_speed_it_will_train_at(monkeypatch):
    """bf16 probed faster: the run trains in bf16, and the model is chosen at bf16's speed (a larger
    one than at fp32's), its probes made in bf16 after the first comparison."""
    calls = fake_probe(monkeypatch, bf16_gain=2.0)
    cfg, choice, line = size_with_budget(600)
    assert cfg.precision == "bf16" and line.startswith("--precision auto: bf16, 2.00x")
    assert calls[:2] == [((2, 256), 32, "fp32"), ((2, 256), 32, "bf16")]  # the reference rung, in each
    assert len(calls) >= 3 and all(precision == "bf16" for _, _, precision in calls[2:])
    assert calls.count(((2, 256), 32, "bf16")) == 1  # (sizing reuses the reference's probe)
    slower = fake_probe(monkeypatch, bf16_gain=1.0)
    fp32_cfg, _, fp32_line = size_with_budget(600)
    assert fp32_cfg.precision == "fp32" and "1.00x" in fp32_line
    assert all(precision == "fp32" for _, _, precision in slower[2:])
    assert size(cfg) > size(fp32_cfg)


def test_precision_auto_probes_nothing_where_it_cannot_pay(monkeypatch):
    """fp32 without a probe in bf16: on a CPU without native bf16, for a run under
    SHORT_RUN_SECONDS of budget, or one whose work is that short even at SLOW_FLOPS."""
    calls = fake_probe(monkeypatch, native=False)
    cfg, _, line = size_with_budget(600)
    assert cfg.precision == "fp32" and line is None and all(p == "fp32" for _, _, p in calls)
    calls = fake_probe(monkeypatch)
    cfg, _, line = size_with_budget(sizing.SHORT_RUN_SECONDS - 5)
    assert cfg.precision == "fp32" and line is None and all(p == "fp32" for _, _, p in calls)
    calls = fake_probe(monkeypatch)
    started = __import__("time").monotonic()
    tiny = TrainConfig(max_steps=5, threads=1, device="cpu").validate()
    cfg, _, line = plan.size_model(plan.Plan(tiny), set(), 50_000, VOCAB, started)
    assert cfg.precision == "fp32" and line is None and calls == []
    long = TrainConfig(max_steps=5000, hidden=256, size="default", threads=1, device="cpu").validate()
    cfg, choice, line = plan.size_model(plan.Plan(long), {"hidden"}, 50_000, VOCAB, started)
    assert cfg.precision == "bf16" and choice is None and [p for _, _, p in calls] == ["fp32", "bf16"]
    assert calls[0][:2] == ((cfg.layers, 256), cfg.batch_size)  # (untimed: the model the run trains)


def test_a_run_its_step_limit_makes_short_is_not_probed_whatever_its_budget(monkeypatch):
    calls = fake_probe(monkeypatch)
    started = __import__("time").monotonic()
    config = TrainConfig(time_budget=3600, max_steps=3, hidden=32, size="default", threads=1, device="cpu").validate()
    cfg, _, line = plan.size_model(plan.Plan(config), {"hidden"}, 50_000, VOCAB, started)
    assert cfg.precision == "fp32" and line is None and calls == []


def test_a_probe_torch_refuses_leaves_the_run_in_fp32_and_says_why(monkeypatch):
    fake_probe(monkeypatch)

    def refuse(m, batch, seq_len, device=None, clock=None, precision="fp32", dropout_mask="locked"):
        if precision == "bf16":
            raise RuntimeError("no bf16 kernel for this\nsecond line")
        return lambda seconds, min_steps=3: 1000.0

    monkeypatch.setattr(sizing, "speed_probe", refuse)
    cfg, _, line = size_with_budget(600)
    assert cfg.precision == "fp32" and line.endswith("bf16 could not be timed here: no bf16 kernel for this)")


def test_the_real_probe_runs_in_bf16():
    from charrnn.config import ModelConfig

    model = ModelConfig(vocab_size=VOCAB, layers=1, hidden=8, embed=4)
    assert sizing.measure_speed(model, batch=2, seq_len=5, seconds=0.0, precision="bf16") > 0


def test_train_says_what_precision_auto_chose_saves_it_and_a_resume_keeps_it(monkeypatch, tmp_path):
    calls = fake_probe(monkeypatch, bf16_gain=1.5)
    monkeypatch.setattr(sizing, "SLOW_FLOPS", 1e3)  # (so that a 2-step run counts as long enough to probe)
    corpus = tmp_path / "c.txt"
    corpus.write_text(structured_text(30_000))
    common = ("--hidden", 64, "--seq-len", 16, "--out", tmp_path / "runs", "--threads", 1, "--cache-dir", tmp_path)
    result = invoke("train", corpus, "--max-steps", 2, *common)
    assert result.exit_code == 0, result.stderr
    assert "--precision auto: bf16, 1.50x fp32's speed" in result.stderr
    # the start line says what runs: bf16, or fp32 where this CPU's torch has no bf16 kernels (with a warning)
    assert "parameters on cpu in bf16 (" in result.stderr or "training in fp32" in result.stderr
    assert [p for _, _, p in calls] == ["fp32", "bf16"]

    def config():
        info = invoke("info", tmp_path / "runs" / "c" / "last.pt", "--json")
        return json.loads(info.stdout)["config"]

    assert config()["precision"] == "bf16"
    calls.clear()
    resumed = invoke("train", corpus, "--resume", "--max-steps", 4, *common)
    assert resumed.exit_code == 0, resumed.stderr
    assert calls == [] and "--precision auto" not in resumed.stderr  # the run goes on as it was: no probe
    assert (
        config()["precision"] == "bf16"
        and json.loads(invoke("info", tmp_path / "runs" / "c" / "last.pt", "--json").stdout)["progress"]["step"] == 4
    )


def test_precision_is_probed_on_a_model_the_text_allows(monkeypatch):
    """A 20 KB text with 600 s: the rung --size auto may choose (a small one), not 2x256, is what
    bf16 is timed on (a tiny model may be slower in bf16)."""
    calls = fake_probe(monkeypatch)
    started = __import__("time").monotonic()
    config = TrainConfig(time_budget=600, threads=1, device="cpu").validate()
    cfg, _, _ = plan.size_model(plan.Plan(config), set(), 20_000, VOCAB, started)
    assert calls[0] == (sizing.SMALL_RUNGS[-1], 32, "fp32") and calls[1][2] == "bf16"
    assert (cfg.layers, cfg.hidden) == sizing.SMALL_RUNGS[-1]


def test_a_vocabulary_of_thousands_of_characters_stays_in_fp32(monkeypatch):
    """bf16 learned less per step on the Tang poems (sizing.LARGE_VOCAB): fp32, said, not probed."""
    calls = fake_probe(monkeypatch, bf16_gain=2.0)
    started = __import__("time").monotonic()
    config = TrainConfig(time_budget=600, threads=1, device="cpu").validate()
    cfg, _, line = plan.size_model(plan.Plan(config), set(), 1_000_000, 6523, started)
    assert cfg.precision == "fp32" and "a vocabulary of 6,523 characters" in line
    assert all(p == "fp32" for _, _, p in calls)
    cfg, _, _ = plan.size_model(plan.Plan(config), set(), 1_000_000, sizing.LARGE_VOCAB, started)
    assert cfg.precision == "bf16"  # (an alphabet of up to LARGE_VOCAB characters: probed, and faster)


def test_a_model_too_large_for_memory_is_not_probed(monkeypatch):
    """Timing it would allocate it: the run stays fp32 and the Trainer refuses it in one line."""
    calls = fake_probe(monkeypatch)
    started = __import__("time").monotonic()
    config = TrainConfig(hidden=1_000_000, size="default", threads=1, device="cpu").validate()
    cfg, _, line = plan.size_model(plan.Plan(config), {"hidden"}, 50_000, VOCAB, started)
    assert cfg.precision == "fp32" and line is None and calls == []


def test_with_a_budget_and_a_given_model_the_precision_is_probed_on_that_model(monkeypatch):
    calls = fake_probe(monkeypatch)
    started = __import__("time").monotonic()
    config = TrainConfig(time_budget=600, size="default", hidden=320, threads=1, device="cpu").validate()
    cfg, choice, line = plan.size_model(plan.Plan(config), {"hidden"}, 1_000_000, VOCAB, started)
    assert choice is None and cfg.precision == "bf16" and (cfg.layers, cfg.hidden) == (2, 320)
    assert calls == [((2, 320), 32, "fp32"), ((2, 320), 32, "bf16")]


def test_the_run_is_planned_at_the_median_slice_of_the_precision_chosen(monkeypatch):
    """bf16's slices 30,000 / 10,000 / 20,000 chars/s: bf16 is chosen on its fastest (30,000 against
    fp32's 10,000), the run is planned at its median (20,000: the fastest overstates what a run
    keeps up), and the model the probe timed is not timed again."""
    slices = {"fp32": iter([10_000.0] * 3), "bf16": iter([30_000.0, 10_000.0, 20_000.0])}
    monkeypatch.setattr(
        sizing,
        "speed_probe",
        lambda m, b, s, device=None, precision="fp32", **k: lambda *a, **k: next(slices[precision]),
    )
    monkeypatch.setattr(sizing, "bf16_native", lambda device: True)
    monkeypatch.setattr(sizing, "measure_speed", lambda *a, **k: pytest.fail("timed again"))
    started = __import__("time").monotonic()
    config = TrainConfig(time_budget=600, size="auto", layers=2, hidden=256, threads=1, device="cpu").validate()
    # (5 M characters: 2.2 passes, no dropout, so nothing is timed again with one)
    cfg, choice, _ = plan.size_model(plan.Plan(config), {"layers", "hidden"}, 5_000_000, VOCAB, started)
    assert cfg.precision == "bf16" and cfg.dropout == 0 and choice.speed == 20_000.0


def test_thousands_of_characters_get_one_layer():
    """The Tang poems' lesson: two layers sat on a plateau for hundreds of steps where one learned."""
    large = sizing.LARGE_VOCAB + 5000
    ladder, _ = sizing._ladder(TrainConfig().validate(), set(), 10_000_000, large)
    assert ladder and all(layers == 1 for layers, _ in ladder)
    assert [hidden for _, hidden in ladder] == sorted({hidden for _, hidden in sizing.LADDER})
    config = TrainConfig(time_budget=3600).validate()
    choice = choose(config, set(), 1_000_000, large, speed_inverse_to_weights(), 3600)
    assert choice.values["layers"] == 1 and choice.values["hidden"] > 128  # (an hour: a wider one)
    alphabet, _ = sizing._ladder(TrainConfig().validate(), set(), 1_000_000, VOCAB)
    assert {layers for layers, _ in alphabet} > {1}  # an alphabet keeps the deeper rungs
    given, _ = sizing._ladder(TrainConfig(layers=2).validate(), {"layers"}, 1_000_000, large)
    assert all(layers == 2 for layers, _ in given)  # --layers wins


def test_several_layers_on_thousands_of_characters_are_warned_of_unless_asked_for(tmp_path):
    rng = __import__("random").Random(0)
    alphabet = [chr(0x4E00 + i) for i in range(sizing.LARGE_VOCAB + 200)]  # CJK ideographs
    corpus = tmp_path / "poems.txt"
    corpus.write_text("".join(rng.choice(alphabet) for _ in range(30_000)), encoding="utf-8")

    def train(name, *flags):
        result = invoke(
            "train", corpus, "--max-steps", 1, "--seq-len", 16, "--hidden", 16, "--embed", 8, "--threads", 1,
            "--eval-chars", 2000, "--out", tmp_path / "runs", "--name", name, "--cache-dir", tmp_path / "cache", *flags,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        return result.stderr

    warned = train("default")  # (--hidden given: --size default, two layers)
    assert "warning: 2 layers on 1,200 distinct characters" in warned and "--layers 1, or --size auto" in warned
    assert "layers on 1,200" not in train("one", "--layers", "1")
    assert "layers on 1,200" not in train("asked", "--layers", "2")  # asked for: not warned
    assert "layers on 1,200" not in train("default", "--resume")  # (its model is the checkpoint's)
