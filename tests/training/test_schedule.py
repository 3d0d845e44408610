"""Where a run ends and the learning rate on the way there, for each limit (--max-steps,
--max-epochs, --time-budget): the schedule ends where the run ends. Time is a fake clock that
moves only when a step or an evaluation says so, so that no test depends on the machine's speed."""

from __future__ import annotations

import math

import pytest
from conftest import repeat_text, words_text

from training.test_train import make_trainer


class FakeClock:
    """Seconds that pass only when told to (`advance`); a Trainer reads it as its clock."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def costing(trainer, clock: FakeClock, step: float, eval_chunk: float | None = None) -> None:
    """Make every training step of `trainer` take `step` seconds of `clock`, and every forward
    pass of an evaluation or a live sample take `eval_chunk` for a chunk of --seq-len characters
    (default: a third of a step, about what it costs), less for fewer (a sample's one)."""
    per_char = (step / 3 if eval_chunk is None else eval_chunk) / trainer.cfg.seq_len

    def hook(module, args, out):
        clock.advance(step if module.training else per_char * args[0].shape[1])

    trainer.model.register_forward_hook(hook)


def cosine(lr: float, floor: float, fraction: float) -> float:
    """The cosine schedule, from lr at fraction 0 to lr x floor at fraction 1 (warm-up 0)."""
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * fraction)))


def run(trainer) -> tuple[dict, list[dict]]:
    steps: list[dict] = []
    events = trainer.events
    trainer.events = lambda e: (steps.append(e) if e["event"] == "step" else None, events(e))
    return trainer.fit(), steps


def test_max_steps_ends_the_run_and_the_cosine_at_that_step(tmp_path):
    trainer = make_trainer(words_text(3000), tmp_path, lr=0.1, min_lr_frac=0.2, max_steps=20, eval_every=1000)
    applied = []  # the rate AdamW steps with, not only the one reported
    trainer.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: applied.append(optimizer.param_groups[0]["lr"])
    )
    summary, steps = run(trainer)
    assert summary["step"] == 20 and [e["step"] for e in steps] == list(range(1, 21))
    assert (
        [e["lr"] for e in steps] == applied == pytest.approx([cosine(0.1, 0.2, k / 20) for k in range(20)], rel=1e-12)
    )
    assert steps[-1]["fraction"] == 1.0 and all(e["fraction"] < 1.0 for e in steps[:-1])


def test_max_epochs_ends_the_run_after_that_many_passes_and_the_cosine_with_it(tmp_path):
    trainer = make_trainer(
        words_text(2000), tmp_path, lr=0.1, min_lr_frac=0.2, max_epochs=2.5, seq_len=16, batch_size=4, eval_every=1000
    )
    per_epoch = trainer.chunks_per_epoch
    assert per_epoch % 2 == 0 and per_epoch >= 10  # (so that 2.5 epochs is a whole number of steps)
    total = per_epoch * 5 // 2
    summary, steps = run(trainer)
    assert summary["step"] == total and steps[-1]["epoch"] == 2.5
    assert [e["lr"] for e in steps] == pytest.approx([cosine(0.1, 0.2, k / total) for k in range(total)], rel=1e-12)
    assert steps[-1]["fraction"] == 1.0 and all(e["fraction"] < 1.0 for e in steps[:-1])


def test_a_time_budget_ends_the_run_on_time_and_the_cosine_with_it(tmp_path):
    """Steps of 0.1 s in a 3 s budget: the run ends once the budget (less the time it keeps for
    its end) is spent, and the learning rate follows the time, not the steps."""
    clock = FakeClock()
    trainer = make_trainer(
        words_text(20_000),
        tmp_path,
        clock=clock,
        lr=0.1,
        min_lr_frac=0.2,
        time_budget=3.0,
        eval_every=1000,
        sample_every=0,
    )
    costing(trainer, clock, step=0.1)
    summary, steps = run(trainer)
    assert summary["reason"] == "done" and 2.7 <= summary["elapsed_s"] <= 3.0 * 1.01, summary
    assert 24 <= summary["step"] <= 30 and steps[-1]["fraction"] == 1.0
    lrs = [e["lr"] for e in steps]
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] < cosine(0.1, 0.2, 0.95)  # from the top to the floor
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    for before, after in zip(steps[1:], steps[2:]):  # each step's rate is that of the time spent before it
        assert after["lr"] == pytest.approx(cosine(0.1, 0.2, before["fraction"]), rel=1e-9)  # (from the second: the
        # time kept for the end, in the fraction, is known once a step has been timed)


def test_the_learning_rate_follows_the_time_whatever_the_steps_cost(tmp_path):
    """Steps that get slower halfway (a busy machine): the rate still falls with the time spent,
    so fewer steps are left for the second half of the schedule."""
    clock = FakeClock()
    trainer = make_trainer(
        words_text(20_000),
        tmp_path,
        clock=clock,
        lr=0.1,
        min_lr_frac=0.0,
        time_budget=4.0,
        eval_every=1000,
        sample_every=0,
    )
    costs = iter([0.05] * 40 + [0.2] * 100)
    trainer.model.register_forward_hook(
        lambda module, args, out: clock.advance(next(costs) if module.training else 0.0)
    )
    summary, steps = run(trainer)
    assert summary["reason"] == "done" and steps[-1]["fraction"] == 1.0
    assert steps[39]["elapsed_s"] == pytest.approx(2.0)  # 40 fast steps: half the budget
    assert 0.04 < steps[40]["lr"] < 0.05  # half the peak rate, at about half the time (less the end's)
    assert steps[-1]["lr"] < 0.002
    assert 45 <= summary["step"] <= 52  # about 10 slow steps in the second half


def test_the_time_budget_counts_start_up_and_ends_once(tmp_path):
    """Start-up before fit() (here 1 s of a 3 s budget) counts; training ends with one final
    evaluation, not again after the reserve it kept turns out larger than needed."""
    clock = FakeClock()
    events = []
    trainer = make_trainer(
        repeat_text(30_000, "the quick brown fox.\n"),
        tmp_path,
        events=events.append,
        clock=clock,
        time_budget=3.0,
        eval_every=10_000,
        max_epochs=None,
    )
    costing(trainer, clock, step=0.05)
    trainer.started_at = clock() - 1.0
    summary = trainer.fit()
    assert 2.7 < summary["elapsed_s"] <= 3.0 * 1.01, summary
    assert 1.2 <= summary["step"] * 0.05 <= 1.6  # what start-up left, less the end's time (~2.3 s without start-up)
    assert len([e for e in events if e["event"] == "eval"]) == 1


@pytest.mark.parametrize("sample_every", [0, None])
def test_a_slow_evaluation_does_not_push_a_run_past_its_time_budget(tmp_path, sample_every):
    """The evaluation at the end would take 100 chunks x 0.05 s = 5 s of a 2 s budget: it is cut
    at the budget, said so, and the run still ends within it (with its last.pt), without the live
    sample that would come with the evaluation when there is no time left for it."""
    clock = FakeClock()
    events = []
    text = repeat_text(30_000, "the quick brown fox.\n")
    trainer = make_trainer(
        text,
        tmp_path,
        events=events.append,
        clock=clock,
        time_budget=2.0,
        eval_every=10_000,
        sample_every=sample_every,
        max_epochs=None,
        val_frac=0.45,
    )
    costing(trainer, clock, step=0.02, eval_chunk=0.05)
    started = clock()
    summary = trainer.fit()
    assert summary["reason"] == "done" and summary["step"] > 0
    assert clock() - started <= 2.0 * 1.01 + 0.05, clock() - started  # (the chunk in hand when the time is up)
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert any("to keep --time-budget 2" in w for w in warnings), warnings
    evaluations = [e for e in events if e["event"] == "eval"]
    assert len(evaluations) == 1 and evaluations[0]["val_loss"] is not None
    assert (tmp_path / "run" / "last.pt").exists()


def test_warm_up_then_constant(tmp_path):
    trainer = make_trainer(
        words_text(3000), tmp_path, lr=0.1, warmup=4, lr_schedule="constant", max_steps=8, eval_every=1000
    )
    _, steps = run(trainer)
    assert [e["lr"] for e in steps] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1], rel=1e-12)


def test_the_costs_of_a_runs_end_are_guessed_until_measured():
    from charrnn.training.schedule import Costs

    costs = Costs(guess_save=0.3, guess_sample_per_char=0.002)
    assert costs.save_s() == 0.3 and costs.sample_s(100) == pytest.approx(0.2)
    costs.save, costs.sample_per_char = 1.5, 0.01
    assert costs.save_s() == 1.5 and costs.sample_s(100) == pytest.approx(1.0)
    costs.save = 0.0  # measured, if too fast to see
    assert costs.save_s() == 0.0


def test_the_time_a_budget_run_keeps_for_its_end(tmp_path):
    """The final evaluation (guessed at a third of a step per chunk until measured; then as
    measured, scaled by how much slower the steps are now; a tenth more of it), the live sample
    that comes with it, the save, a step; at most half the budget; with several processes, each evaluates its
    share. Without a budget, nothing."""
    from charrnn.training.schedule import TimeBudget

    trainer = make_trainer(
        words_text(20_000), tmp_path, clock=FakeClock(), time_budget=100.0, batch_size=8, seq_len=16, sample_chars=50
    )
    val = len(trainer.val_ids)
    budget = trainer.budget
    assert (budget.val_chars, budget.chars_per_step) == (val, 8 * 16)  # what the Trainer gives it
    assert budget.end_reserve(trainer.samples.chars_at(trainer.progress.step)) == budget.end_reserve(50)
    c = budget.costs
    c.guess_save, c.guess_sample_per_char = 0.25, 0.01
    assert budget.end_reserve(50) == pytest.approx(0.25 + 50 * 0.01)  # no step timed yet
    c.step = 0.3
    assert budget.end_reserve(50) == pytest.approx(1.1 * 0.3 * val / (8 * 16) / 3 + 0.5 + 0.25 + 0.3)
    c.eval_per_char, c.step_at_eval = 1e-3, 0.2  # measured when a step took 0.2 s: now 1.5 times slower
    assert budget.end_reserve(50) == pytest.approx(1.1 * 1e-3 * val * 1.5 + 0.5 + 0.25 + 0.3)
    c.save, c.sample_per_char = 1.0, 0.02
    assert budget.end_reserve(50) == pytest.approx(1.1 * 1e-3 * val * 1.5 + 50 * 0.02 + 1.0 + 0.3)
    c.step_at_eval = None
    assert budget.end_reserve(50) == pytest.approx(1.1 * 1e-3 * val + 1.0 + 1.0 + 0.3)
    budget.val_chars = val / 2  # two processes: each evaluates half
    assert budget.end_reserve(50) == pytest.approx(1.1 * 1e-3 * val / 2 + 1.0 + 1.0 + 0.3)
    assert budget.end_reserve(0) == pytest.approx(1.1 * 1e-3 * val / 2 + 1.0 + 0.3)  # no live sample
    c.eval_per_char = 1.0
    assert budget.end_reserve(50) == 50.0
    no_samples = make_trainer(
        words_text(3000), tmp_path / "quiet", clock=FakeClock(), time_budget=100.0, sample_every=0
    )
    assert no_samples.samples.chars_at(0) == 0 and no_samples.samples.chars_at(10) == 0
    steps = make_trainer(words_text(3000), tmp_path / "steps", max_steps=10)
    assert steps.budget.end_reserve(50) == 0.0
    unbudgeted = TimeBudget(steps.cfg, 10, FakeClock(), val_chars=1000, chars_per_step=128, parameters=1000)
    unbudgeted.costs.step = 5.0
    assert unbudgeted.end_reserve(50) == 0.0


def three_second_run(tmp_path, clock: FakeClock, events: list, **settings):
    """A Trainer with --time-budget 3 on `clock`, its events into `events`, on 30,000 characters of
    a repeated sentence (the last fifth held out)."""
    text = repeat_text(30_000, "the quick brown fox.\n")
    return make_trainer(
        text, tmp_path, events=events.append, clock=clock, time_budget=3.0, max_epochs=None, val_frac=0.2, **settings
    )


def assert_ended_whole_and_on_time(summary, events: list, clock: FakeClock, started: float) -> None:
    """The run ended by its limit, its last evaluation at its last step, uncut (no warning), by
    1% past its 3 s budget."""
    assert summary["reason"] == "done"
    assert not [e["message"] for e in events if e["event"] == "warning"]
    assert [e["step"] for e in events if e["event"] == "eval"][-1] == summary["step"]
    assert clock() - started <= 3.0 * 1.01, clock() - started


@pytest.mark.parametrize("step", [0.041, 0.043, 0.047, 0.053, 0.061, 0.067, 0.071])
@pytest.mark.parametrize("slower", [1.0, 1.05])
def test_the_final_evaluation_is_whole_wherever_the_last_step_ends(tmp_path, step, slower):
    """The time is found up after a step, anywhere up to a step past the mark the reserve sets;
    an evaluation that costs what the one before it did, or 5% more, still runs whole (a
    1,200 s run's was cut by about a step when half a step was kept for it and nothing more),
    and the command still ends by 1% past the budget."""
    clock, events = FakeClock(), []
    trainer = three_second_run(tmp_path, clock, events, eval_every=20, eval_share=0, sample_every=0)
    per_char = 0.004 / trainer.cfg.seq_len  # an evaluation's chunk: 4 ms (the last evaluation's: `slower` times that)

    def costs(module, args, out):
        chunk = per_char * args[0].shape[1] * (slower if trainer.budget.time_up else 1.0)
        clock.advance(step if module.training else chunk)

    trainer.model.register_forward_hook(costs)
    started = clock()
    summary = trainer.fit()
    assert_ended_whole_and_on_time(summary, events, clock, started)
    assert summary["step"] > 20 and len([e for e in events if e["event"] == "eval"]) >= 2


@pytest.mark.parametrize("step", [0.03, 0.04, 0.05, 0.06])
def test_a_final_evaluation_keeps_time_for_a_live_sample_only_where_one_follows(tmp_path, step):
    """A live sample after every step, longer than the step: the time is found up after a step
    (the final evaluation, then its sample) or after a sample, at the top of the loop (the
    final evaluation, and no sample after it). Its deadline keeps time for a sample exactly
    where one follows, so the second kind is not cut for a sample that never comes."""
    clock, events = FakeClock(), []
    trainer = three_second_run(tmp_path, clock, events, eval_every=10, eval_share=0, sample_every=1, sample_chars=800)
    costing(trainer, clock, step=step, eval_chunk=0.004)  # (a sample's character: 0.25 ms, 0.2 s a sample)
    kept = []  # the sample characters each evaluation's deadline kept time for
    deadline = trainer.budget.eval_deadline
    trainer.budget.eval_deadline = lambda p, chars: (kept.append(chars), deadline(p, chars))[1]
    started = clock()
    summary = trainer.fit()
    kinds = [e["event"] for e in events if e["event"] in ("eval", "sample")]
    assert kinds[-2:] == ["eval", "sample"] or kinds[-2:] == ["sample", "eval"]
    assert kept[-1] == (800 if kinds[-1] == "sample" else 0), (kinds[-2:], kept[-1])
    assert_ended_whole_and_on_time(summary, events, clock, started)


def test_an_evaluation_is_skipped_when_the_final_one_would_follow_within_eval_every_steps():
    """After this evaluation (of `cost` seconds), fewer than --eval-every steps' time left before
    the mark the reserve sets: the final one comes first."""
    from charrnn.config import TrainConfig
    from charrnn.store.metadata import Progress
    from charrnn.training.schedule import TimeBudget

    cfg = TrainConfig(time_budget=100.0, eval_every=10, eval_share=0.5).validate()
    budget = TimeBudget(cfg, 10, lambda: 0.0, val_chars=0, chars_per_step=128, parameters=1000)
    assert not budget.final_comes_first(Progress(train_seconds=99.0), 0.0)  # (no step timed yet)
    budget.step_timed(0.5)  # 10 steps: 5 s
    budget.reserve = 5.0  # the mark: 101 - 5 = 96 s
    assert not budget.final_comes_first(Progress(train_seconds=88.9), 2.0)  # 96 - 88.9 - 2 = 5.1 s left
    assert budget.final_comes_first(Progress(train_seconds=89.1), 2.0)  # 4.9 s
    assert budget.final_comes_first(Progress(train_seconds=88.9), 2.2)  # its own cost counts
    progress = Progress(train_seconds=89.1, eval_seconds=1.0)
    budget.last_eval_seconds = 2.0
    assert not budget.eval_room(progress)  # (the share would hold it: 1 + 2 <= 0.5 x 89.1)
    progress.train_seconds = 80.0
    assert budget.eval_room(progress)
    unbudgeted = TimeBudget(TrainConfig(eval_every=10).validate(), 10, lambda: 0.0, 0, 128, 1000)
    unbudgeted.step_timed(0.5)
    assert not unbudgeted.final_comes_first(Progress(train_seconds=1e9), 2.0)


@pytest.mark.parametrize("step", [0.031, 0.034, 0.043, 0.05, 0.051, 0.067])
def test_no_evaluation_runs_within_eval_every_steps_of_the_final_one(tmp_path, step):
    """`make demo` evaluated at steps 2,000 and 2,018: an evaluation due when the final one would
    follow within fewer than --eval-every steps only takes time from the last steps. Now it is
    skipped (its time goes to training, so the final one may come a little later); those due
    earlier all run (a share that holds them all)."""
    clock, events = FakeClock(), []
    trainer = three_second_run(tmp_path, clock, events, eval_every=10, eval_share=0.5, sample_every=0)
    costing(trainer, clock, step=step, eval_chunk=0.002)
    started = clock()
    summary = trainer.fit()
    assert_ended_whole_and_on_time(summary, events, clock, started)
    final = summary["step"]
    evaluated = [e["step"] for e in events if e["event"] == "eval"][:-1]
    due = list(range(10, final, 10))
    assert evaluated == due[: len(evaluated)] and len(due) - len(evaluated) <= 2, (final, evaluated)  # the last skipped
    assert all(final - m >= 10 for m in evaluated), (final, evaluated)


def test_an_evaluation_whole_but_late_is_not_called_cut(tmp_path):
    """Cut means chunks left unread: an evaluation whose last chunk ends past its deadline read
    them all (it used to be called cut, and warned of, for the clock alone)."""
    import itertools

    from charrnn.training.evaluation import validation_sum

    trainer = make_trainer(words_text(6000), tmp_path)

    def evaluate(deadline, clock):
        return validation_sum(
            trainer.model, trainer.val_ids, trainer.batch_size, trainer.cfg, "cpu", trainer.dist, deadline, clock
        )

    reads = itertools.count()
    total, count, cut = evaluate(math.inf, lambda: next(reads))
    chunks = next(reads)  # (the clock is read once after each chunk)
    assert not cut and chunks >= 3
    late = iter(range(100))  # the deadline reached as the last chunk ends
    assert evaluate(chunks - 1, lambda: next(late)) == (total, count, False)
    early = iter(range(100))  # ... and as the one before it ends
    _, part, cut = evaluate(chunks - 2, lambda: next(early))
    assert cut and part == count * (chunks - 1) // chunks


def test_once_the_time_is_up_a_smaller_reserve_starts_nothing_again(tmp_path):
    """The queries only read: asking how far the run is changes nothing. What changes is the
    reserve the processes agree on (`keep`): once the time is up by the reserve in force, a
    smaller one starts nothing again."""
    trainer = make_trainer(words_text(3000), tmp_path, clock=FakeClock(), time_budget=10.0)
    budget, p = trainer.budget, trainer.progress
    p.train_seconds = 5.05
    assert budget.fraction_done(p) == pytest.approx(0.5)  # of 1.01 x the budget
    p.train_seconds = 9.0
    budget.keep(1.5, p)
    assert budget.fraction_done(p) == 1.0  # 9 s of 10.1 - 1.5
    budget.keep(0.5, p)
    assert budget.fraction_done(p) == 1.0  # 9 s of 10.1 - 0.5 would not be, but the time was up
    fresh = make_trainer(words_text(3000), tmp_path / "fresh", clock=FakeClock(), time_budget=10.0)
    fresh.progress.train_seconds = 9.0
    fresh.budget.reserve = 1.5  # (set by hand: no agreement kept it)
    assert [fresh.budget.fraction_done(fresh.progress) for _ in range(3)] == [1.0] * 3
    fresh.budget.reserve = 0.5
    assert fresh.budget.fraction_done(fresh.progress) == pytest.approx(9.0 / 9.6)  # asking latched nothing
    exact = make_trainer(words_text(3000), tmp_path / "exact", clock=FakeClock(), time_budget=10.0)
    exact.budget.keep(0.1, exact.progress)
    exact.progress.train_seconds = exact.budget.budget_end() - 0.1  # up, to the last bit
    exact.budget.keep(0.1, exact.progress)
    assert exact.budget.fraction_done(exact.progress) == 1.0
    exact.budget.keep(0.05, exact.progress)
    assert exact.budget.fraction_done(exact.progress) == 1.0
    tiny = make_trainer(words_text(3000), tmp_path / "tiny", clock=FakeClock(), time_budget=0.5)
    tiny.progress.train_seconds = 0.2525
    assert tiny.budget.fraction_done(tiny.progress) == pytest.approx(0.5)


@pytest.mark.parametrize("startup", [0.5, 2.0, 3.0, 3.5, 3.9, 4.0, 4.5, 5.0, 8.0])
def test_a_budget_start_up_used_up_is_refused_exactly_when_the_loop_would_train_nothing(tmp_path, startup):
    """Before: --time-budget 5 after 4 s of start-up trained 0 steps, exited 0 and wrote an
    untrained last.pt. Now `check_time_to_train` refuses it before the first step, by the
    numbers the loop decides by: it refuses exactly the start-ups after which the loop would
    train nothing."""
    from charrnn.errors import CharRNNError
    from charrnn.training.plan import check_time_to_train

    clock = FakeClock()
    trainer = make_trainer(words_text(3000), tmp_path, clock=clock, time_budget=5.0, sample_every=0)
    costing(trainer, clock, step=0.1)
    clock.advance(startup)  # corpus, model, --size auto's probes: all of it counts against the budget
    try:
        check_time_to_train(trainer)
        refused = None
    except CharRNNError as exc:
        refused = str(exc)
    summary, steps = run(trainer)
    assert (refused is not None) == (len(steps) == 0), (refused, len(steps))
    if refused:
        assert refused.startswith(f"--time-budget 5 leaves no time to train: start-up took {startup:.1f} s")
        suggested = int(refused.rsplit("--time-budget ", 1)[1].split()[0])
        assert refused.endswith(f"nothing was trained or written. Give --time-budget {suggested} or more")
        assert suggested >= 2 * startup  # (room for as much training as start-up and the end take)


def test_a_step_that_would_not_fit_is_refused_too(tmp_path):
    from charrnn.errors import CharRNNError
    from charrnn.training.plan import check_time_to_train

    clock = FakeClock()
    trainer = make_trainer(words_text(3000), tmp_path, clock=clock, time_budget=5.0, sample_every=0)
    clock.advance(3.0)
    check_time_to_train(trainer, step_seconds=0.5)  # 2 s left: a step fits
    with pytest.raises(CharRNNError, match="leaves no time to train"):
        check_time_to_train(trainer, step_seconds=3.0)  # (the step --size auto measured)


def test_a_resumed_run_refused_for_time_says_what_it_had_used(tmp_path):
    """A resumed run's budget is its total: refused, it says how much of it the run had used
    (it said only 'start-up took 1.3 s', which was not why)."""
    from charrnn.errors import CharRNNError
    from charrnn.training.plan import check_time_to_train

    clock = FakeClock()
    trainer = make_trainer(words_text(3000), tmp_path, clock=clock, time_budget=20.0, sample_every=0)
    trainer.progress.train_seconds = 19.5  # (as a resumed run's progress says)
    clock.advance(1.3)
    with pytest.raises(CharRNNError, match=r"^--time-budget 20 leaves no time to train: the run already used 19\.5 s"):
        check_time_to_train(trainer)


def evaluations_timed(trainer, clock: FakeClock) -> list[tuple[int, float, float]]:
    """(step, seconds of the run before it, seconds it took) of each evaluation of `trainer`."""
    seen = []
    evaluate = trainer._evaluate

    def timed(*args, **kwargs):
        before, trained = clock(), trainer.progress.train_seconds
        evaluate(*args, **kwargs)
        seen.append((trainer.progress.step, trained, clock() - before))

    trainer._evaluate = timed
    return seen


@pytest.mark.parametrize("share, sample_every", [(0.1, 0), (0.2, 0), (0.1, None)])
def test_evaluations_take_at_most_their_share_of_a_budget_run(tmp_path, share, sample_every):
    """Steps of 0.1 s, an evaluation every 5 of them costing ~0.45 s: every --eval-every would
    spend ~45% of a 30 s budget evaluating. With --eval-share the evaluations (the first and the
    last apart) run only at multiples of --eval-every, each one while all of them so far take at
    most the share of the time; the live samples do not wait for them; the time saved trains more
    steps; --eval-share 0 evaluates at every multiple."""
    runs = {}
    for name, s in (("shared", share), ("every", 0.0)):
        clock = FakeClock()
        events = []
        trainer = make_trainer(
            words_text(30_000),
            tmp_path / name,
            events=events.append,
            clock=clock,
            time_budget=30.0,
            eval_every=5,
            save_every=10_000,
            sample_every=sample_every,
            sample_chars=20,
            eval_share=s,
        )
        costing(trainer, clock, step=0.1, eval_chunk=0.02)
        timed = evaluations_timed(trainer, clock)
        summary = trainer.fit()
        runs[name] = summary["step"], timed, [e["step"] for e in events if e["event"] == "sample"]
    steps, timed, _ = runs["every"]
    assert [t[0] for t in timed[:-1]] == list(range(5, steps, 5)) and timed[-1][0] == steps
    assert 0.35 <= timed[0][2] <= 0.55  # (what the costs above make an evaluation take)
    steps, timed, samples = runs["shared"]
    middle = timed[1:-1]
    assert timed[0][0] == 5 and timed[-1][0] == steps and len(middle) >= 2
    assert all(step % 5 == 0 for step, _, _ in middle)
    spent = 0.0
    for step, trained, took in timed[:-1]:
        spent += took
        if step > 5:
            assert spent <= share * trained + 1e-9, (step, spent, trained)
    assert len(timed) < len(runs["every"][1]) / 2
    assert steps > runs["every"][0] * 1.2  # the time not spent evaluating trained
    if sample_every is None:  # at each evaluation due, whether it ran or waited
        assert samples == [*range(5, steps, 5), steps] or samples == list(range(5, steps + 1, 5)), samples
    else:
        assert samples == []


def test_without_a_validation_split_the_share_counts_the_latest_evaluation():
    """No validation pass is ever timed (no split): the first evaluation runs, and the next ones
    cost what the latest took (its row, best.pt), so the share still holds."""
    from charrnn.config import TrainConfig
    from charrnn.store.metadata import Progress
    from charrnn.training.schedule import TimeBudget

    cfg = TrainConfig(time_budget=100.0, eval_share=0.1).validate()
    budget = TimeBudget(cfg, 10, lambda: 0.0, val_chars=0, chars_per_step=128, parameters=1000)
    progress = Progress()
    progress.train_seconds = 5.0
    assert budget.eval_room(progress)  # the first
    budget.evaluated(1.0, progress)
    assert not budget.eval_room(progress)  # 1 + 1 > 0.1 x 5
    progress.train_seconds = 20.0
    assert budget.eval_room(progress)  # 1 + 1 <= 0.1 x 20
    assert TimeBudget(TrainConfig(eval_share=0.1).validate(), 10, lambda: 0.0, 0, 128, 1000).eval_room(progress)


def stopped_at(tmp_path, clock: FakeClock, stop_at: int, share: float, events=None, resume_from=None):
    """A budget run (steps of 0.1 s, an evaluation every 5 costing ~0.45 s) that `stop()` ends
    after step `stop_at`, as Ctrl-C would; `events` gets its events."""

    def watch(event):
        (events if events is not None else []).append(event)
        if event["event"] == "step" and event["step"] == stop_at:
            trainer.stop("interrupted")

    trainer = make_trainer(
        words_text(30_000),
        tmp_path,
        events=watch,
        clock=clock,
        resume_from=resume_from,
        time_budget=30.0,
        eval_every=5,
        save_every=10_000,
        sample_every=0,
        eval_share=share,
    )
    costing(trainer, clock, step=0.1, eval_chunk=0.02)
    return trainer


@pytest.mark.parametrize("stop_at, share, evaluated", [(23, 0.1, [5, 23]), (7, 0.1, [5]), (23, 0.0, [5, 10, 15, 20])])
def test_a_stopped_run_evaluates_once_more_where_the_share_skipped_evaluations(tmp_path, stop_at, share, evaluated):
    """Stopped (Ctrl-C) after --eval-share skipped the evaluations due at steps 10-20, a run
    evaluates its last step, so best.pt is not step 5's; stopped before a skipped one (step 7) or
    without the share, it evaluates nothing extra, as before."""
    from charrnn.store import checkpoint

    clock, events = FakeClock(), []
    trainer = stopped_at(tmp_path, clock, stop_at, share, events)
    timed = evaluations_timed(trainer, clock)
    summary = trainer.fit()
    assert summary["reason"] == "interrupted" and summary["step"] == stop_at
    assert [t[0] for t in timed] == evaluated
    stopping = [e["message"] for e in events if e["event"] == "stopping"]
    assert len(stopping) == (evaluated[-1] == stop_at)
    best = checkpoint.load(tmp_path / "run" / "best.pt").meta["progress"]
    assert best["step"] == evaluated[-1]
    if stopping:
        assert (
            f"evaluating step {stop_at} first (the evaluation due at step 20 was skipped to save time)" in stopping[0]
        )
        assert checkpoint.load(tmp_path / "run" / "last.pt").meta["progress"]["best_loss"] == best["best_loss"]


def test_a_resumed_budget_run_goes_on_counting_its_evaluations_time(tmp_path):
    """The evaluations' seconds are in last.pt: resumed, a run does not take its first due
    evaluation for the "first" and spend the share again (without them it evaluated at step 45)."""
    from charrnn.store import checkpoint

    clock = FakeClock()
    first = stopped_at(tmp_path, clock, 40, 0.1)
    timed = evaluations_timed(first, clock)
    first.fit()
    assert [t[0] for t in timed] == [5, 40]  # (the stop evaluates: those due at 10-35 were skipped)
    saved = checkpoint.load(tmp_path / "run" / "last.pt")
    assert saved.info.progress.eval_seconds == pytest.approx(sum(t[2] for t in timed))
    assert saved.info.progress.train_seconds >= saved.info.progress.eval_seconds + 40 * 0.1 - 1e-6  # (both counted)
    resumed = stopped_at(tmp_path, clock, 60, 0.1, resume_from=saved)
    timed = evaluations_timed(resumed, clock)
    resumed.fit()
    assert [t[0] for t in timed] == [60]  # (the stop's: those due at 45-55 waited)


def test_after_a_resume_an_untimed_evaluation_costs_its_guess_not_nothing():
    """Resumed, the share's first due evaluation has no timing of this process yet: it costs the
    forward-pass guess (a third of a step per chunk), not 0."""
    from charrnn.config import TrainConfig
    from charrnn.store.metadata import Progress
    from charrnn.training.schedule import TimeBudget

    cfg = TrainConfig(time_budget=1000.0, eval_share=0.1).validate()  # (1000: the end is not near at 110 s)
    budget = TimeBudget(cfg, 10, lambda: 0.0, val_chars=12_800, chars_per_step=128, parameters=1000)
    budget.step_timed(0.3)  # a guess of 0.3 x 100 chunks / 3 = 10 s an evaluation
    progress = Progress(train_seconds=50.0, eval_seconds=1.0)  # (as last.pt had them)
    assert budget.eval_s() == pytest.approx(10.0)
    assert not budget.eval_room(progress)  # 1 + 10 > 0.1 x 50
    progress.train_seconds = 110.0
    assert budget.eval_room(progress)  # 1 + 10 <= 0.1 x 110
