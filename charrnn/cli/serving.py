"""`charrnn serve`: its flags, registered on the app by `register(app)`; the server is charrnn/serve/.

It imports torch and the library only inside the command, so `charrnn --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charrnn.errors import CharRNNError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    checkpoints: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="CKPT",
            help=(
                "Checkpoints (.pt) or run folders to serve, each by its run folder's name. \\[default: the newest "
                "best.pt under checkpoints/, as `sample`]"
            ),
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            help=(
                "Address to listen on. Anything but a loopback address (127.0.0.1, ::1, localhost) lets other "
                "machines use the models, and needs --api-key."
            )
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 lets the system choose a free one (printed).")] = 8000,
    max_length: Annotated[
        int, typer.Option(help="The most characters a request may ask to generate (per sample).")
    ] = 2000,
    max_seconds: Annotated[
        float,
        typer.Option(
            help=(
                "The most seconds one request may take, its prime included; a sample that runs out ends there (a "
                "beam search fails)."
            )
        ),
    ] = 30.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CHARRNN_API_KEY",
            help=(
                "Every /v1/ request must send `Authorization: Bearer KEY` (OpenAI clients: api_key=KEY). Needed to "
                "listen beyond this machine. The page takes it as #key=KEY after its "
                "address."
            ),
            show_default=False,
        ),
    ] = None,
    cors_origin: Annotated[
        str | None,
        typer.Option(
            help=(
                "Let the pages of this one origin (e.g. http://localhost:3000) call the API from a browser; others "
                "are refused. \\[default: none: only the page served at /]"
            ),
            show_default=False,
        ),
    ] = None,
    engines: Annotated[
        str,
        typer.Option(
            help=(
                "Generation engines (processes) per model, each stepping its streams as one batch (~240 MB each): a "
                "number (at most one a core), or auto: one a core, shared among the models, at most 4 a model (1 "
                "where the load cannot be measured: not Linux). A second engine takes requests only while a core is "
                "free for it; one client alone gets every core."
            ),
        ),
    ] = "auto",
) -> None:
    """Serve models over HTTP: the OpenAI API's /v1/completions, charrnn's own endpoints, and a page at /.

    POST /v1/completions speaks the OpenAI API (any OpenAI client: base_url http://HOST:PORT/v1);
    POST /v1/sample streams generated text; GET /v1/models, POST /v1/score and POST /v1/neurons
    describe the models, score a text and show the cell activations. Every request's samples are
    rows of one batch, stepped together. Ctrl-C stops it.
    """
    from charrnn.cli.console import fail as _fail
    from charrnn.cli.console import stderr as _stderr

    try:
        _serve(checkpoints or [], host, port, max_length, max_seconds, _stderr(), api_key, cors_origin, engines)
    except CharRNNError as exc:
        _fail(exc)


def _serve(
    checkpoints: list[Path],
    host: str,
    port: int,
    max_length: int,
    max_seconds: float,
    console,
    api_key: str | None = None,
    cors_origin: str | None = None,
    engines: str = "auto",
) -> None:
    from charrnn.sample.engine_process import engine_count
    from charrnn.serve.guard import is_loopback
    from charrnn.serve.server import check_options

    check_options(host, port, max_length, max_seconds, api_key, cors_origin)
    count, said = engine_count(engines, models=max(1, len(checkpoints)))
    from charrnn.machine.threads import limit_blas_threads

    # One core to start with; the engine's process then uses the cores free (sample/batch.py).
    limit_blas_threads(1)
    from charrnn.serve.api import Limits
    from charrnn.serve.guard import Security as _Security
    from charrnn.serve.models import load_models
    from charrnn.serve.server import start

    if not checkpoints:
        from charrnn.sample.engines import newest

        try:
            checkpoints = [newest("checkpoints")]
        except CharRNNError:
            raise CharRNNError(
                "no checkpoint under checkpoints/: train a model first (charrnn train FILE) or name one (charrnn "
                "serve CKPT)"
            ) from None
        console.print(
            f"serving {checkpoints[0]} (the newest {checkpoints[0].name} under checkpoints/; name checkpoints to "
            "choose)",
            soft_wrap=True,
        )
    if said:
        console.print(said, soft_wrap=True)
    models = load_models(checkpoints, engines=count)
    try:
        server = start(
            models, host, port, Limits(max_length, max_seconds), _Security(api_key=api_key, cors_origin=cors_origin)
        )
    except OSError as exc:
        raise CharRNNError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        if not is_loopback(host):
            console.print(
                f"warning: listening on {host}, not only on this machine: anyone who can reach it and knows the API "
                "key may use the models",
                soft_wrap=True,
            )
        server.wait_ready()  # (the engines' processes: "serving" is said once it is true)
        names = ", ".join(f"{name} ({model.path})" for name, model in models.items())
        console.print(
            f"serving {names} at {server.url} (Ctrl-C stops it); OpenAI clients: base_url {server.url}v1",
            soft_wrap=True,
        )
        server.serve_forever()
    finally:
        server.server_close()
