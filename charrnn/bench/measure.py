"""`charrnn bench`: how fast charrnn is, measured against the machine and a textbook loop.

Every figure is taken in the same process and run, so ratios (ours vs the reference loop,
achieved vs peak matmul FLOP/s) stay meaningful on a shared, noisy machine. Nothing here is
asserted: it prints numbers.

This module holds the whole run (peak matmul, the rounds and their medians, start-up); what is
measured lives beside it: training.py (training speed and run overheads), sampling.py,
tokenising.py, and load.py, serve.py and quality.py for their own flags.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from charrnn.bench.sampling import bench_sampling
from charrnn.bench.tokenising import bench_tokenising
from charrnn.bench.training import bench_run_overheads, bench_training


def peak_matmul_gflops(n: int = 2048, repeats: int = 7) -> float:
    """float32 GFLOP/s of a large square matmul: the median of several."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of several rounds -> one row each: the median of every number over the rounds
    (ratios too: each is taken within its own round, so shared-machine noise cancels in it);
    anything else (a list of files written) as the first round has it."""
    rows = []
    for same in zip(*rounds):
        row = {"what": same[0]["what"], "rounds": len(same)}
        for key, value in same[0].items():
            if isinstance(value, (int, float)) and key != "rounds":
                row[key] = statistics.median(r[key] for r in same)
            elif key not in row:
                row[key] = value
        if "chars_per_sec" in row:
            row["chars_per_sec_runs"] = [r["chars_per_sec"] for r in same]
        rows.append(row)
    return rows


def bench_startup() -> dict[str, Any]:
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "charrnn", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t)
    return {"what": "start-up: charrnn --help", "seconds": min(times)}


def run(
    quick: bool = False,
    precision: str = "fp32",
    device: str = "cpu",
    progress: Callable[[str], None] = lambda s: None,
    rounds: int | None = None,
) -> dict[str, Any]:
    """The whole benchmark. Peak, training, the reference and sampling are measured in
    `rounds` interleaved rounds (default 3, 1 with `quick`), and each figure is the median over
    them, so that a burst of load from a neighbour on a shared machine moves no figure alone."""
    from charrnn.machine.device import pick_device
    from charrnn.machine.threads import cores_here, use_threads

    threads = use_threads(cores_here())
    device = str(pick_device(device))
    rounds = rounds or (1 if quick else 3)
    peaks, training, overheads, sampling = [], [], [], []
    for r in range(rounds):
        label = f" (round {r + 1} of {rounds})" if rounds > 1 else ""
        progress(f"peak matmul{label}")
        peaks.append(peak_matmul_gflops(1536 if quick else 2048))
        progress(f"training{label}")
        training.append(bench_training(peaks[-1], quick, precision, device))
        progress(f"training after evaluation and --resume{label}")
        overheads.append(bench_run_overheads(quick, precision, device))
        progress(f"sampling{label}")
        sampling.append(bench_sampling(quick, peaks[-1]))
    result: dict[str, Any] = {
        "machine": {"threads": threads, "device": device, "torch": torch.__version__, "cpu": _cpu_name()},
        "rounds": rounds,
        "peak_gflops": statistics.median(peaks),
        "peak_gflops_runs": peaks,
        "training": median_rows(training),
        "overheads": median_rows(overheads),
        "sampling": median_rows(sampling),
    }
    progress("tokenising")
    result["tokenising"] = bench_tokenising(20 if quick else 100)
    result["startup"] = bench_startup()
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, default=float)


if __name__ == "__main__":  # python -m charrnn.bench: the same as `charrnn bench --json`
    print(to_json(run(quick="--quick" in sys.argv)))
    os._exit(0)
