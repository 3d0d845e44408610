"""The thread policy's decisions, on fake machines: affinity, quota, load, and probe timings."""

from __future__ import annotations

import pytest

from charrnn.machine.thread_policy import Decision, ThreadPolicy
from charrnn.machine.threads import CpuMeter, cgroup_quota, free_cores, set_openmp_defaults, usable_cores


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Meter:
    """Other processes' load, set by the test."""

    def __init__(self, load: float | None = 0.0):
        self.load = load

    def others(self, min_window: float = 0.1):
        return self.load


def run(policy: ThreadPolicy, clock: Clock, seconds_per_step, duration: float) -> list[int]:
    """Train for `duration` fake seconds; a step at n threads takes seconds_per_step(n). Returns
    the thread count of every step."""
    counts, end = [], clock.now + duration
    while clock.now < end:
        n = policy.threads
        step = seconds_per_step(n)
        clock.now += step
        counts.append(n)
        policy.step_done(step)
    return counts


def test_openmp_defaults_shorten_spinning_unless_the_user_chose():
    env = {}
    set_openmp_defaults(env)
    assert int(env["GOMP_SPINCOUNT"]) < 300_000  # libgomp's own default spins for milliseconds
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "5"}):
        env = dict(chosen)
        set_openmp_defaults(env)
        assert env == chosen


def test_usable_cores_from_affinity_and_quota(tmp_path):
    assert usable_cores({0, 1, 2, 3}, None) == 4
    assert usable_cores({0, 1, 2, 3}, 1.5) == 1
    assert usable_cores({0, 1, 2, 3, 4, 5, 6, 7}, 2.0) == 2
    assert usable_cores({0}, 0.2) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1) == 2.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(v1) is None
    assert cgroup_quota(tmp_path / "absent") is None


def test_cpu_meter_counts_others_on_our_cores_only(tmp_path):
    stat = tmp_path / "stat"
    clock, own = Clock(), [0.0]

    def write(cpu0: int, cpu1: int, cpu2: int) -> None:  # busy ticks (user) per CPU; the rest idle
        stat.write_text(
            "cpu  0 0 0 0 0 0 0 0 0 0\n"
            + "".join(f"cpu{i} {busy} 0 0 1000 0 0 0 0 0 0\n" for i, busy in enumerate((cpu0, cpu1, cpu2)))
            + "intr 1\n"
        )

    write(100, 100, 100)
    meter = CpuMeter(cpus={0, 1}, stat_path=stat, clock=clock, own=lambda: own[0], ticks_per_second=100)
    write(200, 150, 900)  # in 1 s: 1.5 core-seconds on our cores (cpu2 is not ours), 0.5 of them ours
    clock.now += 1.0
    own[0] = 0.5
    assert meter.others() == pytest.approx(1.0)
    clock.now += 0.01
    assert meter.others() is None  # too short a window to judge
    assert CpuMeter(stat_path=tmp_path / "absent").others() is None  # not Linux: no reading


def test_free_cores_rounds_the_load_and_leaves_siblings_out():
    assert free_cores(2, None) == 2  # no reading: all of them
    assert free_cores(2, 0.2) == 2  # a browser tab
    assert free_cores(2, 1.0) == 1  # a busy core
    assert free_cores(2, 3.0) == 1  # never fewer than one
    assert free_cores(8, 2.6) == 5
    # two processes of one run, 2 cores each, on 4 cores: the other one is no neighbour
    assert free_cores(2, 2.0, siblings=1, own=2) == 2
    assert free_cores(2, 4.0, siblings=1, own=2) == 1  # and another 2 cores' load is shared between them


def test_starts_from_the_free_cores():
    assert ThreadPolicy(2, Meter(1.0), Clock()).threads == 1
    assert ThreadPolicy(2, Meter(0.0), Clock()).threads == 2
    assert ThreadPolicy(4, None, Clock()).threads == 4


def test_first_probe_keeps_the_fastest_count():
    clock = Clock()
    policy = ThreadPolicy(2, Meter(0.0), clock)
    counts = run(policy, clock, {1: 0.10, 2: 0.20}.get, 10.0)  # 2 threads turn out slower here
    assert counts[0] == 2 and counts[-1] == 1
    decision = policy.take_decision()
    assert (decision.previous, decision.threads, decision.reason) == (2, 1, "first measurement")
    assert decision.rates[1] == pytest.approx(10.0) and decision.rates[2] == pytest.approx(5.0)
    assert policy.take_decision() is None


def test_a_neighbour_arriving_and_leaving_moves_the_threads():
    clock, meter = Clock(), Meter(0.0)
    policy = ThreadPolicy(2, meter, clock)
    idle = {1: 0.10, 2: 0.06}.get
    assert run(policy, clock, idle, 10.0)[-1] == 2
    meter.load = 1.0  # a busy loop starts: two threads now wait for each other
    busy = {1: 0.11, 2: 0.40}.get
    after = run(policy, clock, busy, 10.0)
    assert after[-1] == 1
    assert sum(1 for n in after if n == 2) * 0.40 < 6.0  # it found out within a couple of windows
    meter.load = 0.0  # the neighbour leaves
    assert run(policy, clock, idle, 10.0)[-1] == 2


def test_speed_falling_without_a_load_reading_triggers_a_probe():
    clock = Clock()
    policy = ThreadPolicy(2, None, clock)  # no /proc/stat: timings alone
    assert run(policy, clock, {1: 0.10, 2: 0.06}.get, 10.0)[-1] == 2
    assert run(policy, clock, {1: 0.10, 2: 0.30}.get, 10.0)[-1] == 1  # 2 threads became 5x slower
    # the cores come back: only the regular check can tell, within a minute or so
    assert run(policy, clock, {1: 0.10, 2: 0.06}.get, ThreadPolicy.REPROBE_S + 10)[-1] == 2


def test_a_count_must_be_clearly_faster_to_replace_the_current_one():
    clock = Clock()
    policy = ThreadPolicy(2, Meter(0.0), clock)
    assert run(policy, clock, {1: 0.098, 2: 0.100}.get, 10.0)[-1] == 2  # 2% is noise


def test_distributed_processes_follow_the_load_without_probing():
    clock, meter = Clock(), Meter(0.0)
    policy = ThreadPolicy(2, meter, clock, probe=False)
    assert set(run(policy, clock, {1: 0.10, 2: 0.20}.get, 10.0)) == {2}  # no probe
    meter.load = 1.0
    assert run(policy, clock, {1: 0.10, 2: 0.20}.get, 10.0)[-1] == 1
    assert policy.take_decision().reason == "the load of other processes changed"


def test_decision_says_what_was_measured():
    text = Decision(1, 2, "speed fell", {1: 27_000.0, 2: 9_000.0}, 1.02).describe()
    assert (
        text == "threads 2 → 1 (speed fell; other processes use 1.0 cores; chars/s by threads: 1 → 27,000, 2 → 9,000)"
    )


def test_blas_threads_are_set_unless_the_user_did():
    from charrnn.machine.threads import limit_blas_threads

    env = {"MKL_NUM_THREADS": "4"}
    limit_blas_threads(1, env)
    assert env == {"MKL_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "1"}


def test_free_cores_for_a_long_running_loop():
    from charrnn.machine.threads import FreeCores

    class Meter:
        def __init__(self, readings):
            self.readings, self.windows = iter(readings), []

        def others(self, min_window):
            self.windows.append(min_window)
            return next(self.readings)

    meter = Meter([None, 0.1, 1.2, 3.0])
    free = FreeCores(cores=2, meter=meter, min_window=0.5)
    assert [free(), free(), free(), free()] == [
        None,
        2,
        1,
        1,
    ]  # too short to say; idle; one busy; all busy (at least 1)
    assert meter.windows == [0.5] * 4


def test_work_between_steps_runs_at_the_count_a_probe_started_from():
    """An evaluation or a sample between two steps runs at the settled count, not at a probe's
    candidate; the candidate warms up again afterwards, so the switch back is not measured."""
    clock = Clock()
    policy = ThreadPolicy(2, Meter(0.0), clock)
    while policy.threads == 2:  # the first window ends in a probe, which tries 1 thread after 2
        clock.now += 0.06
        policy.step_done(0.06)
    assert policy.settled == 2
    for _ in range(2):  # the candidate's warm-up step, then a measured one
        clock.now += 0.10
        policy.step_done(0.10)
    policy.interrupted()  # (an evaluation ran at 2 threads)
    clock.now += 5.0
    policy.step_done(5.0)  # the first step back at 1 thread, slow: a warm-up, not a measurement
    decision = None
    while decision is None:
        clock.now += 0.10
        policy.step_done(0.10)
        decision = policy.take_decision()
    assert policy.threads == policy.settled == 2
    assert decision.rates == {1: pytest.approx(10.0), 2: pytest.approx(1 / 0.06)}  # the slow step left out
    policy = ThreadPolicy(2, Meter(0.0), clock)
    steps = {1: 0.10, 2: 0.30}
    while policy.take_decision() is None:
        clock.now += steps[policy.threads]
        policy.step_done(steps[policy.threads])
    assert policy.threads == policy.settled == 1  # once the probe ends, what it chose


def test_a_probe_ends_however_often_work_runs_between_its_steps():
    """A live sample after every step (--sample-every 1) interrupts every step of a probe: each
    candidate leaves at most REWARMS of them unmeasured, then measures on, so the probe ends."""
    clock = Clock()
    policy = ThreadPolicy(2, Meter(0.0), clock)
    steps, decision = 0, None
    while decision is None and steps < 100:
        seconds = {1: 0.10, 2: 0.06}[policy.threads]
        clock.now += seconds
        policy.step_done(seconds)
        policy.interrupted()
        decision, steps = policy.take_decision(), steps + 1
    assert decision is not None and decision.threads == policy.settled == 2, steps
