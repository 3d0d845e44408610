"""What keeps `charrnn serve` to its clients (charrnn/serve/guard.py): the Host a request names
(DNS rebinding), the page it comes from (Origin, CORS), the API key, the body's type and size,
and slow or too many connections. Real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from serve.test_serve import Served, post, tiny_checkpoint  # noqa: F401  (the fixture)


def request(
    url: str,
    method: str = "GET",
    path: str = "/v1/models",
    body: dict | bytes | None = None,
    headers: dict | None = None,
):
    """(status, headers, JSON or text) of one request; headers as given (Host too)."""
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    given = {"Content-Type": "application/json", **(headers or {})} if method == "POST" else dict(headers or {})
    connection.putrequest(method, path, skip_host="Host" in given, skip_accept_encoding=True)
    for k, v in given.items():
        connection.putheader(k, v)
    if data is not None:
        connection.putheader("Content-Length", str(len(data)))
    connection.endheaders(data)
    answer = connection.getresponse()
    raw = answer.read()
    connection.close()
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = raw.decode(errors="replace")
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, payload


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    served = Served(str(tiny_checkpoint))
    yield served
    served.stop()


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def test_a_foreign_host_is_refused_and_local_names_are_served(server):
    port = port_of(server.url)
    for host in ("evil.example", f"evil.example:{port}", "192.168.1.10", f"127.0.0.1.evil.example:{port}"):
        for method, path, body in (
            ("GET", "/v1/models", None),
            ("POST", "/v1/sample", {"length": 5, "stream": False}),
            ("GET", "/", None),
        ):
            status, _, answer = request(server.url, method, path, body, {"Host": host})
            assert status == 403 and "not this server" in answer["error"], (host, path)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}", "127.0.0.2"):
        status, _, answer = request(server.url, headers={"Host": host})
        assert status == 200 and answer["data"][0]["id"] == "tiny", host


def test_pages_elsewhere_are_refused_and_no_cors_headers_are_sent(server):
    body = {"length": 5, "stream": False}
    status, headers, answer = request(server.url, "POST", "/v1/sample", body, {"Origin": "http://evil.example"})
    assert status == 403 and "evil.example" in answer["error"] and "access-control-allow-origin" not in headers
    status, headers, _ = request(
        server.url,
        "OPTIONS",
        "/v1/sample",
        None,
        {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert status in (403, 405) and "access-control-allow-origin" not in headers
    status, headers, answer = request(server.url, "OPTIONS", "/v1/sample")
    assert status == 405 and headers["allow"] == "GET, POST" and answer["error"]
    for method, path, allowed in (("HEAD", "/v1/sample", "POST"), ("DELETE", "/v1/models", "GET")):
        status, headers, _ = request(server.url, method, path)  # (issue 26, item 11: a 405 says what is allowed)
        assert status == 405 and allowed in headers["allow"] and headers["content-type"] == "application/json"
    own = server.url.rstrip("/")  # the page this server serves at / may call it
    status, headers, answer = request(server.url, "POST", "/v1/sample", body, {"Origin": own})
    assert status == 200 and len(answer["text"]) == 5 and "access-control-allow-origin" not in headers


@pytest.mark.parametrize(
    "kind", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_a_post_must_be_json(server, kind):
    headers = {"Content-Type": kind} if kind else {}
    connection = http.client.HTTPConnection("127.0.0.1", port_of(server.url), timeout=30)
    connection.putrequest("POST", "/v1/sample")
    for k, v in {**headers, "Content-Length": "2"}.items():
        connection.putheader(k, v)
    connection.endheaders(b"{}")
    answer = connection.getresponse()
    assert answer.status == 415 and "application/json" in json.loads(answer.read())["error"]


def test_a_body_too_large_is_refused_before_it_is_read(server):
    status, _, answer = request(server.url, "POST", "/v1/sample", b"{" + b" " * (1 << 20) + b"}")
    assert status == 413 and answer["error"]


def test_one_allowed_origin_gets_cors(tiny_checkpoint):
    served = Served(str(tiny_checkpoint), "--cors-origin", "http://localhost:3000")
    try:
        status, headers, _ = request(
            served.url,
            "OPTIONS",
            "/v1/completions",
            None,
            {"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
        )
        assert (
            status == 204
            and headers["access-control-allow-origin"] == "http://localhost:3000"
            and "POST" in headers["access-control-allow-methods"]
        )
        status, headers, answer = request(
            served.url,
            "POST",
            "/v1/completions",
            {"prompt": "the", "max_tokens": 4},
            {"Origin": "http://localhost:3000"},
        )
        assert (
            status == 200
            and headers["access-control-allow-origin"] == "http://localhost:3000"
            and len(answer["choices"][0]["text"]) == 4
        )
        status, headers, _ = request(
            served.url, "POST", "/v1/completions", {"prompt": "the"}, {"Origin": "http://localhost:4000"}
        )
        assert status == 403 and "access-control-allow-origin" not in headers
    finally:
        served.stop()


def test_an_api_key_is_asked_of_every_api_request(tiny_checkpoint):
    import openai

    served = Served(str(tiny_checkpoint), "--api-key", "sesame")
    try:
        assert request(served.url)[0] == 401
        assert request(served.url, headers={"Authorization": "Bearer wrong"})[0] == 401
        status, _, answer = request(
            served.url, "POST", "/v1/sample", {"length": 3, "stream": False}, {"Authorization": "Bearer sesame"}
        )
        assert status == 200 and len(answer["text"]) == 3
        assert request(served.url, path="/")[0] == 200  # the page itself (it sends the key given as #key=)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=served.url + "v1", api_key="wrong", max_retries=0).models.list()
        client = openai.OpenAI(base_url=served.url + "v1", api_key="sesame", max_retries=0)
        assert len(client.completions.create(model="tiny", prompt="a", max_tokens=7).choices[0].text) == 7
    finally:
        served.stop()


# ------------------------------------------------------------------ slow and many connections, in process
@pytest.fixture
def strict_server(tiny_checkpoint):
    """A server in this process with short bounds: headers and bodies within 0.5 s, 4 connections."""
    from charrnn.serve.api import Limits
    from charrnn.serve.guard import Security
    from charrnn.serve.models import load_models
    from charrnn.serve.server import start

    server = start(
        load_models([tiny_checkpoint]),
        "127.0.0.1",
        0,
        Limits(),
        Security(header_seconds=0.5, body_seconds=0.5, max_connections=4),
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.uvicorn.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield server
    server.uvicorn.should_exit = True
    thread.join(30)
    server.server_close()


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before it closed the connection (b"" if nothing), waiting at most `seconds`."""
    sock.settimeout(seconds)
    got = b""
    try:
        while chunk := sock.recv(4096):
            got += chunk
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {seconds} s") from None
    return got


def test_a_half_sent_request_is_closed(strict_server):
    port = port_of(strict_server.url)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
        assert closed_within(sock, 30) == b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/sample HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: "
            b'100\r\n\r\n{"len'
        )
        answer = closed_within(sock, 30)
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive" in answer


def test_connections_past_the_bound_are_answered_503(strict_server):
    port = port_of(strict_server.url)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        time.sleep(0.1)  # (accepted)
        status, _, _ = request(strict_server.url)
        assert status == 503
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 30
    while request(strict_server.url)[0] != 200:  # the bound is on connections open now
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_kept_alive_connections_do_not_wait_for_delayed_acks(strict_server):
    """Nagle's algorithm is off on the connections the server accepts (TCP_NODELAY): with it on,
    a reply's last small write waited for the client's delayed ACK, 44 ms a request on a
    kept-alive connection (issue 26, item 6). Checked on the server's side of the socket."""
    port = strict_server.sock.getsockname()[1]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v1/models")
    assert connection.getresponse().read()
    (protocol,) = strict_server.uvicorn.server_state.connections  # this one, kept alive
    accepted = protocol.transport.get_extra_info("socket")
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    connection.close()


def test_a_server_whose_engine_cannot_start_again_answers_503_and_says_why(tiny_checkpoint):  # noqa: F811
    """An engine process that died once started is replaced; one whose replacement could not start
    leaves generation unavailable: a 503 that says why (not a 500, no traceback), the rest served."""
    from charrnn.serve.api import Limits
    from charrnn.serve.models import load_models
    from charrnn.serve.server import start

    server = start(load_models([tiny_checkpoint]), "127.0.0.1", 0, Limits())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.uvicorn.started and time.monotonic() < deadline:
            time.sleep(0.01)
        for engine in server.models["tiny"].engine.engines:
            engine._failed("the engine process of tiny ended as it started (MemoryError: test)")
        status, answer = post(server.url + "v1/sample", {"stream": False, "length": 5})
        assert status == 503 and answer["error"].startswith("generation is unavailable: the engine process")
        status, answer = post(server.url + "v1/completions", {"prompt": "a", "max_tokens": 5})
        assert status == 503 and "MemoryError: test" in json.dumps(answer)
        status, answer = post(server.url + "v1/score", {"text": "the cat"})
        assert status == 200 and answer["chars"] > 0  # (scores run in the server's own process)
    finally:
        server.uvicorn.should_exit = True
        thread.join(30)
        server.server_close()
