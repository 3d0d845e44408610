"""Shared helpers: tiny corpora made by the tests themselves, and a way to run the real CLI."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # deterministic and fair on a shared 2-core machine

# A shell's background job (`make test &`, some CI runners) starts with SIGINT ignored, and a
# process keeps an ignored signal through exec: charrnn, rightly, leaves it ignored. The tests
# that interrupt charrnn need it started as from a terminal, so this process handles the
# signals itself, and its children start with the default.
for _sig in (signal.SIGINT, signal.SIGTERM):
    if signal.getsignal(_sig) is signal.SIG_IGN:
        signal.signal(_sig, signal.default_int_handler if _sig == signal.SIGINT else signal.SIG_DFL)

# Subprocesses (`python -m charrnn`, torchrun's workers) import the package from this checkout,
# whatever copy of charrnn the interpreter has installed.
ROOT = Path(__file__).resolve().parent.parent
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])

WORDS = "the a of to and in that is was he for it with as his on be at by had not are but from".split()


def words_text(n_chars: int, seed: int = 0) -> str:
    """Pseudo-English: lines of random common words. Deterministic for a seed."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + "."
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:n_chars]


def missing(reason: str):
    """Skip the test for lack of something `make setup` installs (matplotlib, the .venv, torch's
    gloo backend); under CI (CI=true), where every test must run, fail with the reason instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI every test must run (make setup installs it)", pytrace=False)
    pytest.skip(reason)


def need_module(name: str, install: str):
    """The module `name`, or `missing` (skipped; under CI, failed) with how to install it."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"{name} is not installed ({install})")


def repeat_text(n_chars: int, unit: str = "abcdefgh\n") -> str:
    """A perfectly predictable text: one unit repeated."""
    return (unit * (n_chars // len(unit) + 1))[:n_chars]


@pytest.fixture(scope="session", autouse=True)
def corpus_cache(tmp_path_factory):
    """Prepared corpora go to a temporary folder, for the CLI in this process and in subprocesses."""
    folder = tmp_path_factory.mktemp("charrnn-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHARRNN_CACHE", str(folder))
        yield folder


@pytest.fixture
def write_corpus(tmp_path):
    def write(text: str, name: str = "corpus.txt") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def run_cli(
    *args: str, cwd: Path | None = None, env_extra: dict | None = None, input: str | None = None, check: bool = False
):
    """Run `python -m charrnn ARGS` as a user would, in a real subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        input=input.encode() if input is not None else None,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"charrnn {' '.join(args)} failed ({result.returncode}):\n{result.stderr.decode()}")
    return result


TINY = ["--layers", "1", "--hidden", "32", "--embed", "16", "--seq-len", "16", "--batch-size", "8", "--threads", "1"]


class Result:
    """What a CLI run left behind, with the same fields for in-process and subprocess runs."""

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def invoke(*args: str) -> Result:
    """Run the CLI in this process (fast: no interpreter or torch start-up). For checks of exit
    codes and messages; signals, pipes and locales need `run_cli`'s real subprocess."""
    from typer.testing import CliRunner

    from charrnn.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout_bytes, result.stderr_bytes)
