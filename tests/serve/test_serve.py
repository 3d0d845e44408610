"""`charrnn serve` as a client sees it: a real server in a subprocess on a free port of
127.0.0.1, with a tiny model trained here, called over HTTP with urllib."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, invoke, words_text

from charrnn.machine.threads import cores_here

MAX_SECONDS = 1.0
MAX_LENGTH = 200_000  # more than the tiny model writes in MAX_SECONDS
ENDLESS = 10_000_000  # more than the tiny model writes in a test's minute


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve")
    corpus = folder / "words.txt"
    corpus.write_text(words_text(20_000), encoding="utf-8")
    result = invoke(
        "train",
        str(corpus),
        *TINY,
        "--max-steps",
        "40",
        "--eval-every",
        "20",
        "--out",
        str(folder / "ck"),
        "--name",
        "tiny",
        "-q",
    )
    assert result.returncode == 0, result.stderr.decode()
    return folder / "ck" / "tiny" / "best.pt"


class Served:
    """A `charrnn serve` subprocess and its URL."""

    def __init__(self, *args: str, group: bool = False):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "serve", *args, "--port", "0"],
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            start_new_session=group,  # (a process group of its own, as a terminal or systemd gives it)
        )
        self.lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise AssertionError(f"charrnn serve ended ({self.process.wait()}): {''.join(self.lines)}")
            self.lines.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+/) ", line)
            if found:
                self.url = found.group(1)
                return
        raise AssertionError("charrnn serve did not say where it listens")

    def stop(self, sig=signal.SIGINT) -> tuple[int, str]:
        self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=30)
        return self.process.returncode, "".join(self.lines) + err


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    served = Served(str(tiny_checkpoint), "--max-length", str(MAX_LENGTH), "--max-seconds", str(MAX_SECONDS))
    yield served
    code, said = served.stop()
    assert code == 130 and "Traceback" not in said  # no request made it fail (a 500 prints one)


@pytest.fixture(scope="module")
def roomy_server(tiny_checkpoint):
    """A server whose time bound no request here comes near, however busy the machine."""
    served = Served(str(tiny_checkpoint), "--max-seconds", "600", "--max-length", str(ENDLESS))
    yield served
    served.stop()


def post(url: str, body, timeout: float = 60, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json", **(headers or {})}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def sample(server, **fields) -> dict:
    status, answer = post(server.url + "v1/sample", {"stream": False, **fields})
    assert status == 200, answer
    return answer


def models(server) -> list[dict]:
    with urllib.request.urlopen(server.url + "v1/models", timeout=30) as answer:
        listed = json.loads(answer.read())
    assert listed["object"] == "list"
    return listed["data"]


def test_models_lists_info_fields_in_the_openai_shape(server, tiny_checkpoint):
    info = models(server)[0]
    assert (info["id"], info["object"], info["owned_by"]) == ("tiny", "model", "charrnn") and info[
        "created"
    ] > 1_600_000_000
    assert info["name"] == "tiny" and (info["cell"], info["layers"], info["hidden"], info["embed"]) == (
        "lstm",
        1,
        32,
        16,
    )
    assert info["steps"] == 40 and info["file"] == "best.pt"
    assert info["vocab_size"] == len(info["vocabulary"]) and info["parameters"] > 0
    assert {
        "chars_seen",
        "best_loss_nats",
        "best_bpc",
        "train_seconds",
        "corpus",
        "config",
        "saved_at",
        "format_version",
        "engine",
    } <= set(info)
    assert str(tiny_checkpoint.parent) not in json.dumps(info)  # no folder of this machine


def test_sample_as_one_object_is_the_sample_command_text(server, tiny_checkpoint):
    answer = sample(server, prime="The ", length=80, seed=3, temp=0.7, top_k=10)
    assert answer["stopped"] == "length" and answer["model"] == "tiny"
    cli = invoke(
        "sample",
        "-c",
        str(tiny_checkpoint),
        "--prime",
        "The ",
        "--length",
        "80",
        "--seed",
        "3",
        "--temp",
        "0.7",
        "--top-k",
        "10",
    )
    assert answer["text"] == cli.stdout.decode()


def test_stop_strings_and_several_samples(server):
    answer = sample(server, prime="The", length=500, seed=1, stop=["."], num_samples=3)
    assert len(answer["samples"]) == 3 and answer["text"] == answer["samples"][0]
    assert all(s.endswith(".") for s in answer["samples"]) and answer["stopped"] == "stop"


def test_beam_search_as_the_sample_command(server, tiny_checkpoint):
    answer = sample(server, prime="the", length=20, beam=4, num_samples=2)
    cli = invoke(
        "sample",
        "-c",
        str(tiny_checkpoint),
        "--prime",
        "the",
        "--length",
        "20",
        "--beam",
        "4",
        "--num-samples",
        "2",
        "--separator",
        "|",
    )
    assert "|".join(answer["samples"]) == cli.stdout.decode()


def test_streaming_sends_the_first_text_before_the_end(server):
    request = urllib.request.Request(
        server.url + "v1/sample",
        data=json.dumps({"prime": "A", "length": MAX_LENGTH, "seed": 0}).encode(),
        method="POST",
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.headers["Transfer-Encoding"] == "chunked"
        assert answer.headers["Content-Type"].startswith("application/x-ndjson")
        first = json.loads(answer.readline())
        events = [first] + [json.loads(line) for line in answer]
    assert first == {"sample": 0, "text": "A"}  # the prime, alone, before any generated text
    done = events[-1]
    assert done["done"] and done["stopped"] == "max_seconds"  # the time bound, not the length
    text = "".join(e["text"] for e in events[:-1])
    assert len(text) == 1 + done["chars"] and 1 < len(text) < MAX_LENGTH  # (chars: those generated)
    assert len(events) > 10  # written as it is generated, not at the end


def test_time_bound_ends_a_sample_and_keeps_its_text(server):
    started = time.monotonic()
    answer = sample(server, length=MAX_LENGTH)
    assert answer["stopped"] == "max_seconds" and 0 < len(answer["text"]) < MAX_LENGTH
    assert MAX_SECONDS <= time.monotonic() - started < MAX_SECONDS + 30  # (far from what a loaded machine needs)


def test_a_beam_search_past_the_time_bound_is_refused_naming_beam(server):
    started = time.monotonic()
    status, answer = post(server.url + "v1/sample", {"beam": 32, "length": MAX_LENGTH})
    assert status == 400 and answer["field"] == "beam" and "max_seconds" in answer["error"].replace("-", "_")
    assert time.monotonic() - started < MAX_SECONDS + 30


def test_a_client_that_leaves_mid_stream_does_not_trouble_the_server(roomy_server):
    """Streamed or not, a client that goes away frees its row: long before the server's time
    bound (600 s), the engine has no stream left."""
    import http.client

    server = roomy_server

    host, port = server.url.split("//")[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    for stream in (True, False):
        connection.request(
            "POST",
            "/v1/sample",
            body=json.dumps({"length": ENDLESS, "stream": stream}),
            headers={"Content-Type": "application/json"},
        )
        if stream:
            answer = connection.getresponse()
            assert json.loads(answer.readline())["sample"] == 0
        else:
            deadline = time.monotonic() + 30
            while models(server)[0]["engine"]["active_streams"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # until it is generating
        connection.close()  # gone before the end
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        deadline = time.monotonic() + 60
        while models(server)[0]["engine"]["active_streams"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert models(server)[0]["engine"]["active_streams"] == 0  # its row left
    assert sample(server, length=10, seed=2)["text"]  # and the server goes on


@pytest.mark.parametrize(
    "body, field",
    [
        ({"length": MAX_LENGTH + 1}, "length"),
        ({"length": -1}, "length"),
        ({"temp": "hot"}, "temp"),
        ({"temp": -1}, "temp"),
        ({"top_k": -1}, "top_k"),
        ({"top_p": 0}, "top_p"),
        ({"seed": -5}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"stop": [""]}, "stop"),
        ({"beam": 2, "num_samples": 3}, "num_samples"),
        ({"num_samples": 1000}, "num_samples"),
        ({"prime": "zebra ½"}, "prime"),
        ({"lenght": 10}, "lenght"),
        ({"stream": "yes"}, "stream"),
        ({"unknown": "maybe"}, "unknown"),
        ({"beam": 2, "beam_norm": 1e308}, "beam_norm"),
    ],
)
def test_bad_requests_name_their_field(server, body, field):
    status, answer = post(server.url + "v1/sample", body)
    assert status == 400 and answer["field"] == field, answer
    assert answer["error"] and "--" not in answer["error"].replace("--max-length", "")  # (a flag of the server)


def test_bodies_that_are_not_json_objects(server):
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000):
        status, answer = post(server.url + "v1/sample", body)
        assert status == 400 and answer["field"] is None and answer["error"]


def test_only_the_models_named_at_start_are_served(server, tiny_checkpoint, tmp_path):
    for name in ("other", str(tiny_checkpoint), str(tiny_checkpoint.parent), "../../../etc/passwd", "tiny/../tiny"):
        status, answer = post(server.url + "v1/sample", {"model": name, "length": 5})
        assert status == 404 and answer["field"] == "model" and "not served" in answer["error"]
    for path in (
        "/etc/passwd",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/charrnn/serve/page.html",
        "/v1/../../README.md",
    ):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url.rstrip("/") + path, timeout=30)
        assert caught.value.code == 404
        assert b"root:" not in caught.value.read()


def test_many_clients_at_once_each_get_their_own_text(roomy_server):
    """32 clients at once, each its own prime and length: each gets the text it gets alone. Greedy
    (temp 0), so that the one-row step's last-bit rounding cannot move a draw (sample/batch.py);
    each stream's own random numbers are tested in tests/sample/test_batch.py."""
    clients = 32  # (more than a small backlog of connections, all at once)
    words = "the of and to in that was he for on are as with his they at be this from".split()
    asks = {
        i: {"prime": words[i % len(words)] + " " * (i // len(words)), "length": 150 + 7 * i, "temp": 0}
        for i in range(clients)
    }
    expected = {i: sample(roomy_server, **ask)["text"] for i, ask in asks.items()}
    got: dict[int, str] = {}
    together = threading.Barrier(clients)

    def client(i: int) -> None:
        together.wait()
        got[i] = sample(roomy_server, **asks[i])["text"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == expected  # all answered, and no request's stream disturbed another's
    assert all(len(expected[i]) == len(asks[i]["prime"]) + asks[i]["length"] for i in asks)


def test_a_long_request_does_not_hold_up_a_short_one(server):
    long_answer: list[dict] = []
    long_client = threading.Thread(target=lambda: long_answer.append(sample(server, length=MAX_LENGTH)))
    long_client.start()
    deadline = time.monotonic() + 30
    while models(server)[0]["engine"]["active_streams"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)  # until the long one is generating
    short = sample(server, length=20, seed=1)
    long_running = long_client.is_alive()
    long_client.join(60)
    assert len(short["text"]) == 20 and long_running  # answered while the long one went on
    assert long_answer[0]["stopped"] == "max_seconds"


def test_score_is_the_eval_command_loss(server, tiny_checkpoint, tmp_path):
    text = words_text(500, seed=7)
    status, answer = post(server.url + "v1/score", {"text": text})
    assert status == 200
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    cli = json.loads(invoke("eval", str(tiny_checkpoint), str(tmp_path / "text.txt"), "--json").stdout)
    assert answer["loss_nats"] == pytest.approx(cli["loss_nats"], rel=1e-5)
    assert answer["bpc"] == pytest.approx(cli["bpc"], rel=1e-5) and answer["chars_scored"] == 499
    for body, field in (
        ({"text": "a"}, "text"),
        ({}, "text"),
        ({"text": 3}, "text"),
        ({"text": "ab", "model": "x"}, "model"),
    ):
        status, answer = post(server.url + "v1/score", body)
        assert status in (400, 404) and answer["field"] == field


def test_neurons_are_the_activation_view(server, tiny_checkpoint):
    from charrnn.insight.neurons import activations
    from charrnn.insight.neurons_view import colour
    from charrnn.store.model_file import build_model, open_model_file

    text = "The a of to and\nin that. He was at"
    status, answer = post(server.url + "v1/neurons", {"text": text + "[]"})
    assert status == 200 and answer["text"] == text and answer["state"] == "c"
    assert answer["unknown"] == {"[": 1, "]": 1}  # characters the model never saw: dropped, named
    values = np.frombuffer(base64.b64decode(answer["values"]), dtype=np.int8).reshape(
        len(text), answer["layers"], answer["hidden"]
    )
    record = open_model_file(tiny_checkpoint)
    model, vocab = build_model(record), record.vocab
    np.testing.assert_allclose(values / 127, activations(model, vocab, text, "c"), atol=0.5 / 127 + 1e-6)
    assert answer["palette"][0] == "#{:02x}{:02x}{:02x}".format(*colour(-1)) and answer["palette"][127] == "#ffffff"
    assert answer["shown"][text.index("\n")] == "↵"
    assert answer["best"] and {"feature", "layer", "unit", "correlation"} == set(answer["best"][0])
    status, answer = post(server.url + "v1/neurons", {"text": "ab", "state": "x"})
    assert status == 400 and answer["field"] == "state"


def test_the_page_needs_nothing_from_elsewhere(server):
    with urllib.request.urlopen(server.url, timeout=30) as answer:
        page = answer.read().decode()
        assert answer.headers["Content-Type"].startswith("text/html")
    assert "Generate" in page and "/v1/sample" in page and "/v1/neurons" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page


def test_ctrl_c_stops_it_with_one_line(tiny_checkpoint):
    served = Served(str(tiny_checkpoint))
    sample(served, length=10)
    code, err = served.stop(signal.SIGINT)
    assert code == 130
    assert err.splitlines()[-1] == "charrnn: interrupted (SIGINT)" and "Traceback" not in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_group_stops_server_and_engine_with_one_line(tiny_checkpoint, sig):
    """Ctrl-C in a terminal and systemd's SIGTERM reach every process of the group, the engine's
    too: it ignores them (no restart, no traceback), and the server ends it."""
    served = Served(str(tiny_checkpoint), "--engines", "2", group=True)
    sample(served, length=10)
    engine = models(served)[0]["engine"]
    children = children_of(served.process.pid)
    spawned = [pid for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    engines = min(2, cores_here())  # (serve cuts --engines to the cores)
    assert engine["engines"] == engines and len(spawned) == engines  # (every engine's process)
    os.killpg(served.process.pid, sig)
    _, err = served.process.communicate(timeout=60)
    said = "".join(served.lines) + err
    assert served.process.returncode == 128 + sig
    assert said.splitlines()[-1] == f"charrnn: interrupted ({signal.Signals(sig).name})"
    assert said.count("interrupted") == 1 and "Traceback" not in said and "starting another" not in said
    assert engine["steps"] > 0 and children  # (the engine's process, and multiprocessing's tracker)
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in children)  # none outlives the server


def children_of(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_an_engine_that_cannot_start_is_said_in_one_line_before_serving(tiny_checkpoint, monkeypatch):
    from charrnn.sample import engine_process

    class Broken(engine_process.EngineProcess):  # (weights the server read, that the engine cannot step)
        def __init__(self, weights, *args, **kwargs):
            super().__init__({k: v for k, v in weights.items() if k != "head.weight"}, *args, **kwargs)

    monkeypatch.setattr(engine_process, "EngineProcess", Broken)
    result = invoke("serve", str(tiny_checkpoint), "--port", "0")
    said = result.stderr.decode()
    assert result.returncode != 0 and "serving" not in said and "Traceback" not in said
    assert re.search(r"cannot serve tiny: the engine process of charrnn-engine-tiny(-\d)? ended as it started", said)
    assert "KeyError: 'head.weight'" in said


def test_warns_when_listening_beyond_this_machine(tiny_checkpoint, monkeypatch):
    from charrnn.serve import server as server_module

    class NotListening:
        url = "http://0.0.0.0:8000/"

        def wait_ready(self):
            pass

        def serve_forever(self):
            pass

        def server_close(self):
            pass

    monkeypatch.setattr(server_module, "start", lambda *args: NotListening())
    refused = invoke("serve", str(tiny_checkpoint), "--host", "0.0.0.0")
    assert refused.returncode != 0 and "--api-key" in refused.stderr.decode()
    result = invoke("serve", str(tiny_checkpoint), "--host", "0.0.0.0", "--api-key", "sesame")
    assert result.returncode == 0
    assert "warning: listening on 0.0.0.0" in result.stderr.decode()
    quiet = invoke("serve", str(tiny_checkpoint), "--host", "127.0.0.1")
    assert "warning" not in quiet.stderr.decode()
    from charrnn.serve.guard import is_loopback

    assert (
        is_loopback("::1")
        and is_loopback("localhost")
        and is_loopback("[::1]")
        and not is_loopback("::")
        and not is_loopback("evil.example")
    )


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-length", "0"], "--max-length"),
        (["--max-seconds", "0"], "--max-seconds"),
        (["--port", "70000"], "--port"),
        (["--cors-origin", "http://x.test/page"], "--cors-origin"),
        (["--api-key", ""], "--api-key"),
        (["--engines", "0"], "--engines '0' must be a positive number or auto"),
        (["--engines", "many"], "--engines 'many' must be a positive number or auto"),
    ],
)
def test_bad_flags_are_one_line(tiny_checkpoint, flags, message):
    result = invoke("serve", str(tiny_checkpoint), *flags)
    assert result.returncode != 0 and message in result.stderr.decode()


def test_a_port_in_use_and_no_model_are_one_line(tiny_checkpoint, tmp_path, monkeypatch):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = invoke("serve", str(tiny_checkpoint), "--port", str(taken.getsockname()[1]))
    assert result.returncode != 0 and "cannot listen on 127.0.0.1:" in result.stderr.decode()
    monkeypatch.chdir(tmp_path)
    result = invoke("serve")
    assert result.returncode != 0 and "charrnn serve CKPT" in result.stderr.decode()


def test_the_activation_view_is_bounded(server):
    text = words_text(5000, seed=3)
    status, answer = post(server.url + "v1/neurons", {"text": text})
    assert status == 200 and answer["truncated"] and answer["text"] == text[:2000]
    assert len(base64.b64decode(answer["values"])) == 2000 * answer["layers"] * answer["hidden"]
