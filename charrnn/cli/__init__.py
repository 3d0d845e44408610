"""cli/: the command line, on top of everything and imported by nothing of ours. The Typer app
(app.py), one module per group of commands (and training_run.py, a training run on the
console, for training.py), the shared console and error handling (console.py), the rich
progress on stderr (display.py), the tables of `info` and `bench` (tables.py) and how losses
and durations are written (formats.py).

May import: every part. torch is imported only inside the commands that need it, so
`charrnn --help` starts fast.
"""

from charrnn.cli.app import app, main

__all__ = ["app", "main"]
