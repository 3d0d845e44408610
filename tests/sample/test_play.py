"""`charrnn play`: the session's logic on a stub, and the real command in a pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

import pytest
from conftest import invoke, run_cli, words_text

from charrnn.config import SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.sample.generate import generate_text
from charrnn.sample.play import Session, Settings, apply_command, run_session
from charrnn.sample.torch_engine import TorchStepper
from sample.test_beam import tiny_model


def test_commands_change_the_settings_and_bad_ones_change_nothing():
    s = Settings()
    s = apply_command(s, ":temp 0.5")
    s = apply_command(s, ":top-k 3")
    s = apply_command(s, ":seed 7")
    s = apply_command(s, ":keep on")
    assert (s.temp, s.top_k, s.seed, s.keep) == (0.5, 3, 7, True)
    assert "temp 0.5 · top-k 3" in s.status() and "seed 7" in s.status() and "keep on" in s.status()
    assert apply_command(s, ":seed random").seed is None
    for bad, why in (
        (":temp hot", "not a valid value"),
        (":temp -1", "--temp -1.0 must be"),
        (":beam -2", "--beam -2 must be"),
        (":keep maybe", "not a valid value"),
        (":colour red", "unknown command :colour"),
        (":beam 1000000", "at most 32"),  # (1,000,000 took 4.4 GB)
    ):
        with pytest.raises(CharRNNError, match=why):
            apply_command(s, bad)


def scripted(lines):
    """A read_line that answers with `lines`, then Ctrl-D."""
    queue = list(lines)

    def read_line(prompt: str) -> str:
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return read_line


def test_a_session_answers_and_keeps_the_state_only_when_asked():
    vocab = Vocab(tuple("abcd"))  # (no newline: the session's own newlines end the answers)
    out, said = [], []
    session = Session(TorchStepper(tiny_model("lstm", 2)), vocab, Settings(length=8, seed=4))
    run_session(
        session, scripted(["ab", ":keep on", "ab", "", KeyboardInterrupt(), ":keep off", "ab"]), out.append, said.append
    )
    text = "".join(out).split("\n")
    fresh = generate_text(TorchStepper(tiny_model("lstm", 2)), vocab, SampleConfig(length=8, seed=4, prime="ab"))[0]
    assert text[0] == fresh  # the prime, then its continuation
    assert text[1] == fresh  # keep on, but nothing to keep yet
    # an empty line goes on from the state after the last text: as if that text were the prime
    went_on = generate_text(TorchStepper(tiny_model("lstm", 2)), vocab, SampleConfig(length=8, seed=4, prime=fresh))[0]
    assert text[2] == went_on[len(fresh) :]
    assert text[3:] == ["", fresh, "", ""]  # Ctrl-C at the prompt: a new line; keep off: afresh again; Ctrl-D
    assert any("keep on" in line for line in said) and said[0].startswith("charrnn play")


def test_without_a_terminal_it_points_to_sample(tmp_path):
    result = run_cli("play", str(tmp_path / "none.pt"), input="hello\n")
    err = result.stderr.decode()
    assert result.returncode == 2 and "needs a terminal" in err and "charrnn sample" in err and err.count("\n") == 1


def take_terminal() -> None:
    """In the child: make the pseudo-terminal its controlling terminal, so that Ctrl-C typed
    there is a SIGINT to it, as in a real terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def read_until(fd: int, wanted, timeout: float = 60.0) -> bytes:
    """What the terminal shows until `wanted` (bytes, or a test of all that was read) is there."""
    done = wanted if callable(wanted) else lambda seen: wanted in seen
    seen, end = b"", time.monotonic() + timeout
    while not done(seen):
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"waited for {wanted!r}; the screen shows:\n{seen.decode(errors='replace')[-2000:]}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other end closed
                break
            seen += chunk
    return seen


def test_the_real_session_in_a_pseudo_terminal(tmp_path):
    corpus = tmp_path / "w.txt"
    corpus.write_text(words_text(6000), encoding="utf-8")
    flags = [
        "--layers",
        "1",
        "--hidden",
        "32",
        "--embed",
        "16",
        "--seq-len",
        "16",
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]
    assert (
        invoke(
            "train", str(corpus), *flags, "--max-steps", "20", "--eval-every", "20", "--out", str(tmp_path / "ck")
        ).returncode
        == 0
    )
    main, child = pty.openpty()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb"}
    process = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "play", str(tmp_path / "ck" / "w")],
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(child)
    try:
        read_until(main, b"> ")
        os.write(main, b":length 30\r")
        assert b"length 30" in read_until(main, b"> ")
        os.write(main, b"The \r")
        echo, shown = read_until(main, b"> ").split(b"\r\n", 1)  # the terminal's echo of the line, then the session's
        answer = shown.rsplit(b"temp 0.8", 1)[0].replace(b"\r\n", b"\n").decode()  # (up to the status line)
        assert (
            echo == b"The "
            and answer.startswith("The ")
            and len(answer) == len("The ") + 30 + 1
            and answer.endswith("\n")
        ), shown
        os.write(main, b":length 100000000\r")
        read_until(main, b"> ")
        os.write(main, b"the\r")
        read_until(main, lambda seen: len(seen.partition(b"the\r\n")[2]) >= 100)  # 100 characters of the answer:
        os.write(main, b"\x03")  # Ctrl-C while it writes: the terminal sends SIGINT to the session
        read_until(main, lambda seen: b"> " in seen.partition(b"(stopped)")[2])  # (one read may bring both)
        assert process.poll() is None  # still in the session
        # A storm of Ctrl-C while it writes (and after): the text stops, the session stays.
        os.write(main, b"the\r")
        read_until(main, lambda seen: len(seen.rpartition(b"the\r\n")[2]) >= 100)
        for _ in range(300):  # (spread out: signals sent at once would merge into a few)
            os.kill(process.pid, signal.SIGINT)
            time.sleep(0.002)
        os.write(main, b":length 5\r")  # (typed after the storm: its status line says the session took it)
        screen = read_until(main, lambda seen: b"> " in seen.partition(b"length 5 ")[2])
        assert process.poll() is None and b"(stopped)" in screen
        assert b"Traceback" not in screen and b"excepthook" not in screen
        os.write(main, b"\x04")  # Ctrl-D at an empty prompt: leave
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        os.close(main)
