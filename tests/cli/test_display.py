"""Progress in logs: the heartbeat lines between evaluations, and thread changes."""

from __future__ import annotations

import io

from conftest import TINY, run_cli, words_text
from rich.console import Console

from charrnn.cli.display import TrainDisplay


def log_display(log_every: float = 30.0):
    out, now = io.StringIO(), [0.0]
    display = TrainDisplay(Console(file=out, width=80), log_every=log_every, clock=lambda: now[0])
    return display, out, now


def step(n: int, elapsed: float, fraction: float, loss: float = 2.0, threads: int = 2) -> dict:
    return {
        "event": "step",
        "step": n,
        "epoch": n / 100,
        "loss": loss,
        "lr": 1e-3,
        "fraction": fraction,
        "chars_seen": 1000 * n,
        "elapsed_s": elapsed,
        "threads": threads,
    }


def test_a_line_at_least_every_log_every_seconds_with_speed_threads_and_eta():
    display, out, now = log_display(30.0)
    display(step(1, 1.0, 0.01))
    now[0] = 29.0
    display(step(20, 29.0, 0.1))
    assert out.getvalue() == ""  # not yet 30 s since the first step
    now[0] = 31.0
    display(step(21, 31.0, 0.25, loss=1.0, threads=1))
    line = out.getvalue()
    assert line.count("\n") == 1
    assert "step     21" in line and "667 chars/s" in line and "1 thread " in line and "ETA 01:33" in line
    assert "train 1.667" in line  # the mean of the losses since the last line (2, 2, 1)
    now[0] = 50.0
    display(step(30, 50.0, 0.3))
    assert out.getvalue().count("\n") == 1  # 19 s later: nothing
    display(
        {
            "event": "eval",
            "step": 30,
            "epoch": 0.3,
            "train_loss": 1.5,
            "val_loss": 1.6,
            "best": True,
            "chars_per_sec": 1.0,
            "lr": 1e-3,
            "elapsed_s": 50.0,
            "chars_seen": 30_000,
        }
    )
    now[0] = 75.0
    display(step(40, 75.0, 0.4))
    assert out.getvalue().count("\n") == 2  # an evaluation line restarts the 30 s


def test_thread_changes_are_one_line_and_log_every_0_keeps_evaluations_only():
    display, out, now = log_display(0)
    display({"event": "threads", "step": 5, "threads": 1, "message": "threads 2 → 1 (speed fell)"})
    for n in range(1, 100):
        now[0] = n * 10.0
        display(step(n, n * 10.0, n / 100))
    assert out.getvalue() == "threads 2 → 1 (speed fell)\n"


def test_a_log_gets_heartbeats_from_a_real_run(write_corpus, tmp_path):
    """stderr is a pipe here: besides evaluation lines, progress lines come every --log-every s.
    (Every step takes more than a nanosecond, however fast the machine: a line after each step
    but the first, however slow.)"""
    corpus = write_corpus(words_text(20_000))
    result = run_cli(
        "train",
        str(corpus),
        *TINY,
        "--max-steps",
        "30",
        "--eval-every",
        "100000",
        "--log-every",
        "1e-9",
        "--sample-every",
        "0",
        "--out",
        str(tmp_path / "ck"),
        check=True,
    )
    lines = result.stderr.decode().splitlines()
    beats = [line for line in lines if "chars/s" in line and "ETA" in line]
    assert [int(line.split()[1]) for line in beats] == list(range(2, 31)), lines
    assert all("1 thread" in line for line in beats)
    evals = [line for line in lines if "val " in line]
    assert len(evals) == 1  # the final evaluation


def test_a_closed_stderr_does_not_end_the_training(write_corpus, tmp_path):
    """`charrnn train ... 2>&1 | head -2`: once the reader is gone, training goes on quietly and
    ends as it would have, with its last.pt."""
    import os
    import subprocess
    import sys

    corpus = write_corpus(words_text(20_000))
    out = tmp_path / "ck"
    args = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(corpus),
        *TINY,
        "--max-steps",
        "300",
        "--eval-every",
        "5",
        "--sample-every",
        "0",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    process.stderr.readline()
    process.stderr.close()  # the reader goes away after one line
    assert process.wait(timeout=300) == 0
    assert (out / "corpus" / "last.pt").exists()
    steps = [line for line in (out / "corpus" / "metrics.jsonl").read_text().splitlines() if '"event"' not in line]
    assert len(steps) == 60  # every evaluation, to step 300


def test_a_signal_ignored_from_the_start_stays_ignored(write_corpus, tmp_path):
    """A script's background job starts with SIGINT ignored: Ctrl-C meant for the script's
    foreground command must not end the training."""
    import signal
    import subprocess
    import sys
    import time

    corpus = write_corpus(words_text(20_000))
    args = [
        sys.executable,
        "-m",
        "charrnn",
        "train",
        str(corpus),
        *TINY,
        "--time-budget",
        "15",  # (6 was refused on a busy machine: start-up took 4.6 s of it, leaving no time to train)
        "--out",
        str(tmp_path / "ck"),
    ]
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    for delay in (0.3, 1.5, 3.0):
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err.decode()
    assert b"interrupted" not in err
