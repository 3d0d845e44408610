"""The HTTP side of `charrnn serve`, on the standard library's ThreadingHTTPServer.

    GET  /             the page (page.html: everything inline, nothing fetched from elsewhere)
    GET  /v1/models    the models served, with `charrnn info`'s fields
    POST /v1/sample    {model, prime, length, temp, top_k, top_p, seed, stop, beam, beam_norm,
                       num_samples, unknown, stream}: streamed by default as newline-delimited
                       JSON in HTTP chunks, {"sample": b, "text": "..."} as the text is
                       generated, then {"done": true, "stopped": ..., ...}; with
                       "stream": false, one JSON object
    POST /v1/score     {model, text}: the loss of the text, as `charrnn eval --json`
    POST /v1/neurons   {model, text, state, top}: the cell-activation view of the text

Every request has a thread of its own (and its own stepper), so a long one does not hold up a
short one; each thread's NumPy and torch work runs on one core (one stream is matrix-vector
products, which more threads do not speed up). Errors are JSON: {"error": ..., "field": ...}.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable
from urllib.parse import urlsplit

from charrnn.serve.api import BadRequest, Generation, Limits, neurons, parse_sample, sample_all, score
from charrnn.serve.models import ServedModel

MAX_BODY = 1 << 20  # bytes of a request body
FLUSH_SECONDS = 0.02  # a streamed answer is written at most this often (the first piece at once)


def is_local(host: str) -> bool:
    """Whether listening on `host` keeps the server to this machine (a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


class Server(ThreadingHTTPServer):
    daemon_threads = True  # a request still running does not keep Ctrl-C waiting
    allow_reuse_address = True
    request_queue_size = 128  # connections waiting to be accepted (socketserver's 5 resets a burst of 16 clients)

    def __init__(self, address: tuple[str, int], models: dict[str, ServedModel], limits: Limits):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.models, self.limits = models, limits
        self.page = resources.files("charrnn.serve").joinpath("page.html").read_bytes()
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server
    server_version = "charrnn"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the terminal shows the URL only
        pass

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif path == "/v1/models":
            self._json(200, {"models": [m.info for m in self.server.models.values()]})
        else:
            self._json(404, {"error": f"no such page: {path}", "field": None})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        routes: dict[str, Callable[[bytes], None]] = {"/v1/sample": self._sample, "/v1/score": self._score, "/v1/neurons": self._neurons}
        try:
            body = self._body()
            if path not in routes:
                raise BadRequest(None, f"no such endpoint: POST {path}", status=404)
            routes[path](body)
        except BadRequest as exc:
            self._json(exc.status, exc.to_json())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug: the client gets a 500 and the server goes on
            traceback.print_exc()
            self._json(500, {"error": f"internal error: {type(exc).__name__}: {exc}", "field": None})

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise BadRequest(None, "a POST needs a Content-Length", status=411)
        if int(length) > MAX_BODY:
            self.close_connection = True
            raise BadRequest(None, f"the body of {int(length):,} bytes is more than {MAX_BODY:,}", status=413)
        return self.rfile.read(int(length))

    def _sample(self, body: bytes) -> None:
        request = parse_sample(body, self.server.models, self.server.limits)
        if not request.stream:
            self._json(200, sample_all(request, self.server.limits))
            return
        generation = Generation(request, self.server.limits)
        pieces = iter(generation)
        first = next(pieces, None)  # (an error before the first piece is still a clean 4xx)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        pending: dict[int, str] = {}
        last_write = 0.0
        item = first
        while item is not None:
            b, piece = item
            pending[b] = pending.get(b, "") + piece
            if time.monotonic() - last_write >= FLUSH_SECONDS:
                self._chunk("".join(_line({"sample": k, "text": v}) for k, v in sorted(pending.items())))
                pending.clear()
                last_write = time.monotonic()
            item = next(pieces, None)
        tail = "".join(_line({"sample": k, "text": v}) for k, v in sorted(pending.items()))
        done = {"done": True, "model": request.model.name, "stopped": generation.stopped, "chars": generation.chars, "seconds": round(generation.seconds, 4)}
        self._chunk(tail + _line(done))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _score(self, body: bytes) -> None:
        self._json(200, score(body, self.server.models))

    def _neurons(self, body: bytes) -> None:
        self._json(200, neurons(body, self.server.models))

    # ------------------------------------------------------------------ writing
    def _chunk(self, text: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def start(models: dict[str, ServedModel], host: str, port: int, limits: Limits) -> Server:
    """A server bound to (host, port) (port 0: one the system picks), not yet serving."""
    import torch

    torch.set_num_threads(1)  # each request's scores and activations on one core
    return Server((host, port), models, limits)
