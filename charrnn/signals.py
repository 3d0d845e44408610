"""Ctrl-C and SIGTERM outside the training loop: one line, exit 128 + the signal, no traceback.

`python -m charrnn` (and the `charrnn` script) installs this before anything slow is imported
(typer, rich, then torch: most of the first 0.3 s), and the command line's main() keeps it;
training replaces it while it runs by its own handler, which first saves last.pt. Only what
Python does before it runs any of charrnn (a few milliseconds) is out of its reach.
"""

from __future__ import annotations

import signal
import sys


def quit_quietly(signum, frame) -> None:
    print(f"charrnn: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    raise SystemExit(128 + signum)


def install() -> None:
    """Ctrl-C and SIGTERM end charrnn with one line; a signal this process was started ignoring
    (a background job of a script) stays ignored, as Python itself leaves it."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, quit_quietly)
