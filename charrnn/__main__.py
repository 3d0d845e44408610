"""`python -m charrnn` is the same as the `charrnn` command (whose script starts here too).

Run from a checkout with a Python that lacks the dependencies (the system's python3, say) after
`make setup`, it hands over once to the project's .venv/bin/python, which has them.
"""

from charrnn.signals import install as quit_quietly_on_signals

quit_quietly_on_signals()  # first: a Ctrl-C while the rest loads (typer, torch) is one line, not a traceback

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HOPPED = "CHARRNN_VENV_HOP"  # set for the hand-over: it happens at most once


def _project_python() -> "str | None":
    root = Path(__file__).resolve().parent.parent
    for candidate in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" / "python.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


try:
    from charrnn.cli import main
except ModuleNotFoundError as exc:  # e.g. the system python, run from a clone
    venv = _project_python()
    if venv and not os.environ.get(HOPPED):
        os.environ[HOPPED] = "1"
        os.execv(venv, [venv, "-m", "charrnn", *sys.argv[1:]])
    print(
        f"charrnn: this Python ({sys.executable}) lacks charrnn's dependencies (no module {exc.name!r}); "
        "run `make setup` and use .venv/bin/charrnn, or `pip install -e .`",
        file=sys.stderr,
    )
    raise SystemExit(1) from None

if __name__ == "__main__":
    main()
