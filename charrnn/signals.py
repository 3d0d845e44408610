"""Ctrl-C and SIGTERM outside the training loop: one line, exit 128 + the signal, no traceback.

`python -m charrnn` (and the `charrnn` script) installs this before anything slow is imported
(typer, rich, then torch: most of the first 0.3 s), and the command line's main() keeps it;
training replaces it while it runs by its own handler, which first saves last.pt. Only what
Python does before it runs any of charrnn (a few milliseconds) is out of its reach.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

_CLEANUPS: list = []  # what an interrupted command removes on its way out (see removed_if_interrupted)


def quit_quietly(signum, frame) -> None:
    """One line, the registered clean-ups, and exit 128 + signum at once (os._exit). Not by
    raising SystemExit: Python may run a signal handler inside a finalizer, which reports the
    exception and carries on, or in the middle of an import (torch's, numpy's), which leaves a
    half-made module behind that fails later or aborts at teardown."""
    print(f"charrnn: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    for clean in reversed(_CLEANUPS):
        try:
            clean()
        except Exception:  # best effort: the exit matters more
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed pipe: nothing more to say
            pass
    os._exit(128 + signum)


@contextlib.contextmanager
def removed_if_interrupted(path):
    """While inside: if Ctrl-C or SIGTERM ends charrnn, `path` (a file or a folder) is removed
    first (a half-written temporary file, a temporary folder)."""
    path = Path(path)

    def clean() -> None:
        if path.is_dir():
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    _CLEANUPS.append(clean)
    try:
        yield path
    finally:
        _CLEANUPS.remove(clean)


def install() -> None:
    """Ctrl-C and SIGTERM end charrnn with one line; a signal this process was started ignoring
    (a background job of a script) stays ignored, as Python itself leaves it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, quit_quietly)
