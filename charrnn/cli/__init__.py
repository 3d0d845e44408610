"""cli/: the command line, on top of everything and imported by nothing of ours. The Typer app
(app.py), one module per group of commands, the shared console and error handling
(console.py) and the rich progress and tables on stderr (display.py).

May import: every part. torch is imported only inside the commands that need it, so
`charrnn --help` starts fast.
"""

from charrnn.cli.app import app, main

__all__ = ["app", "main"]
