"""The HTTP side of `charrnn serve`: Starlette on uvicorn, the generation engine in a process of its own.

    GET  /                 the page (page.html: everything inline, nothing fetched from elsewhere)
    GET  /v1/models        the models served, in the OpenAI API's shape ({"object": "list", "data":
                           [{"id", "object": "model", "created", "owned_by"}]}) with `charrnn
                           info`'s fields beside (no paths of this machine)
    POST /v1/completions   the OpenAI API's completions (openai_api.py): any OpenAI client
    POST /v1/sample        {model, prime, length, temp, top_k, top_p, seed, stop, beam, beam_norm,
                           num_samples, unknown, stream}: streamed by default as newline-delimited
                           JSON, {"sample": b, "text": "..."} as the text is generated, then
                           {"done": true, "stopped": ..., ...}; with "stream": false, one object
    POST /v1/score         {model, text}: the loss of the text, as `charrnn eval --json`
    POST /v1/neurons       {model, text, state, top}: the cell-activation view of the text

Every request's streams go to the model's engine (sample/batch.py), which steps all of them as
one batch in a child process (sample/engine_process.py: in this one, the engine and the event
loop would take turns at Python's lock); the event loop only parses, waits and writes, so one
core serves HTTP while the engine computes. A client that goes away (a failed write, or the connection
closed while it waits) cancels its streams: their rows leave the batch at the next step.
Scores, activations and beam searches run in the thread pool, one core each.

A server on this machine is kept to it (guard.py): a request must name this server in its Host
(DNS rebinding), a foreign Origin is refused (no page elsewhere can make it work), POST bodies
are JSON and bounded, slow or idle connections are closed, their number is bounded, and
`--api-key` asks every /v1/ request for it. Errors are JSON: {"error": ..., "field": ...}.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from charrnn.errors import CharRNNError
from charrnn.sample.batch import Stream, config_streams
from charrnn.sample.engine_process import EngineUnavailable
from charrnn.serve.api import BadRequest, Limits, beam_answer, neurons, parse_sample, score
from charrnn.serve.guard import Guard, GuardedH11, Security, read_body
from charrnn.serve.models import ServedModel

FLUSH_SECONDS = 0.02  # a streamed answer is written at most this often (the first piece at once)


# ------------------------------------------------------------------ streams, from async code
class Waiter:
    """The async side of a request's streams: woken (from the engine's reader thread) when one ends,
    and able to tell when the client has gone."""

    def __init__(self, streams: list[Stream], request, engine):
        self.streams, self.request, self.engine = streams, request, engine
        self.loop = asyncio.get_running_loop()
        self.woken = asyncio.Event()
        for s in streams:
            s.on_end = self._ended
        self._gone = asyncio.ensure_future(self._client_gone())

    def _ended(self, stream: Stream) -> None:  # (the engine's reader thread)
        try:
            self.loop.call_soon_threadsafe(self.woken.set)
        except RuntimeError:  # the loop has closed (the server is stopping): nobody waits
            pass

    async def _client_gone(self) -> None:
        while True:
            message = await self.request.receive()
            if message["type"] == "http.disconnect":
                return

    @property
    def done(self) -> bool:
        return all(s.done.is_set() for s in self.streams)

    async def wait(self, seconds: float | None = None) -> bool:
        """Until a stream ends or `seconds` pass; False when the client has gone (`close` then
        cancels its streams)."""
        woken = asyncio.ensure_future(self.woken.wait())
        finished, _ = await asyncio.wait({woken, self._gone}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        self.woken.clear()
        return self._gone not in finished

    def cancel(self) -> None:
        self.engine.cancel(self.streams)

    def close(self) -> None:
        self._gone.cancel()
        if not self.done:
            self.cancel()


async def run_streams(model: ServedModel, streams: list[Stream], request) -> Waiter | None:
    """Submit `streams` to the model's engine and wait for all to end; None if the client left."""
    waiter = Waiter(streams, request, model.engine)
    try:
        model.engine.submit(streams)
        while not waiter.done:
            if not await waiter.wait():
                return None
        return waiter
    finally:
        waiter.close()


async def stream_pieces(model: ServedModel, streams: list[Stream], request) -> AsyncIterator[list[tuple[int, str]]]:
    """Submit `streams` and yield what each has added, [(index, text)], at most every
    FLUSH_SECONDS, until all have ended. Leaving early (the client gone) cancels them."""
    waiter = Waiter(streams, request, model.engine)
    sent = [0] * len(streams)
    try:
        model.engine.submit(streams)
        while True:
            done = waiter.done  # (read before the text: what ends a stream is written before)
            pieces = []
            for i, s in enumerate(streams):
                n = len(s.text)
                if n > sent[i]:
                    pieces.append((i, "".join(s.text[sent[i] : n])))
                    sent[i] = n
            if pieces:
                yield pieces
            if done:
                return
            if not await waiter.wait(FLUSH_SECONDS):
                return
    finally:
        waiter.close()


def stopped_of(streams: list[Stream]) -> str:
    """Why a request ended: stop (every sample reached a stop string), max_seconds, length, or
    error (the engine failed: the server's log says why)."""
    if any(s.stopped == "error" for s in streams):
        return "error"
    if all(s.stopped == "stop" for s in streams):
        return "stop"
    return "max_seconds" if any(s.stopped == "max_seconds" for s in streams) else "length"


# ------------------------------------------------------------------ the app
def make_app(models: dict[str, ServedModel], limits: Limits, security: Security):
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from charrnn.serve import openai_api

    page = resources.files("charrnn.serve").joinpath("page.html").read_bytes()

    async def home(request):
        return Response(page, media_type="text/html; charset=utf-8")

    async def list_models(request):
        return JSONResponse({"object": "list", "data": [m.openai_info for m in models.values()]})

    async def sample(request):
        return await sample_endpoint(request, models, limits)

    async def completions(request):
        return await openai_api.completions(request, models, limits)

    def in_threadpool(answer):  # score and neurons: a computation of its own, on one core
        async def endpoint(request):
            try:
                return JSONResponse(await run_in_threadpool(answer, await read_body(request), models))
            except BadRequest as exc:
                return _error(exc)

        return endpoint

    routes = [
        Route("/", home, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/sample", sample, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/score", in_threadpool(score), methods=["POST"]),
        Route("/v1/neurons", in_threadpool(neurons), methods=["POST"]),
    ]
    handlers = {404: _not_found, 405: _not_allowed, EngineUnavailable: _unavailable, Exception: _internal}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.security = security
    return Guard(app, security)


def _error(exc: BadRequest):
    from starlette.responses import JSONResponse

    return JSONResponse(exc.to_json(), status_code=exc.status)


async def _not_found(request, exc):
    from starlette.responses import JSONResponse

    what = (
        f"no such endpoint: {request.method} {request.url.path}"
        if request.method != "GET"
        else f"no such page: {request.url.path}"
    )
    return JSONResponse({"error": what, "field": None}, status_code=404)


async def _not_allowed(request, exc):
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"error": f"{request.method} is not allowed on {request.url.path}", "field": None},
        status_code=405,
        headers=getattr(exc, "headers", None),  # Allow: the methods that are
    )


async def _unavailable(request, exc):  # the engine's process could not be started again: said, not a bug
    from starlette.responses import JSONResponse

    return JSONResponse({"error": f"generation is unavailable: {exc}", "field": None}, status_code=503)


async def _internal(request, exc):  # a bug: the client gets a 500 and the server goes on
    import traceback

    from starlette.responses import JSONResponse

    traceback.print_exception(exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}", "field": None}, status_code=500)


# ------------------------------------------------------------------ /v1/sample
async def sample_endpoint(request, models: dict[str, ServedModel], limits: Limits):
    """charrnn's own request: streamed as newline-delimited JSON, or one object."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, Response, StreamingResponse

    from charrnn.sample.generate import prime_ids

    try:
        req = parse_sample(await read_body(request), models, limits)
    except BadRequest as exc:
        return _error(exc)
    cfg, model = req.cfg, req.model
    if cfg.beam:  # (the best beam is known only at the end: nothing to stream before it)
        try:
            answer = await run_in_threadpool(beam_answer, req, limits)
        except BadRequest as exc:
            return _error(exc)
        if not req.stream:
            return JSONResponse(answer)
        return StreamingResponse(_beam_lines(answer), media_type="application/x-ndjson; charset=utf-8")
    ids, echo, _ = prime_ids(model.vocab, cfg.prime, req.unknown)
    started = time.monotonic()
    streams = config_streams(cfg, ids, deadline=model.engine.clock() + limits.max_seconds)
    if req.stream:
        return StreamingResponse(
            _sample_lines(request, model, streams, echo, started),
            media_type="application/x-ndjson; charset=utf-8",
            headers={"Cache-Control": "no-store"},
        )
    if await run_streams(model, streams, request) is None:
        return Response(status_code=499)  # (nobody reads it)
    if stopped_of(streams) == "error":
        return JSONResponse(
            {"error": "internal error while generating (the server's log says why)", "field": None}, status_code=500
        )
    samples = [echo + s.generated for s in streams]
    seconds = round(time.monotonic() - started, 4)
    return JSONResponse(
        {
            "model": model.name,
            "text": samples[0],
            "samples": samples,
            "stopped": stopped_of(streams),
            "seconds": seconds,
        }
    )


async def _sample_lines(request, model: ServedModel, streams: list[Stream], echo: str, started: float):
    if echo:
        yield "".join(_line({"sample": b, "text": echo}) for b in range(len(streams)))
    async for pieces in stream_pieces(model, streams, request):
        yield "".join(_line({"sample": b, "text": text}) for b, text in pieces)
    done = {"done": True, "model": model.name, "stopped": stopped_of(streams)}
    yield _line({**done, "chars": sum(len(s.text) for s in streams), "seconds": round(time.monotonic() - started, 4)})


async def _beam_lines(answer):
    for b, text in enumerate(answer["samples"]):
        yield _line({"sample": b, "text": text})
    done = {"done": True, "model": answer["model"], "stopped": "beam"}
    yield _line({**done, "chars": sum(map(len, answer["samples"])), "seconds": answer["seconds"]})


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ listening
def check_options(
    host: str, port: int, max_length: int, max_seconds: float, api_key: str | None, cors_origin: str | None
) -> None:
    """`charrnn serve`'s options, checked before anything is loaded: a CharRNNError for a bad one.
    A host other machines can reach needs an API key."""
    import math
    from urllib.parse import urlsplit

    from charrnn.serve.guard import is_loopback

    if max_length < 1:
        raise CharRNNError(f"--max-length {max_length} must be at least 1")
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise CharRNNError(f"--max-seconds {max_seconds} must be a positive number of seconds")
    if not 0 <= port <= 65535:
        raise CharRNNError(f"--port {port} must be in [0, 65535] (0: a free one)")
    if api_key is not None and (not api_key or not api_key.isprintable() or " " in api_key):
        raise CharRNNError("--api-key must be a non-empty string of printable characters without spaces")
    if cors_origin is not None:
        parts = urlsplit(cors_origin)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path not in ("", "/")
            or parts.query
            or cors_origin.endswith("/")
        ):
            raise CharRNNError(
                f"--cors-origin {cors_origin!r} must be an origin: a scheme and a host, e.g. http://localhost:3000 "
                "(no path)"
            )
    if not is_loopback(host) and api_key is None:
        raise CharRNNError(
            f"--host {host} lets other machines use the models: give --api-key KEY (or CHARRNN_API_KEY) so that only "
            "those who know it can"
        )


class Server:
    """A bound socket and the uvicorn server that will serve the app on it."""

    def __init__(self, models: dict[str, ServedModel], host: str, port: int, limits: Limits, security: Security):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named, not 0: the connections accepted inherit it, and asyncio turns Nagle's
        # algorithm off (TCP_NODELAY) only on sockets that say they are TCP. With it on, a reply's
        # last small write waited for the client's delayed ACK: 44 ms a request on a kept-alive
        # connection, against 6 ms on a new one (issue 26, item 6).
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError:
            self.sock.close()
            raise
        self.sock.listen(security.backlog)
        self.models = models
        bound_host, bound_port = self.sock.getsockname()[:2]
        security.bind(bound_host, bound_port)
        self.url = f"http://[{bound_host}]:{bound_port}/" if ":" in bound_host else f"http://{bound_host}:{bound_port}/"
        config = uvicorn.Config(
            make_app(models, limits, security),
            http=GuardedH11.configured(security),
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            limit_concurrency=security.max_connections,
            timeout_keep_alive=security.keep_alive_seconds,
            h11_max_incomplete_event_size=security.max_header_bytes,
        )
        self.uvicorn = uvicorn.Server(config)
        for model in models.values():  # (each reads its weights from us, then loads while we go on)
            model.engine.start()

    def wait_ready(self) -> None:
        """Until every model's engine processes are ready (a CharRNNError if none of a model's can
        start; one line for each that could not, once)."""
        if getattr(self, "_ready", False):
            return
        self._ready = True
        for model in self.models.values():
            try:
                failed = model.engine.wait_ready()
            except EngineUnavailable as exc:
                raise CharRNNError(f"cannot serve {model.name}: {exc}") from None
            for why in failed or ():  # (some of its engines: the others serve it)
                print(f"charrnn: {why}; {model.name} is served by its other engines", file=sys.stderr)

    def serve_forever(self) -> None:
        """Serve until stopped, once every engine is ready (connections made before then wait in
        the listening socket's queue)."""
        self.wait_ready()
        self.uvicorn.run(sockets=[self.sock])

    def server_close(self) -> None:
        for model in self.models.values():
            model.engine.close()
        self.sock.close()


def start(
    models: dict[str, ServedModel], host: str, port: int, limits: Limits, security: Security | None = None
) -> Server:
    """A server bound to (host, port) (port 0: one the system picks), not yet serving."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise CharRNNError(f"charrnn serve needs Starlette and uvicorn ({exc}): pip install 'charrnn[serve]'") from None
    return Server(models, host, port, limits, security or Security())
