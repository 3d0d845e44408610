"""Ctrl-C outside training: one line, exit 128 + the signal at once, registered clean-ups done."""

import signal
import subprocess
import sys

SCRIPT = """
import sys, time
from pathlib import Path
from charrnn import signals
signals.install()
folder, kept = Path(sys.argv[1]), Path(sys.argv[2])
folder.mkdir(); (folder / "ids.npy").write_bytes(b"x" * 1000); kept.write_text("kept")
with signals.removed_if_interrupted(folder):
    print("ready", flush=True)
    try:
        time.sleep(3600)
    finally:
        kept.write_text("a finally block ran")  # os._exit: it does not
"""


def test_an_interrupted_command_removes_what_it_registered_and_exits_at_once(tmp_path):
    folder, kept = tmp_path / "tmp-ids", tmp_path / "kept.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(folder), str(kept)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)  # at once: the block sleeps for an hour
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM and err == "charrnn: interrupted (SIGTERM)\n"
    assert not folder.exists()
    assert kept.read_text() == "kept"


def test_outside_the_block_nothing_is_removed(tmp_path):
    from charrnn import signals

    path = tmp_path / "f.tmp"
    path.write_text("x")
    with signals.removed_if_interrupted(path):
        pass
    assert signals._CLEANUPS == [] and path.exists()
