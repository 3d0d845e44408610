"""What keeps `charrnn serve` to the clients it is meant for.

- **Host**: a server that listens on a loopback address answers only requests whose Host header
  names a loopback address, `localhost` or the address it listens on. Without this a page on
  any site could rebind its own name to 127.0.0.1 and read the answers (DNS rebinding; the same
  flaw as Ollama's CVE-2024-28224).
- **Origin**: a request that comes from a page (browsers say which, in Origin) is refused unless
  that page is this server's own, or the one origin `--cors-origin` allows; only that one gets
  CORS headers (and its preflight answered). POST bodies must be JSON (Content-Type
  application/json), which a page elsewhere cannot send without a preflight.
- **API key**: with `--api-key`, every /v1/ request needs `Authorization: Bearer KEY`. Listening
  beyond this machine needs one (cli/serving.py).
- **Bounds**: a body of at most MAX_BODY bytes, read within BODY_SECONDS; request headers within
  HEADER_SECONDS of a connection's first byte (or of the end of its last answer), and at most
  MAX_HEADER_BYTES of them; at most MAX_CONNECTIONS connections (uvicorn answers 503 past it).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_BODY = 1 << 20  # bytes of a request body
BODY_SECONDS = 30.0  # to send it
HEADER_SECONDS = 10.0  # to send a request's headers
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 256
KEEP_ALIVE_SECONDS = 5
LOOPBACK_NAMES = ("localhost", "localhost.")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address, IPv6 with or without brackets) is this machine only."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def host_name(header: str) -> str:
    """The host part of a Host header ("127.0.0.1:8000", "[::1]:8000", "localhost")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


@dataclass
class Security:
    """The server's guard settings, from `serve`'s flags; `bind` fills in where it listens."""

    api_key: str | None = None
    cors_origin: str | None = None
    max_connections: int = MAX_CONNECTIONS
    max_body: int = MAX_BODY
    body_seconds: float = BODY_SECONDS
    header_seconds: float = HEADER_SECONDS
    max_header_bytes: int = MAX_HEADER_BYTES
    keep_alive_seconds: int = KEEP_ALIVE_SECONDS
    backlog: int = 128
    host: str = "127.0.0.1"
    port: int = 0
    local: bool = True  # listening on a loopback address: Host headers are checked
    hosts: set[str] = field(default_factory=set)

    def bind(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.local = is_loopback(host)
        self.hosts = {host.strip("[]").lower(), *LOOPBACK_NAMES}

    def host_allowed(self, header: str | None) -> bool:
        if not self.local:
            return True  # (listening beyond this machine needs an API key instead)
        if not header:
            return False
        name = host_name(header)
        return name in self.hosts or is_loopback(name)


def _json(status: int, error: str, extra_headers: list[tuple[bytes, bytes]] = ()):
    body = json.dumps({"error": error, "field": None}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *extra_headers,
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class Guard:
    """ASGI middleware: Host, Origin, API key and content type, before the app sees a request."""

    def __init__(self, app, security: Security):
        self.app, self.security = app, security

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sec = self.security
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        origin = headers.get("origin")
        cors = (
            [(b"access-control-allow-origin", sec.cors_origin.encode()), (b"vary", b"Origin")]
            if sec.cors_origin and origin == sec.cors_origin
            else []
        )
        if refusal is None and scope["method"] == "OPTIONS":
            if cors:  # the allowed origin's preflight
                allow = cors + [
                    (b"access-control-allow-methods", b"GET, POST"),
                    (b"access-control-allow-headers", b"Authorization, Content-Type"),
                    (b"access-control-max-age", b"600"),
                    (b"content-length", b"0"),
                ]
                await send({"type": "http.response.start", "status": 204, "headers": allow})
                await send({"type": "http.response.body", "body": b""})
                return
            refusal = (
                405,
                "OPTIONS: no cross-origin requests are allowed here (serve --cors-origin ORIGIN allows one)",
            )
        if refusal is not None:
            allow = [(b"allow", b"GET, POST")] if refusal[0] == 405 else []
            for message in _json(*refusal, cors + allow):
                await send(message)
            return
        if cors:

            async def send_with_cors(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *cors]}
                await send(message)

            return await self.app(scope, receive, send_with_cors)
        return await self.app(scope, receive, send)

    def _refusal(self, scope, headers: dict[str, str]) -> tuple[int, str] | None:
        sec = self.security
        host = headers.get("host")
        if not sec.host_allowed(host):
            return (
                403,
                f"Host {host!r} is not this server: it answers requests to {sec.host}:{sec.port} or localhost only "
                "(a page elsewhere must not reach it)",
            )
        origin = headers.get("origin")
        if origin is not None and origin != sec.cors_origin and not self._own(origin, host):
            return (
                403,
                f"requests from the page at {origin!r} are refused (serve --cors-origin ORIGIN allows one origin)",
            )
        path = scope["path"]
        if sec.api_key and path.startswith("/v1/") and scope["method"] != "OPTIONS":
            given = headers.get("authorization", "")
            if not hmac.compare_digest(
                given.encode("utf-8", "surrogateescape"), f"Bearer {sec.api_key}".encode("utf-8", "surrogateescape")
            ):
                return (
                    401,
                    "this server needs its API key: Authorization: Bearer KEY" if not given else "the API key is wrong",
                )
        if scope["method"] == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return (
                    415,
                    f"a POST body must be JSON sent as Content-Type: application/json (got {kind or 'none'!r}; with "
                    "curl: -H 'Content-Type: application/json')",
                )
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > sec.max_body):
                return 413, f"the body of {length} bytes is more than {sec.max_body:,}"
        return None

    @staticmethod
    def _own(origin: str, host: str | None) -> bool:
        """Whether Origin is the page this server serves (same scheme, host and port as the request's Host)."""
        parts = urlsplit(origin)
        return parts.scheme == "http" and host is not None and parts.netloc.lower() == host.strip().lower()


async def read_body(request) -> bytes:
    """The request's body, within the bounds (BadRequest 413 or 408 past them)."""
    from charrnn.serve.api import BadRequest

    sec: Security = request.app.state.security
    chunks, size = [], 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > sec.max_body:
                raise BadRequest(None, f"the body is more than {sec.max_body:,} bytes", status=413)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), sec.body_seconds)
    except asyncio.TimeoutError:
        raise BadRequest(None, f"the body did not arrive within {sec.body_seconds:g} s", status=408) from None
    return b"".join(chunks)


class GuardedH11:
    """uvicorn's h11 protocol with a time limit on request headers: a connection that has not
    sent a whole request's headers HEADER_SECONDS after it opened (or after its last answer) is
    closed. (uvicorn's keep-alive timeout alone lets a half-sent request hold a connection.)"""

    @staticmethod
    def configured(security: Security):
        import h11
        from uvicorn.protocols.http.h11_impl import H11Protocol

        class Protocol(H11Protocol):
            _timer = None

            def connection_made(self, transport):
                super().connection_made(transport)
                self._arm()

            def _arm(self):
                self._disarm()
                self._timer = self.loop.call_later(security.header_seconds, self._too_slow)

            def _disarm(self):
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None

            def _too_slow(self):
                self._timer = None
                if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                    self.transport.close()

            def data_received(self, data):
                super().data_received(data)
                if self.conn.their_state is not h11.IDLE:
                    self._disarm()  # a whole request's headers are in

            def on_response_complete(self):
                super().on_response_complete()
                if not self.transport.is_closing():
                    self._arm()

            def connection_lost(self, exc):
                self._disarm()
                super().connection_lost(exc)

        return Protocol
