"""Data-parallel training in two CPU processes (gloo), started as a user would: `train --nproc 2`."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY, invoke, missing, run_cli, words_text

from charrnn.data.batches import even_share_of_streams, shard_rows
from charrnn.store import checkpoint
from charrnn.training.distributed import Dist, command_started, launch_command, state_digest, strip_option


@pytest.fixture
def needs_gloo():
    if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
        missing("this torch has no torch.distributed with the gloo backend")


gloo = pytest.mark.usefixtures("needs_gloo")


def test_streams_are_shared_out_in_contiguous_blocks():
    blocks = [shard_rows(10, rank, 3) for rank in range(3)]
    assert [(b.start, b.stop) for b in blocks] == [(0, 4), (4, 7), (7, 10)]
    assert shard_rows(1, 1, 2) == slice(1, 1)  # fewer streams than processes: an empty share
    assert even_share_of_streams(8, 2, 1) == 16 and even_share_of_streams(8, 2, 4) == 4
    assert even_share_of_streams(8, 2, 3) is None


def test_torchrun_environment_and_launch_command():
    assert Dist.from_env({}).world == 1
    d = Dist.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (d.rank, d.world, d.local_rank, d.local_world, d.main) == (3, 4, 1, 2, False)
    assert strip_option(["train", "c.txt", "--nproc=2", "--threads", "3"], "--nproc") == (
        ["train", "c.txt", "--threads", "3"],
        "2",
    )
    args, env = launch_command(["train", "c.txt", "--nproc", "2"], 2, cores=8, started_wall=1000.0)
    assert (
        args[-3:] == ["charrnn", "train", "c.txt"] and env["OMP_NUM_THREADS"] == "4"
    )  # --threads auto: at most 4 each
    assert command_started(time.monotonic(), {"CHARRNN_STARTED_AT": str(time.time() - 20)}) == pytest.approx(
        time.monotonic() - 20, abs=1
    )
    assert command_started(50.0, {}) == 50.0
    assert "--nproc" not in args and args[args.index("--nproc-per-node") + 1] == "2"


@gloo
def test_two_processes_train_in_step_and_resume_on_one(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(words_text(30_000), encoding="utf-8")
    out = tmp_path / "ck"
    common = [str(corpus), "--out", str(out), "--lr", "1e-2", "--warmup", "0", "--eval-every", "10"]
    result = run_cli("train", *common, *TINY, "--nproc", "2", "--max-steps", "30", cwd=tmp_path)
    log = result.stderr.decode()
    assert result.returncode == 0, log
    assert "Traceback" not in log and log.count("training ") == 1  # rank 0 alone reports
    assert "in each of 2 processes" in log

    run = out / "corpus"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30]  # one writer
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.2, rows
    assert rows[-1]["chars_seen"] == 30 * 2 * 8 * 16  # steps x processes x streams x seq-len

    last = checkpoint.load(run / "last.pt")
    assert (last.meta["world_size"], last.meta["batch_size"]) == (2, 8)
    digests = last.meta["weights_digests"]  # each process hashed its own weights at the save
    assert len(digests) == 2 and digests[0] == digests[1] == state_digest(last.model)
    assert last.hidden[0].shape[1] == 16  # the carried state of all 2 x 8 streams

    resumed = run_cli("train", *common, "--resume", "--max-steps", "40", "--threads", "1", cwd=tmp_path)
    log = resumed.stderr.decode()
    assert resumed.returncode == 0, log
    assert "resuming at step 30" in log and "continuing on 1 x 16" in log
    after = checkpoint.load(run / "last.pt")
    assert (after.meta["progress"]["step"], after.meta["world_size"], after.meta["batch_size"]) == (40, 1, 16)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]

    # 16 streams do not split over 3 processes: refused before anything starts, in one line.
    uneven = run_cli("train", *common, "--resume", "--max-steps", "50", "--nproc", "3", cwd=tmp_path)
    err = uneven.stderr.decode()
    assert uneven.returncode == 2 and "do not split evenly over 3" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0, err
    assert checkpoint.load(run / "last.pt").meta["progress"]["step"] == 40


EXACT = """
import json, sys, torch
from charrnn.store import checkpoint
from charrnn.config import TrainConfig
from charrnn.training.distributed import Dist
from charrnn.training.trainer import Trainer
from charrnn.data.vocab import Vocab

text = open(sys.argv[1], encoding="utf-8").read()
vocab = Vocab.from_text(text)
ids = vocab.encode(text)
cfg = TrainConfig(layers=2, hidden=32, embed=16, seq_len=16, batch_size=4, threads=1, dropout=0.2,
                  eval_every=7, save_every=5, warmup=4, max_steps=30, device="cpu").validate()
dist = Dist.from_env()
dist.start(torch.device("cpu"))

def trainer(run, resume=None):
    return Trainer(cfg, vocab, ids[:-2000], ids[-2000:], f"{sys.argv[2]}/{run}", resume_from=resume, dist=dist)

trainer("straight").fit()
trainer("split").fit(until_step=12)  # as if interrupted at step 12
trainer("split", dist.from_main(lambda: checkpoint.load(f"{sys.argv[2]}/split/last.pt"))).fit()  # as the CLI does
dist.close()
import os
sys.stdout.flush()
os._exit(0)  # as the CLI ends (cli/app.py _exit_now): gloo's threads can abort the interpreter's teardown
"""


@gloo
def test_two_processes_resume_exactly(tmp_path):
    """N steps in one go equal N/2 + N/2 resumed, with dropout, in 2 processes."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(12_000), encoding="utf-8")
    script = tmp_path / "exact.py"
    script.write_text(EXACT, encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(script),
            str(corpus),
            str(tmp_path),
        ],
        capture_output=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    straight, split = (checkpoint.load(tmp_path / run / "last.pt") for run in ("straight", "split"))
    assert split.meta["progress"]["step"] == 30 and split.meta["world_size"] == 2
    for key, value in straight.model.items():
        torch.testing.assert_close(split.model[key], value, rtol=0, atol=0)

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in rows]

    assert losses("straight") == losses("split") and [r[0] for r in losses("split")] == [7, 14, 21, 28, 30]


STOPPED = """
import sys, torch
from charrnn.config import TrainConfig
from charrnn.training.distributed import Dist
from charrnn.training.trainer import Trainer
from charrnn.data.vocab import Vocab

text = open(sys.argv[1], encoding="utf-8").read()
vocab = Vocab.from_text(text)
ids = vocab.encode(text)
cfg = TrainConfig(layers=1, hidden=32, embed=16, seq_len=16, batch_size=4, threads=1, eval_every=5,
                  save_every=1000, sample_every=0, warmup=0, time_budget=1000.0, eval_share=1e-6,
                  device="cpu").validate()
dist = Dist.from_env()
dist.start(torch.device("cpu"))

def stop_at_23(event):  # (rank 0 alone sees events: the processes must agree to stop)
    if event["event"] == "step" and event["step"] == 23:
        trainer.stop("interrupted")

trainer = Trainer(cfg, vocab, ids[:-2000], ids[-2000:], sys.argv[2], events=stop_at_23, dist=dist)
trainer.fit()
dist.close()
import os
sys.stdout.flush()
os._exit(0)
"""


@gloo
def test_two_processes_stopped_after_skipped_evaluations_evaluate_together(tmp_path):
    """Rank 0 alone is asked to stop, at step 23, with every evaluation after the first skipped by
    --eval-share: both processes stop at that step and evaluate it together (the evaluation and
    the saves gather from both), as one process would."""
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(12_000), encoding="utf-8")
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
        + [str(corpus), str(tmp_path / "run")],
        capture_output=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [5, 23]
    last, best = (checkpoint.load(tmp_path / "run" / name) for name in ("last.pt", "best.pt"))
    assert last.meta["progress"]["step"] == best.meta["progress"]["step"] == 23 and last.meta["world_size"] == 2
    assert last.meta["progress"]["eval_seconds"] > 0


def test_what_cannot_run_in_several_processes_is_refused_before_torchrun_starts(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(3000), encoding="utf-8")
    for extra, needle in (
        (["--engine", "numpy"], "--engine numpy trains in one process"),
        (["--nproc", "0"], "--nproc 0 must be at least 1"),
    ):
        result = invoke("train", str(corpus), *TINY, "--nproc", "2", *extra, "--out", str(tmp_path / "ck"))
        err = result.stderr.decode()
        assert result.returncode == 2 and needle in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "ck").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_here_is_refused_before_torchrun_starts(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(3000), encoding="utf-8")
    result = run_cli("train", str(corpus), *TINY, "--nproc", "2", "--device", "cuda", "--out", str(tmp_path / "ck"))
    err = result.stderr.decode()
    assert result.returncode == 2 and "--device cuda" in err and "launching" not in err, err
    assert err.strip().count("\n") == 0, err


CRASH = """
import sys, torch
from charrnn.training.distributed import Dist
from charrnn.errors import CharRNNError

dist = Dist.from_env()
dist.start(torch.device("cpu"))

def work():
    raise MemoryError("out of memory while preparing")  # not a CharRNNError: a real failure

try:
    dist.local_first(work)
except CharRNNError as exc:  # the process that did not run `work` hears of it, and does not wait
    print(f"rank {dist.rank} told: {exc} (elsewhere={exc.elsewhere})", flush=True)
    import os
    os._exit(3)  # as the CLI ends (cli/app.py _exit_now): gloo's threads can abort the interpreter's teardown
"""


@gloo
def test_an_unexpected_failure_on_the_first_process_reaches_the_others(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(CRASH, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode != 0
    assert "MemoryError: out of memory while preparing" in err  # rank 0 dies of its own error
    assert "rank 1 told: rank 0 failed: MemoryError: out of memory while preparing (elsewhere=True)" in out, (
        out + err[-2000:]
    )
