"""One clear line instead of a traceback or silent garbage: a model too large for the machine, a
NUL in a config file, Ctrl-C while charrnn starts, a temperature too small to divide by, a run
that learned nothing; and messages that a log does not cut at 80 columns."""

import math
import os
import shlex
import signal
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY, invoke, need_module, repeat_text, words_text
from data.test_input import assert_one_line_error

from charrnn.config import ModelConfig, SampleConfig, read_toml
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sample.generate import probabilities
from charrnn.training.evaluation import unigram_entropy
from charrnn.training.resources import training_bytes


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run folder."""
    root = tmp_path_factory.mktemp("clear")
    corpus = root / "c.txt"
    corpus.write_text(words_text(8000), encoding="utf-8")
    assert (
        invoke(
            "train", str(corpus), *TINY, "--max-steps", "10", "--eval-every", "5", "--out", str(root / "ck")
        ).returncode
        == 0
    )
    return root / "ck" / "c"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(words_text(8000), encoding="utf-8")
    return path


def test_a_model_too_large_for_memory_is_refused_before_allocating(tmp_path, corpus):
    result = invoke("train", str(corpus), "--hidden", "1000000", "--out", str(tmp_path / "ck"))
    assert_one_line_error(result, "the model is too large to train here", "parameters need about", "GB", "--hidden")
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_memory_estimate_counts_the_parameters_of_the_model_it_would_build(cell):
    cfg = ModelConfig(vocab_size=30, cell=cell, layers=2, hidden=24, embed=8)
    params, need = training_bytes(cfg, batch_size=4, seq_len=16)
    assert params == sum(p.numel() for p in CharRNN(cfg).parameters()) and need > 16 * params


@pytest.mark.parametrize("line", ['name = "a\\u0000b"', 'out = "ck\\u0000"', 'sample-prime = "\\u0000"'])
def test_a_nul_character_in_a_config_string_is_one_line(tmp_path, corpus, line):
    toml = tmp_path / "run.toml"
    toml.write_text(line + "\n", encoding="utf-8")
    result = invoke(
        "train", str(corpus), *TINY, "--max-steps", "2", "--config", str(toml), "--out", str(tmp_path / "ck")
    )
    assert_one_line_error(result, str(toml), "a NUL character (\\u0000) cannot be part of an option")
    toml.write_text('stop = ["ok", "a\\u0000"]\n', encoding="utf-8")  # and inside a list
    with pytest.raises(CharRNNError, match="stop: a NUL character"):
        read_toml(toml, SampleConfig)


def catching(pid: int, sig: int, timeout: float = 120.0) -> None:
    """Until process `pid` has a handler for `sig` (Linux: SigCgt in /proc/PID/status), or has ended."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return  # ended, or no /proc: send it anyway
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if caught >> (sig - 1) & 1:
            return
        time.sleep(0.002)
    raise AssertionError(f"process {pid} installed no handler for {signal.Signals(sig).name} in {timeout:g} s")


def test_ctrl_c_while_charrnn_starts_is_one_line(tmp_path, corpus):
    """SIGINT at several moments of start-up (typer, rich, torch loading; the first step), each
    counted from when charrnn's handler is in place: what comes before (the interpreter, site's
    .pth files, a loaded machine's delays) is out of charrnn's reach. Python runs with -S, so that
    this time is as short as it can be."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]),
        "OMP_NUM_THREADS": "1",
    }
    args = [
        sys.executable,
        "-S",
        "-m",
        "charrnn",
        "train",
        str(corpus),
        *TINY,
        "--max-epochs",
        "1000",
        "--out",
        str(tmp_path / "ck"),
    ]
    for delay, sig in [
        (0.0, signal.SIGINT),
        (0.05, signal.SIGINT),
        (0.1, signal.SIGTERM),
        (0.15, signal.SIGINT),
        (0.3, signal.SIGINT),
    ]:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        catching(proc.pid, signal.SIGTERM)  # charrnn's handlers are in (Python's own catches SIGINT from the start)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        err = err.decode()
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (delay, err)
        if proc.returncode == -sig:  # before Python itself could take the signal: no word, no traceback
            assert err == "", err
            continue
        name = signal.Signals(sig).name
        assert proc.returncode == 128 + sig and (
            f"charrnn: interrupted ({name})" in err or f"stopped by {name}" in err
        ), (delay, err)


def test_a_temperature_too_small_to_divide_by_is_greedy():
    logits = np.array([[1.0, 3.0, 2.0], [0.5, -1.0, 0.2], [-2.0, 0.0, -2.0]])
    greedy = probabilities(logits, 0.0)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # (what NumPy warns about)
        for temp in (1e-320, 1e-308, 5e-324):
            assert np.array_equal(probabilities(logits, temp), greedy), temp
            assert np.array_equal(probabilities(logits, temp, top_k=2, top_p=0.5), greedy), temp
        assert np.allclose(probabilities(logits, 1.0).sum(axis=1), 1.0)


def test_sample_at_a_vanishing_temperature_is_the_greedy_text(run):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny = invoke("sample", "-c", str(run), "--temp", "1e-320", "--length", "50", "--seed", "1")
    zero = invoke("sample", "-c", str(run), "--temp", "0", "--length", "50", "--seed", "1")
    assert tiny.returncode == 0 and tiny.stdout == zero.stdout and len(tiny.stdout) == 50
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert b"Warning" not in tiny.stderr


def test_unigram_entropy_in_chunks_and_from_a_memory_map(tmp_path):
    ids = np.array([0, 0, 1, 1, 2, 2, 2, 2], dtype=np.uint8)
    assert unigram_entropy(ids) == pytest.approx(-(0.25 * math.log(0.25) * 2 + 0.5 * math.log(0.5)))
    big = np.random.default_rng(0).integers(0, 40, 100_003).astype(np.uint16)
    np.save(tmp_path / "ids.npy", big)
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    assert unigram_entropy(mapped, chunk=4096) == pytest.approx(unigram_entropy(big))


def test_a_run_that_learned_nothing_says_so(tmp_path, corpus):
    common = [str(corpus), *TINY, "--max-steps", "40", "--eval-every", "5", "--out", str(tmp_path / "ck")]
    # (without weight decay: with it each step multiplies the weights by 1 - lr x decay, which
    # overflows in two steps, and the run ends as diverged, a message of its own)
    diverged = invoke("train", *common, "--lr", "1e30", "--weight-decay", "0", "--name", "hot")
    err = diverged.stderr.decode()
    assert diverged.returncode == 0
    assert "warning: the model did not learn: its loss" in err and "is above the corpus' unigram entropy" in err, err
    assert err.rstrip().endswith("try a lower --lr")
    easy = tmp_path / "easy.txt"
    easy.write_text(repeat_text(6000), encoding="utf-8")
    learned = invoke(
        "train", str(easy), *TINY, "--max-steps", "60", "--lr", "1e-2", "--warmup", "0", "--out", str(tmp_path / "ck")
    )
    assert learned.returncode == 0 and "did not learn" not in learned.stderr.decode()


def test_messages_are_not_cut_at_80_columns_in_logs(run, tmp_path):
    """On a pipe or in a file rich would wrap at 80 columns; a message stays one line."""
    unknown = "".join(chr(0x3B1 + i) for i in range(24))  # Greek letters the model never saw
    sampled = invoke("sample", "-c", str(run), "--prime", "the" + unknown, "--unknown", "skip", "--length", "3")
    warning = [line for line in sampled.stderr.decode().splitlines() if line]
    assert sampled.returncode == 0 and len(warning) == 1 and len(warning[0]) > 80, warning
    folder = tmp_path / ("a folder with a long name, " * 3) / "and spaces"
    folder.mkdir(parents=True)
    out = folder / "model.npz"
    exported = invoke("export", str(run / "best.pt"), "-o", str(out))
    lines = exported.stderr.decode().splitlines()
    assert exported.returncode == 0 and len(lines) == 1, lines
    assert shlex.split(lines[0].split("sample from it with: ", 1)[1]) == ["charrnn", "sample", "-c", str(out)]
    need_module("matplotlib", "pip install -e '.[plot]'")
    plotted = invoke("plot", str(run), "--out", str(folder / "loss.png"))
    assert plotted.returncode == 0 and plotted.stderr.decode().splitlines() == [f"wrote {folder / 'loss.png'}"]
