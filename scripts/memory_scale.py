#!/usr/bin/env python3
"""How memory and speed scale: a benchmark that prints numbers, asserts nothing.

    python scripts/memory_scale.py                 # a 2 GB generated corpus: prepare, then train
    python scripts/memory_scale.py --size 200M     # a quick try
    python scripts/memory_scale.py --scaling       # also: training chars/s in 1 vs 2 processes
    python scripts/memory_scale.py --scaling-only

Memory: generates a corpus of --size bytes (pseudo-English with a few non-ASCII characters),
runs `charrnn prepare` on it (cold, then again from the cache) and a short `charrnn train`
(small model, --steps steps) in subprocesses, and reports each one's own peak RSS (VmHWM) next
to the same command on a 1 MB corpus: the difference is what the corpus' size costs. The corpus
and its cache entry are deleted at the end unless --keep.

Scaling: trains the same model for --scaling-steps steps in 1 process (all cores) and with
`--nproc 2` (half the cores each), on CPU, and reports the chars/s of the last evaluation window
(start-up excluded), both for the same batch per process (twice the global batch) and for the
same global batch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "café naïve über señor 世界 😀"
).split()
BLOCK = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_blocks(n: int, seed: int = 0) -> list[bytes]:
    """`n` different blocks of about 1 MiB of pseudo-English lines."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(n):
        lines, size = [], 0
        while size < BLOCK:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize() + ".\n"
            lines.append(line)
            size += len(line.encode())
        blocks.append("".join(lines).encode("utf-8")[:BLOCK].decode("utf-8", "ignore").encode("utf-8"))
    return blocks


def write_corpus(path: Path, size: int, seed: int = 0) -> None:
    """About `size` bytes: 16 distinct blocks in a random order (fast to write at any size)."""
    blocks = make_blocks(16, seed)
    rng = random.Random(seed + 1)
    written = 0
    with open(path, "wb") as fh:
        while written < size:
            block = blocks[rng.randrange(len(blocks))]
            if written + len(block) > size:  # the last one, cut without cutting a character
                block = block[: size - written].decode("utf-8", "ignore").encode("utf-8")
                if not block:
                    break
            fh.write(block)
            written += len(block)


# Runs the command line in-process and writes its peak RSS (VmHWM) to a file at exit. The peak
# that wait4() reports would start at the RSS of this script at fork, hiding smaller peaks.
WRAPPER = """
import atexit, os, resource, sys

def peak_kb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

def report():
    with open(os.environ["CHARRNN_PEAK_FILE"], "w") as fh:
        fh.write(str(peak_kb()))

atexit.register(report)
sys.argv[0] = "charrnn"
from charrnn.cli.app import main
main()
"""


def run_measured(args: list[str], env: dict) -> dict:
    """Run `charrnn ARGS` in a subprocess; its wall time, peak RSS (MB) and output."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", WRAPPER, *args],
            env={**env, "CHARRNN_PEAK_FILE": str(peak_file)},
            capture_output=True,
        )
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr.decode(errors="replace"))
            raise SystemExit(f"charrnn {' '.join(args)} failed ({proc.returncode})")
        peak_mb = int(peak_file.read_text()) / 1024
    return {"seconds": seconds, "peak_rss_mb": peak_mb, "stdout": proc.stdout.decode(), "stderr": proc.stderr.decode()}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def memory(args, work: Path, env: dict) -> None:
    size = parse_size(args.size)
    corpus, small = work / "corpus.txt", work / "small.txt"
    cache = work / "cache"
    log(f"writing a {size / 1e6:,.0f} MB corpus to {corpus} …")
    t0 = time.perf_counter()
    write_corpus(corpus, size)
    write_corpus(small, 1 << 20, seed=7)
    log(f"written in {time.perf_counter() - t0:.1f} s")
    model = [
        "--layers",
        "1",
        "--hidden",
        "128",
        "--embed",
        "32",
        "--seq-len",
        "128",
        "--batch-size",
        "32",
        "--max-steps",
        str(args.steps),
        "--eval-every",
        str(max(1, args.steps // 2)),
        "--device",
        "cpu",
    ]
    results = {}
    for name, path in (("small", small), ("big", corpus)):
        log(f"charrnn prepare {path.name} …")
        results[f"prepare {name}"] = run_measured(["prepare", str(path), "--cache-dir", str(cache), "--json"], env)
        if name == "big":
            log("charrnn prepare again (cached) …")
            results["prepare again"] = run_measured(["prepare", str(path), "--cache-dir", str(cache), "--json"], env)
        log(f"charrnn train {path.name} ({args.steps} steps) …")
        results[f"train {name}"] = run_measured(
            ["train", str(path), "--cache-dir", str(cache), "--out", str(work / "runs"), "--name", name, *model], env
        )
    prepared = json.loads(results["prepare big"]["stdout"])
    again = json.loads(results["prepare again"]["stdout"])
    print(
        f"corpus: {prepared['bytes'] / 1e6:,.0f} MB, {prepared['chars']:,} characters, {prepared['distinct']} "
        f"distinct, ids {prepared['dtype']}"
    )
    print(
        f"prepare: {prepared['seconds']:.1f} s, {prepared['mb_per_s']:.1f} MB/s; from the cache: "
        f"{again['seconds']:.2f} s"
    )
    print(f"{'command':<24}{'peak RSS MB':>12}{'wall s':>9}")
    for name, r in results.items():
        print(f"{name:<24}{r['peak_rss_mb']:>12.0f}{r['seconds']:>9.1f}")
    for what in ("prepare", "train"):
        grown = results[f"{what} big"]["peak_rss_mb"] - results[f"{what} small"]["peak_rss_mb"]
        print(f"{what}: peak RSS on {prepared['bytes'] / 1e6:,.0f} MB minus on 1 MB = {grown:+.0f} MB")
    if not args.keep:
        corpus.unlink()
        shutil.rmtree(cache, ignore_errors=True)


def chars_per_sec(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["chars_per_sec"]  # the last window: after start-up


def scaling(args, work: Path, env: dict) -> None:
    corpus = work / "scaling.txt"
    write_corpus(corpus, 8 << 20, seed=3)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    steps = args.scaling_steps
    model = [
        "--layers",
        "2",
        "--hidden",
        str(args.hidden),
        "--embed",
        "64",
        "--seq-len",
        "128",
        "--max-steps",
        str(steps),
        "--eval-every",
        str(max(1, steps // 3)),
        "--eval-chars",
        "20000",
        "--device",
        "cpu",
        "--cache-dir",
        str(work / "cache"),
        "--out",
        str(work / "runs"),
    ]
    b = args.batch_size
    configs = [
        (f"1 process, {cores} threads", ["--batch-size", str(b), "--threads", str(cores)], 1, b),
        ("1 process, 1 thread", ["--batch-size", str(b), "--threads", "1"], 1, b),
        ("2 processes, same batch per process", ["--batch-size", str(b), "--nproc", "2"], 2, b),
        ("2 processes, same global batch", ["--batch-size", str(b // 2), "--nproc", "2"], 2, b // 2),
    ]
    print(
        f"CPU scaling on {cores} cores: LSTM 2x{args.hidden}, seq-len 128, {steps} steps; "
        f"2 processes get {max(1, cores // 2)} threads each"
    )
    print(f"{'':<40}{'batch/proc':>11}{'global':>8}{'chars/s':>10}")
    base = None
    for i, (name, extra, procs, batch) in enumerate(configs):
        log(f"training: {name} …")
        run_measured(["train", str(corpus), "--name", f"scaling{i}", *model, *extra], env)
        speed = chars_per_sec(work / "runs" / f"scaling{i}")
        base = base or speed
        print(f"{name:<40}{batch:>11}{batch * procs:>8}{speed:>10,.0f}   x{speed / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2G", help="corpus size, e.g. 2G, 200M (default 2G)")
    parser.add_argument("--steps", type=int, default=40, help="training steps of the memory run")
    parser.add_argument("--dir", default=None, help="where to write the corpus (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the corpus and its cache entry")
    parser.add_argument("--scaling", action="store_true", help="also measure 1 vs 2 processes")
    parser.add_argument("--scaling-only", action="store_true", help="only measure 1 vs 2 processes")
    parser.add_argument("--scaling-steps", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the scaling runs")
    parser.add_argument("--batch-size", type=int, default=32, help="batch of the 1-process scaling run")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="charrnn-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not args.scaling_only:
            memory(args, work, env)
        if args.scaling or args.scaling_only:
            scaling(args, work, env)
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
