"""`charrnn bench --load`: training speed on a busy machine.

The default model (`--size default`: the same model on every machine) trains for a fixed time in
real `charrnn train` processes, in three situations: alone; beside a process that keeps one core
busy; and as two trainings at once. Each situation runs twice, once with charrnn's thread policy
(`--threads auto`) and once with torch's defaults (every core, libgomp's default spin-wait), in
one run, so the table compares them on the same machine at the same time: chars/s, and the ratio
to the same policy alone.

A training's speed is the chars/s of its final evaluation row in metrics.jsonl: the characters
it trained on over its training time, probes and thread changes included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from charrnn.bench.tokenising import generated_corpus
from charrnn.machine.threads import CpuMeter, cores_here
from charrnn.store.run_folder import RunFolder

LIBGOMP_DEFAULT_SPINCOUNT = "300000"  # what torch's OpenMP does when nobody sets a wait policy
SITUATIONS = ("alone", "beside a busy core", "two trainings at once")


def policies(cores: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Flags and environment of each way of choosing threads."""
    return {
        "charrnn auto": (["--threads", "auto"], {}),
        f"torch, {cores}": (["--threads", str(cores)], {"GOMP_SPINCOUNT": LIBGOMP_DEFAULT_SPINCOUNT}),
    }


def _train(
    corpus: Path, out: Path, name: str, seconds: float, flags: list[str], env: dict[str, str]
) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(corpus),
        "--out",
        str(out),
        "--name",
        name,
        "--overwrite",
        "--time-budget",
        f"{seconds:g}",
        "--max-epochs",
        "1000",
        "--eval-every",
        "1000000",
        "--eval-chars",
        "8192",
        "--save-every",
        "1000000",
        "--sample-every",
        "0",
        "--log-every",
        "0",
        "--cache-dir",
        str(out / "cache"),
        "--size",
        "default",
        *flags,
    ]
    return subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _result(process: subprocess.Popen, run_dir: Path) -> dict[str, Any]:
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"a benchmark training failed ({process.returncode}): {err.decode(errors='replace')[-500:]}")
    rows = RunFolder(run_dir).read_metrics(notes=True)  # the evaluations, and the changes of threads
    evaluation = [r for r in rows if "event" not in r][-1]
    counts = [r["threads"] for r in rows if r.get("event") == "threads"] or [evaluation.get("threads")]
    return {
        "chars_per_sec": evaluation["chars_per_sec"],
        "threads": [n for i, n in enumerate(counts) if i == 0 or n != counts[i - 1]],
    }


def _situation(
    which: str, corpus: Path, out: Path, seconds: float, flags: list[str], env: dict[str, str]
) -> list[dict[str, Any]]:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if which == "beside a busy core" else None
    try:
        names = ["a", "b"] if which == "two trainings at once" else ["a"]
        running = [(_train(corpus, out, name, seconds, flags, env), out / name) for name in names]
        return [_result(process, run_dir) for process, run_dir in running]
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def run_load(seconds: float = 30.0, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every situation with every policy (interleaved), `seconds` of training each."""
    cores = cores_here()
    ways = policies(cores)
    meter = CpuMeter()
    time.sleep(1.0)
    busy_before = meter.others()  # "alone" means alone only on an idle machine
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        corpus = generated_corpus(out / "corpus.txt", 2)
        subprocess.run(
            [sys.executable, "-m", "charrnn", "prepare", str(corpus), "--cache-dir", str(out / "cache")],
            check=True,
            capture_output=True,
        )
        for which in SITUATIONS:
            for name, (flags, env) in ways.items():
                progress(f"training {which}, {name}, {seconds:g} s")
                results[name, which] = _situation(which, corpus, out, seconds, flags, env)
                time.sleep(1.0)  # let the machine settle
    rows = []
    for name in ways:
        alone = results[name, "alone"][0]["chars_per_sec"]
        for which in SITUATIONS:
            for i, result in enumerate(results[name, which]):
                label = which + (f" ({('first', 'second')[i]})" if len(results[name, which]) > 1 else "")
                rows.append(
                    {
                        "policy": name,
                        "situation": label,
                        "chars_per_sec": result["chars_per_sec"],
                        "vs_alone": result["chars_per_sec"] / alone,
                        "threads": result["threads"],
                    }
                )
    auto, torch_default = (results[name, "alone"][0]["chars_per_sec"] for name in ways)
    return {
        "cores": cores,
        "seconds": seconds,
        "rows": rows,
        "auto_vs_torch_alone": auto / torch_default,
        "busy_before": busy_before,
    }
