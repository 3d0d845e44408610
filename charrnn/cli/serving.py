"""`charrnn serve`: its flags, registered on the app by `register(app)`; the server is charrnn/serve/.

It imports torch and the library only inside the command, so `charrnn --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.errors import CharRNNError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    checkpoints: Annotated[Optional[list[Path]], typer.Argument(metavar="CKPT", help="Checkpoints (.pt) or run folders to serve, each by its run folder's name. \\[default: the newest best.pt under checkpoints/, as `sample`]", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but a loopback address (127.0.0.1, ::1, localhost) lets other machines use the models (there is no authentication).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 lets the system choose a free one (printed).")] = 8000,
    max_length: Annotated[int, typer.Option(help="The most characters a request may ask to generate (per sample).")] = 2000,
    max_seconds: Annotated[float, typer.Option(help="The most seconds one request may generate for; a sample that runs out ends there (a beam search fails).")] = 30.0,
) -> None:
    """Serve models over HTTP, with a page to play with them at /.

    POST /v1/sample streams generated text; GET /v1/models, POST /v1/score and POST /v1/neurons
    describe the models, score a text and show the cell activations. Ctrl-C stops it.
    """
    from charrnn.cli.console import fail as _fail, stderr as _stderr

    try:
        _serve(checkpoints or [], host, port, max_length, max_seconds, _stderr())
    except CharRNNError as exc:
        _fail(exc)


def _serve(checkpoints: list[Path], host: str, port: int, max_length: int, max_seconds: float, console) -> None:
    import math

    if max_length < 1:
        raise CharRNNError(f"--max-length {max_length} must be at least 1")
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise CharRNNError(f"--max-seconds {max_seconds} must be a positive number of seconds")
    if not 0 <= port <= 65535:
        raise CharRNNError(f"--port {port} must be in [0, 65535] (0: a free one)")
    from charrnn.machine.threads import limit_blas_threads

    limit_blas_threads(1)  # one stream per request: one core each (see server.py)
    from charrnn.serve.api import Limits
    from charrnn.serve.models import load_models
    from charrnn.serve.server import is_local, start

    if not checkpoints:
        from charrnn.sample.engines import newest

        try:
            checkpoints = [newest("checkpoints")]
        except CharRNNError:
            raise CharRNNError("no checkpoint under checkpoints/: train a model first (charrnn train FILE) or name one (charrnn serve CKPT)") from None
        console.print(f"serving {checkpoints[0]} (the newest {checkpoints[0].name} under checkpoints/; name checkpoints to choose)", soft_wrap=True)
    models = load_models(checkpoints)
    try:
        server = start(models, host, port, Limits(max_length, max_seconds))
    except OSError as exc:
        raise CharRNNError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        if not is_local(host):
            console.print(f"warning: listening on {host}, not only on this machine: anyone who can reach it may use the models (there is no authentication)", soft_wrap=True)
        names = ", ".join(f"{name} ({model.path})" for name, model in models.items())
        console.print(f"serving {names} at {server.url} (Ctrl-C stops it)", soft_wrap=True)
        server.serve_forever()
    finally:
        server.server_close()
