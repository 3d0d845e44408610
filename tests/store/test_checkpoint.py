"""Checkpoints: bad files are clear errors, crafted files run nothing, and no crash, kill, signal
or full disk ever leaves a torn or lost checkpoint."""

import json
import os
import pickle
import random
import re
import resource
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from conftest import TINY, invoke, words_text

from charrnn.errors import CharRNNError
from charrnn.store import checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run: (root, corpus, run folder)."""
    root = tmp_path_factory.mktemp("ck")
    corpus = root / "c.txt"
    corpus.write_text(words_text(8000), encoding="utf-8")
    assert (
        invoke(
            "train", str(corpus), *TINY, "--max-steps", "10", "--eval-every", "5", "--out", str(root / "ck")
        ).returncode
        == 0
    )
    return root, corpus, root / "ck" / "c"


def damaged_files(tmp_path, good):
    data = good.read_bytes()
    newer = tmp_path / "newer.pt"
    torch.save(
        {"format": checkpoint.FORMAT, "format_version": checkpoint.FORMAT_VERSION + 1, "meta": "{}", "model": {}}, newer
    )
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, plain)
    files = {
        "missing": (tmp_path / "nope.pt", "no such checkpoint"),
        "truncated": (tmp_path / "truncated.pt", "not a readable charrnn checkpoint: truncated or damaged"),
        "empty": (tmp_path / "empty.pt", "not a readable charrnn checkpoint: the file is empty"),
        "corrupted": (tmp_path / "corrupted.pt", "(not a readable|damaged) charrnn checkpoint"),
        "text": (tmp_path / "text.pt", "not a readable charrnn checkpoint: not a file torch.save writes"),
        "other torch file": (plain, "not a charrnn checkpoint"),
        "newer format": (newer, "newer than this charrnn reads"),
    }
    files["truncated"][0].write_bytes(data[: len(data) // 2])
    files["empty"][0].write_bytes(b"")
    corrupted = bytearray(data)
    for i in range(len(data) // 3, len(data) // 3 + 64):
        corrupted[i] ^= 0xFF
    files["corrupted"][0].write_bytes(bytes(corrupted))
    files["text"][0].write_text("hello, I am not a checkpoint\n")
    return files


def test_bad_checkpoint_files_are_clear_errors(run, tmp_path):
    _, _, folder = run
    for label, (path, message) in damaged_files(tmp_path, folder / "best.pt").items():
        with pytest.raises(CharRNNError, match=message):
            checkpoint.load(path)
        for args in (["sample", "-c", str(path)], ["info", str(path)]):
            result = invoke(*args)
            err = result.stderr.decode()
            assert result.returncode == 2 and re.search(message, err) and "Traceback" not in err, (label, err)


class Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_files(tmp_path, marker):
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps({"format": checkpoint.FORMAT, "x": Evil(marker)}))
    zipped = tmp_path / "evil_zip.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": 1, "meta": "{}", "model": {}, "x": Evil(marker)}, zipped)
    assert zipfile.is_zipfile(zipped)
    return [raw, zipped]


def test_a_crafted_pickle_runs_nothing_anywhere(run, tmp_path):
    root, corpus, _ = run
    marker = tmp_path / "PWNED"
    for evil in evil_files(tmp_path, marker):
        victim = tmp_path / "victim" / "run"
        victim.mkdir(parents=True, exist_ok=True)
        (victim / "last.pt").write_bytes(evil.read_bytes())
        commands = [
            ["sample", "-c", str(evil)],
            ["info", str(evil)],
            ["train", str(corpus), "--resume", "--out", str(tmp_path / "victim"), "--name", "run"],
            ["train", str(corpus), "--init-from", str(evil), "--out", str(tmp_path / "fresh")],
        ]
        for args in commands:
            result = invoke(*args)
            assert result.returncode == 2, (args, result.stderr.decode())
            assert "Traceback" not in result.stderr.decode()
            assert not marker.exists(), f"code ran for {args}"
    # The payload is real: loading it the unsafe way does run it.
    with open(tmp_path / "evil_raw.pt", "rb") as fh:
        pickle.load(fh)
    assert marker.exists()


def start_training(corpus, out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(corpus),
            *TINY,
            "--max-steps",
            "100000",
            "--save-every",
            "1",
            "--eval-every",
            "3",
            "--out",
            str(out),
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(path, proc, timeout=60):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "training never wrote a checkpoint"
        time.sleep(0.02)


def test_kill_9_at_random_moments_never_tears_a_checkpoint(tmp_path):
    corpus = tmp_path / "k.txt"
    corpus.write_text(words_text(20000), encoding="utf-8")
    out, rng = tmp_path / "ck", random.Random(1)
    folder = out / "k"
    steps = []
    for attempt in range(8):
        proc = start_training(corpus, out, *(["--resume"] if attempt else []))
        if attempt == 0:
            wait_for(folder / "last.pt", proc)
        if attempt % 3 == 2:
            time.sleep(rng.uniform(0.0, 1.0))  # during start-up
        else:
            while not proc.stderr.readline().startswith(b"training"):  # until the loop has started
                assert proc.poll() is None
            time.sleep(rng.uniform(0.0, 1.5))  # anywhere: a step, an evaluation, a save
        proc.kill()
        proc.wait()
        for name in ("last.pt", "best.pt"):
            ckpt = checkpoint.load(folder / name)  # must load, whatever moment the kill hit
            assert ckpt.meta["progress"]["step"] >= 1
        steps.append(checkpoint.load(folder / "last.pt").meta["progress"]["step"])
    assert steps == sorted(steps) and steps[-1] > steps[0], steps  # every resume went on from the last
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()[:-1]]
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows})  # no duplicated evaluations


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_save_last_and_say_how_to_resume(tmp_path, sig, code):
    corpus = tmp_path / "s.txt"
    corpus.write_text(words_text(20000), encoding="utf-8")
    proc = start_training(corpus, tmp_path / "ck")
    wait_for(tmp_path / "ck" / "s" / "best.pt", proc)
    before = checkpoint.load(tmp_path / "ck" / "s" / "best.pt").meta["progress"]["step"]
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == code, err
    assert "resume with: charrnn train" in err and "--resume" in err and str(tmp_path / "ck" / "s" / "last.pt") in err
    assert "Traceback" not in err
    assert checkpoint.load(tmp_path / "ck" / "s" / "last.pt").meta["progress"]["step"] >= before


def test_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(run, tmp_path):
    root, corpus, folder = run
    work = tmp_path / "ck"
    assert invoke("train", str(corpus), *TINY, "--max-steps", "4", "--out", str(work)).returncode == 0
    before = (work / "c" / "last.pt").read_bytes()
    limit = len(before) // 2  # room for metrics lines, not for a checkpoint

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(corpus),
            "--resume",
            "--max-steps",
            "8",
            "--out",
            str(work),
            "--threads",
            "1",
        ],
        capture_output=True,
        preexec_fn=small_files,
        timeout=120,
    )
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert re.search(
        r"disk full while writing \S+/c/(best|last)\.pt \(File too large\)\. The previous \1\.pt is untouched", err
    ), err
    assert "once there is room, resume with: charrnn train" in err and "Traceback" not in err
    assert (work / "c" / "last.pt").read_bytes() == before
    checkpoint.load(work / "c" / "last.pt")
    assert not list((work / "c").glob(".*.tmp"))


def test_saved_files_take_the_umask_like_any_other_file(run, tmp_path):
    """mkstemp makes 0600 files; a checkpoint (and an export) should be as shareable as the
    user's other files: 0666 less the umask."""
    _, _, folder = run
    save = (
        "import sys; from charrnn.store import checkpoint; checkpoint.save(checkpoint.load(sys.argv[1]), sys.argv[2])"
    )
    for umask in (0o022, 0o077):
        pt = tmp_path / f"{umask:o}.pt"
        for args in (["-c", save, str(folder / "last.pt"), str(pt)], ["-m", "charrnn", "export", str(pt)]):
            done = subprocess.run(
                [sys.executable, *args], capture_output=True, timeout=120, preexec_fn=lambda: os.umask(umask)
            )
            assert done.returncode == 0, done.stderr.decode()
        for suffix in (".pt", ".npz"):
            assert (tmp_path / f"{umask:o}{suffix}").stat().st_mode & 0o777 == 0o666 & ~umask, suffix


def test_resume_never_replaces_a_better_best(run, tmp_path):
    root, corpus, _ = run
    work = tmp_path / "ck"
    assert (
        invoke("train", str(corpus), *TINY, "--max-steps", "4", "--eval-every", "2", "--out", str(work)).returncode == 0
    )
    best = checkpoint.load(work / "c" / "best.pt")
    best.meta["progress"]["best_loss"] = 0.01  # as if a much better model had been saved after last.pt
    checkpoint.save(best, work / "c" / "best.pt")
    before = (work / "c" / "best.pt").read_bytes()
    assert (
        invoke("train", str(corpus), "--resume", "--max-steps", "8", "--out", str(work), "--threads", "1").returncode
        == 0
    )
    assert (work / "c" / "best.pt").read_bytes() == before


def test_summary_does_not_name_a_best_checkpoint_that_was_never_written(tmp_path):
    """Interrupted before the first evaluation, a run has last.pt and no best.pt."""
    import io

    from rich.console import Console

    from charrnn.cli.display import TrainDisplay

    (tmp_path / "last.pt").write_bytes(b"x")
    summary = {
        "step": 5,
        "chars_seen": 640,
        "elapsed_s": 1.0,
        "best_loss": float("inf"),
        "skipped_steps": 0,
        "last": str(tmp_path / "last.pt"),
        "best": str(tmp_path / "best.pt"),
    }
    for has_best in (False, True):
        if has_best:
            (tmp_path / "best.pt").write_bytes(b"x")
        out = io.StringIO()
        TrainDisplay(Console(file=out, width=200)).summary(summary)
        assert f"last: {tmp_path / 'last.pt'}" in out.getvalue()
        assert (f"best: {tmp_path / 'best.pt'}" in out.getvalue()) == has_best
        assert ("best: none yet" in out.getvalue()) == (not has_best)
