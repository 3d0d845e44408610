"""`charrnn bench --serve`: how many requests `charrnn serve` answers, and how fast.

The default model (LSTM 2×256) is trained for a few steps (its weights' values do not change
the speed), served by a real `charrnn serve` process on a free port of 127.0.0.1, and asked
for 200-character samples (one JSON answer each, "stream": false) by 1, 4, 16 and 64 clients at
once, each sending its next request when the last is answered, for a fixed time per row.
Reported: requests per second, the 50th and 99th percentile of a request's latency, the ratio
of each row's characters per second to one client's, and what the server's engine did in that
time: the mean batch it stepped and the GFLOP/s of its model steps, against this machine's peak
float32 matmul measured in the same run (before the server starts). The clients run in this
process, on the same machine: their own CPU is part of the cost.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from charrnn.bench.tokenising import generated_corpus
from charrnn.errors import plural
from charrnn.machine.threads import cores_here
from charrnn.store.run_folder import RunFolder

CLIENTS = (1, 4, 16, 64)
LENGTH = 200  # characters per sample


def _model(out: Path) -> Path:
    """A default-size model, trained for two steps: a real checkpoint in seconds."""
    corpus = generated_corpus(out / "corpus.txt", 0.1)
    args = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(corpus),
        "--out",
        str(out),
        "--name",
        "served",
        "--max-steps",
        "2",
        "--eval-every",
        "2",
        "--eval-chars",
        "2048",
        "--sample-every",
        "0",
        "--log-every",
        "0",
        "--cache-dir",
        str(out / "cache"),
        "--size",
        "default",
        "-q",
    ]
    done = subprocess.run(args, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"the benchmark's model could not be trained ({done.returncode}): "
            f"{done.stderr.decode(errors='replace')[-500:]}"
        )
    return RunFolder(out / "served").best


def start_server(checkpoint: Path, *flags: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """`charrnn serve CHECKPOINT --port 0 FLAGS` and the URL it prints, once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", str(checkpoint), "--port", "0", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    said, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        said.append(line)
        found = re.search(r" at (http://\S+/) ", line)
        if found:
            return process, found.group(1)
    process.kill()
    raise RuntimeError(f"charrnn serve did not start: {''.join(said)[-500:]}")


def _request(url: str, seed: int) -> float:
    body = json.dumps({"length": LENGTH, "seed": seed, "stream": False}).encode()
    started = time.perf_counter()
    ask = urllib.request.Request(
        url + "v1/sample", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(ask, timeout=120) as answer:
        text = json.loads(answer.read())["text"]
    assert len(text) == LENGTH
    return time.perf_counter() - started


def _load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` threads, each sending a request after the last for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    end = time.perf_counter() + seconds

    def client(i: int) -> None:
        seed = i * 1_000_000
        while time.perf_counter() < end:
            try:
                latencies[i].append(_request(url, seed))
            except (OSError, ValueError, AssertionError) as exc:  # (urllib's errors are OSErrors)
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            seed += 1

    before = _engine(url)
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    after = _engine(url)
    if failures:
        raise RuntimeError(
            f"{plural(len(failures), 'request')} of {plural(clients, 'client')} at once failed: {failures[0]}"
        )
    every = np.array([x for per_client in latencies for x in per_client])
    return {
        "clients": clients,
        "requests": len(every),
        "requests_per_sec": len(every) / elapsed,
        "chars_per_sec": len(every) * LENGTH / elapsed,
        "p50_ms": float(np.percentile(every, 50)) * 1000,
        "p99_ms": float(np.percentile(every, 99)) * 1000,
        "mean_batch": (after["row_steps"] - before["row_steps"]) / max(1, after["steps"] - before["steps"]),
        "model_busy": (after["step_seconds"] - before["step_seconds"]) / elapsed,
        "engines_stepped": sum(  # (the engines that drew characters in the row: beside a busy core, fewer)
            b > a for a, b in zip(before.get("row_steps_by_engine", [0]), after.get("row_steps_by_engine", [1]))
        ),
        "engine_gflops": (after["row_steps"] - before["row_steps"])
        * after["flops_per_row"]
        / max(1e-9, after["step_seconds"] - before["step_seconds"])
        / 1e9,
    }


def _engine(url: str) -> dict[str, Any]:
    """The server's engine counters (GET /v1/models)."""
    with urllib.request.urlopen(url + "v1/models", timeout=60) as answer:
        return json.loads(answer.read())["data"][0]["engine"]


def run_serve(
    seconds: float = 10.0,
    progress: Callable[[str], None] = lambda s: None,
    clients: tuple[int, ...] = CLIENTS,
    engines: str = "auto",
) -> dict[str, Any]:
    from charrnn.bench.measure import peak_matmul_gflops
    from charrnn.machine.threads import use_threads

    with tempfile.TemporaryDirectory() as tmp:
        progress("peak matmul, all cores")
        use_threads(cores_here())
        peak = peak_matmul_gflops()
        progress("training the default model for two steps, to serve it")
        checkpoint = _model(Path(tmp))
        process, url = start_server(checkpoint, "--max-length", str(LENGTH), "--engines", engines)
        try:
            with urllib.request.urlopen(url + "v1/models", timeout=60) as answer:
                info = json.loads(answer.read())["data"][0]
            for seed in range(3):  # warm up: first requests, imports, caches
                _request(url, seed)
            rows = []
            for n in clients:
                progress(f"serving {LENGTH}-character samples to {plural(n, 'client')} at once, {seconds:g} s")
                rows.append(_load(url, n, seconds))
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
    model = f"{info['cell'].upper()} {info['layers']}×{info['hidden']}"
    for row in rows:
        row["vs_one_client"] = row["chars_per_sec"] / rows[0]["chars_per_sec"]
        row["of_peak"] = row["engine_gflops"] / peak
    return {
        "model": model,
        "parameters": info["parameters"],
        "engines": info["engine"].get("engines", 1),
        "length": LENGTH,
        "seconds": seconds,
        "cores": cores_here(),
        "peak_gflops": peak,
        "rows": rows,
    }


def serve_table(result: dict[str, Any]) -> Table:
    """`charrnn bench --serve`: requests per second and latency by clients at once."""
    title = (
        f"charrnn serve · {result['length']}-character samples · {result['model']} "
        f"({result['parameters']:,} parameters) · {plural(result['cores'], 'core')} · "
        f"{plural(result.get('engines', 1), 'engine')} · {result['seconds']:g} s each"
    )
    table = Table(title=title, title_justify="left")
    for col in (
        "clients at once",
        "requests",
        "requests/s",
        "chars/s",
        "vs 1 client",
        "p50 latency",
        "p99 latency",
        "engines that stepped",
        "mean batch",
        "model steps' share",
        "engine GFLOP/s",
    ):
        table.add_column(col, justify="right")
    for row in result["rows"]:
        table.add_row(
            str(row["clients"]),
            f"{row['requests']:,}",
            f"{row['requests_per_sec']:,.1f}",
            f"{row['chars_per_sec']:,.0f}",
            f"{row['vs_one_client']:.2f}×",
            f"{row['p50_ms']:,.0f} ms",
            f"{row['p99_ms']:,.0f} ms",
            f"{row.get('engines_stepped', 1)} of {result.get('engines', 1)}",
            f"{row['mean_batch']:.1f}",
            f"{row['model_busy']:.0%}",
            f"{row['engine_gflops']:,.1f} ({row['of_peak']:.0%} of peak)",
        )
    table.caption = (
        f"clients and server on the same machine; each client sends its next request when the last is answered; "
        "model steps' share: of the wall time, the engines spent this in their model's steps, summed over the "
        "engines (the rest: drawing characters, admitting streams, waiting for work or a core); "
        f"engine GFLOP/s: their model steps alone, against a {result['peak_gflops']:,.0f} GFLOP/s float32 matmul "
        "on all cores"
    )
    return table
