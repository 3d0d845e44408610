"""A run folder has one writer, and a full disk leaves it resumable or clean.

A second `train` into a folder that a running training holds is refused with its PID, whatever
its flags, and changes nothing; `kill -9` leaves no stale lock; readers need no lock. A write that
fails on a full disk says so in one line, keeps the folder resumable (or removes what a new run
wrote, when nothing of it can be resumed) and names the command that goes on.
"""

import errno
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
import types

import pytest
from conftest import TINY, invoke, words_text
from store.test_checkpoint import start_training, wait_for

from charrnn.errors import CharRNNError
from charrnn.store import checkpoint
from charrnn.store.files import atomic_write
from charrnn.training import runlock
from charrnn.training.runlock import LOCK_HOLDER, RunLock


def wait_for_lock(folder, proc, timeout=60):
    """Until `proc` holds the run folder's lock (its PID is in the lock file)."""
    deadline = time.time() + timeout
    while True:
        try:
            if (folder / ".lock").read_text().strip() == str(proc.pid):
                return
        except OSError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "training never took the lock"
        time.sleep(0.02)


def steps_in(metrics):
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "same.txt"
    path.write_text(words_text(20000), encoding="utf-8")
    return path


def test_a_second_training_into_a_running_run_is_refused_and_changes_nothing(tmp_path, corpus):
    out = tmp_path / "ck"
    folder = out / "same"
    first = start_training(corpus, out, "--max-epochs", "1000", "--seed", "1")
    try:
        wait_for_lock(folder, first)
        wait_for(folder / "best.pt", first)
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = invoke(
                "train", str(corpus), *TINY, "--max-steps", "6", "--eval-every", "3", "--out", str(out), *extra
            )
            err = second.stderr.decode()
            assert second.returncode == 2 and f"is being written by another charrnn train (PID {first.pid})" in err, (
                extra,
                err,
            )
            assert err.strip().count("\n") == 0 and "Traceback" not in err
        for reader in (
            ["info", str(folder)],
            ["sample", "-c", str(folder), "--length", "5"],
            ["runs", "--root", str(out)],
        ):
            assert invoke(*reader).returncode == 0, reader  # readers take no lock
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err.decode()
    last = checkpoint.load(folder / "last.pt")
    assert last.meta["config"]["seed"] == 1 and last.meta["progress"]["step"] > 3  # the first run's, whole
    steps = steps_in(folder / "metrics.jsonl")
    assert steps == sorted(set(steps)) and steps[0] == 3, steps  # one writer: no step twice
    assert not (folder / ".lock").exists()  # the lock file goes with its holder


def test_kill_9_of_the_writer_leaves_no_stale_lock(tmp_path, corpus):
    out = tmp_path / "ck"
    folder = out / "same"
    first = start_training(corpus, out, "--max-epochs", "1000")
    wait_for_lock(folder, first)
    wait_for(folder / "last.pt", first)
    first.kill()
    first.wait()
    assert (folder / ".lock").exists()  # left behind, but no process holds its lock
    step = checkpoint.load(folder / "last.pt").meta["progress"]["step"]
    resumed = invoke("train", str(corpus), "--resume", "--max-steps", str(step + 2), "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert checkpoint.load(folder / "last.pt").meta["progress"]["step"] == step + 2


def test_the_lock_in_one_process(tmp_path, monkeypatch):
    folder = tmp_path / "out" / "run"
    held = RunLock(folder)
    held.acquire()
    assert (folder / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(CharRNNError, match=f"PID {os.getpid()}"):
        RunLock(folder).acquire()  # another open file: refused, even in the same process
    monkeypatch.setenv(LOCK_HOLDER, str(os.getpid()))
    RunLock(folder).acquire()  # held for us (train --nproc: the launcher holds it for its workers)
    monkeypatch.delenv(LOCK_HOLDER)
    held.release()
    assert not (tmp_path / "out").exists()  # nothing was written: the folders it made are gone

    with RunLock(folder) as again:
        again.acquire()
        (folder / "metrics.jsonl").write_text("")
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.jsonl"]  # a run that wrote keeps its folder


def test_without_fcntl_the_lock_falls_back_to_msvcrt(tmp_path, monkeypatch):
    """Windows has no fcntl: msvcrt.locking on one byte, away from the PID (mocked here)."""
    taken = set()

    def locking(fd, mode, size):
        key = os.fstat(fd).st_ino
        if key in taken:
            raise PermissionError(13, "Permission denied")
        taken.add(key)

    monkeypatch.setattr(runlock, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(LK_NBLCK=2, locking=locking))
    first = RunLock(tmp_path / "run")
    first.acquire()
    with pytest.raises(CharRNNError, match=f"PID {os.getpid()}"):
        RunLock(tmp_path / "run").acquire()
    first.release()


def test_a_file_system_that_cannot_lock_trains_unlocked(tmp_path, monkeypatch):
    def flock(fd, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock, "fcntl", types.SimpleNamespace(LOCK_EX=2, LOCK_NB=4, flock=flock))
    with RunLock(tmp_path / "run") as lock:
        lock.acquire()  # not refused: no other process can be named, and every run would be
        assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())


def prepared(corpus):
    """Prepare the corpus first, so that only the run folder meets the file-size limit."""
    assert invoke("prepare", str(corpus)).returncode == 0


def train_with_file_size_limit(limit, *args):
    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "charrnn", "train", *args], capture_output=True, preexec_fn=small_files, timeout=120
    )


def test_a_full_disk_on_the_first_save_leaves_no_run_and_says_to_start_again(tmp_path, corpus):
    prepared(corpus)
    out = tmp_path / "ck"
    args = [str(corpus), *TINY, "--max-steps", "8", "--eval-every", "4", "--out", str(out)]
    result = train_with_file_size_limit(20_000, *args)  # room for metrics, not for a checkpoint
    err = result.stderr.decode()
    last = err.strip().splitlines()[-1]
    assert result.returncode == 1 and f"disk full while writing {out / 'same' / 'best.pt'} (File too large)" in last, (
        err
    )
    assert "Traceback" not in err and "inline_container" not in err and "enforce fail" not in err
    assert not out.exists()  # clean: a plain train starts it again, no --overwrite needed
    command = shlex.split(last.split("start again with: ", 1)[1])
    assert command[0] == "charrnn" and command[1:] == ["train", *args]
    assert invoke(*command[1:]).returncode == 0


def test_a_full_disk_on_the_first_last_pt_keeps_the_run_resumable(tmp_path, corpus, monkeypatch):
    """best.pt was written, last.pt was not: best.pt is a whole checkpoint, so it becomes last.pt
    too (a hard link: no room needed) and --resume goes on from its step."""
    out = tmp_path / "ck"
    folder = out / "same"
    save = checkpoint.save

    def full_for_last(ckpt, path):
        if path.name != "last.pt":
            return save(ckpt, path)
        with atomic_write(path, "checkpoint"):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full_for_last)
    result = invoke(
        "train", str(corpus), *TINY, "--max-steps", "8", "--eval-every", "4", "--save-every", "8", "--out", str(out)
    )
    err = result.stderr.decode()
    assert (
        result.returncode == 1 and f"disk full while writing {folder / 'last.pt'} (No space left on device)" in err
    ), err
    assert "once there is room, resume with: charrnn " in err and err.rstrip().endswith("--resume")
    monkeypatch.setattr(checkpoint, "save", save)
    assert checkpoint.load(folder / "last.pt").meta["progress"] == checkpoint.load(folder / "best.pt").meta["progress"]
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt", "metrics.jsonl"]
    resumed = invoke("train", str(corpus), "--resume", "--max-steps", "12", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert steps_in(folder / "metrics.jsonl") == [4, 8, 12]


def test_a_full_disk_on_the_first_metrics_line_leaves_no_run(tmp_path, corpus, monkeypatch):
    import builtins

    from charrnn.store import run_folder as writer  # (where metrics.jsonl is opened)

    def full_for_metrics(path, *args, **kwargs):
        if str(path).endswith("metrics.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(writer, "open", full_for_metrics, raising=False)
    out = tmp_path / "ck"
    result = invoke("train", str(corpus), *TINY, "--max-steps", "8", "--eval-every", "4", "--out", str(out))
    err = result.stderr.decode()
    assert (
        result.returncode == 1
        and f"disk full while writing {out / 'same' / 'metrics.jsonl'} (No space left on device)" in err
    ), err
    assert "nothing of this run was kept: once there is room, start again with: charrnn " in err
    assert not out.exists()
