"""CPU threads that hold up on a busy machine.

On an idle machine every core helps; beside a neighbour (a browser, `make -j2`, a second
training) threads that wait for a descheduled partner burn the very core it needs, and a
training can lose 3-50x. charrnn therefore chooses its threads from what is actually free:

- `set_openmp_defaults`, before torch is first imported, shortens how long OpenMP threads spin
  while they wait (libgomp's GOMP_SPINCOUNT; the user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT
  win). It costs nothing measurable idle and bounds the loss while the policy finds out.
- `usable_cores` is what this process may run on: its CPU affinity, capped by a cgroup quota.
- `CpuMeter` measures, from /proc/stat, how many of those cores other processes keep busy
  (all CPU time on them, stolen time included, less this process' own).
- `ThreadPolicy` (thread_policy.py) starts from the free cores and re-chooses while a run goes.

Pure logic with injected clocks and readings, so the decisions are tested on fake inputs.
Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

SPINCOUNT = "1000"  # libgomp's default is 300,000 spins (~ms); see README "Busy machines"
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def set_openmp_defaults(environ=os.environ) -> None:
    """Short spin-waits for OpenMP threads, unless the user chose a wait policy. Must run
    before torch (and its libgomp) is loaded, and reaches the processes this one starts."""
    if not any(name in environ for name in WAIT_VARIABLES):
        environ["GOMP_SPINCOUNT"] = SPINCOUNT


def affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def cgroup_quota(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """The CPU quota of this process' cgroup in cores (cgroup v2 cpu.max, or v1's CFS quota),
    or None when there is none."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores(cpus: set[int] | None = None, quota: float | None = None) -> int:
    """Cores this process may use: its affinity, capped by the cgroup quota (rounded down, at
    least 1)."""
    n = len(cpus if cpus is not None else affinity())
    if quota is not None:
        n = min(n, max(1, math.floor(quota + 1e-9)))
    return max(1, n)


def cores_here() -> int:
    """The cores this process may use here (affinity and cgroup quota)."""
    return usable_cores(affinity(), cgroup_quota())


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """How many cores other processes keep busy, on the cores this process may run on, between
    two readings. None where /proc/stat cannot be read (not Linux)."""

    def __init__(
        self,
        cpus: set[int] | None = None,
        stat_path: str | Path = "/proc/stat",
        clock: Callable[[], float] = time.monotonic,
        own: Callable[[], float] = _own_cpu_seconds,
        ticks_per_second: float | None = None,
    ):
        self.cpus = affinity() if cpus is None else cpus
        self.stat_path, self.clock, self.own = Path(stat_path), clock, own
        self.ticks = ticks_per_second or (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
        self._last = self._reading()

    def _busy_seconds(self) -> float | None:
        try:
            lines = self.stat_path.read_text().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in self.cpus:
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in values[:8])
                busy += user + nice + system + irq + softirq + steal
        return busy / self.ticks

    def _reading(self) -> tuple[float, float | None, float]:
        return self.clock(), self._busy_seconds(), self.own()

    @property
    def available(self) -> bool:
        return self._last[1] is not None

    def others(self, min_window: float = 0.1) -> float | None:
        """Cores kept busy by other processes since the previous call (or since the meter was
        made). A window shorter than `min_window` seconds gives None and keeps the window open."""
        now = self._reading()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        if busy0 is None or busy1 is None or t1 - t0 < min_window:
            return None
        self._last = now
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))


def free_cores(cores: int, others: float | None, siblings: int = 0, own: float = 0.0) -> int:
    """Threads to use among `cores` when other processes keep `others` cores busy: the free
    cores, rounded to the nearest whole core, at least 1. When this process is one of
    `siblings` + 1 processes of one run sharing the machine (each using about `own` cores, each
    given `cores` of them), the siblings are not others, and the rest of the load is shared."""
    if others is None:
        return cores
    outside = max(0.0, others - siblings * own) / (siblings + 1)
    return min(cores, max(1, math.floor(cores - outside + 0.5)))


def threads_for_command(cores: int | None = None, meter: CpuMeter | None = None) -> int:
    """Threads for a command that reads one stream (sample, eval, neurons): the cores free
    now, as measured since the meter was made (at charrnn's import, normally)."""
    cores = cores_here() if cores is None else cores
    meter = meter or METER
    others = meter.others()
    if others is None and meter.available:  # less than a tenth of a second to judge by
        time.sleep(0.1)
        others = meter.others()
    return free_cores(cores, others)


class FreeCores:
    """The cores free now, as a callable for a long-running loop (serve's engine): the free
    cores over the window since the last call, or None when that window is too short to say."""

    def __init__(self, cores: int | None = None, meter: CpuMeter | None = None, min_window: float = 1.0):
        self.cores = cores_here() if cores is None else cores
        self.meter = meter or CpuMeter()
        self.min_window = min_window

    def __call__(self) -> int | None:
        others = self.meter.others(self.min_window)
        return None if others is None else free_cores(self.cores, others)


_BLAS: dict = {}  # threadpoolctl's view of the BLAS libraries loaded (a search costs ~300 us; a limit ~5)


def set_blas_threads(threads: int) -> bool:
    """NumPy's BLAS threads, now, while the process runs (threadpoolctl); False where it cannot.
    The libraries are searched for again whenever Python has imported modules since the last
    search (one of them may have loaded another BLAS)."""
    import sys

    if _BLAS.get("modules") != len(sys.modules):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return False
        import numpy  # noqa: F401  (its BLAS is the one to find)

        _BLAS["found"] = ThreadpoolController().select(user_api="blas")
        _BLAS["modules"] = len(sys.modules)
    _BLAS["found"].limit(limits=threads)
    return True


def limit_blas_threads(threads: int, environ=os.environ) -> None:
    """NumPy's BLAS threads (OpenBLAS or MKL), set before NumPy is first imported; the user's
    own setting wins."""
    for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        environ.setdefault(name, str(threads))


def use_threads(threads: int | str | None = "auto") -> int:
    """Set torch's CPU threads for a command: a number as given, or auto (None) the cores
    free now. Returns the count."""
    import torch

    count = threads_for_command() if threads in (None, "auto") else int(threads)
    torch.set_num_threads(count)
    return count


METER = CpuMeter()  # made at import: commands read the load over the time they spent starting
