"""`charrnn serve` through the official `openai` package, as its users call it: completions
(streamed and not), the models list, errors; and the same texts as `charrnn sample`."""

from __future__ import annotations

import json
import subprocess

import openai  # (a dev dependency: make setup installs it)
import pytest
from conftest import invoke

from serve.test_serve import Served, post, tiny_checkpoint  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    served = Served(str(tiny_checkpoint), "--max-seconds", "600")
    yield served
    code, said = served.stop()
    assert code == 130 and "Traceback" not in said


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0)


def test_models_list(client):
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["tiny"] and listed.data[0].owned_by == "charrnn"


def test_a_completion_is_the_sample_commands_text(client, tiny_checkpoint):
    answer = client.completions.create(model="tiny", prompt="The ", max_tokens=60, temperature=0.7, top_p=0.9, seed=5)
    choice = answer.choices[0]
    assert answer.object == "text_completion" and answer.model == "tiny" and answer.id.startswith("cmpl-")
    assert choice.finish_reason == "length" and len(choice.text) == 60
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (4, 60, 64)
    cli = invoke(
        "sample",
        "-c",
        str(tiny_checkpoint),
        "--prime",
        "The ",
        "--length",
        "60",
        "--temp",
        "0.7",
        "--top-p",
        "0.9",
        "--seed",
        "5",
        "--no-echo-prime",
    )
    assert choice.text == cli.stdout.decode()


def test_streamed_chunks_add_up_to_the_same_text(client):
    whole = client.completions.create(model="tiny", prompt="in the", max_tokens=300, seed=9, n=2)
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt="in the",
            max_tokens=300,
            seed=9,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts, reasons = ["", ""], [None, None]
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            reasons[choice.index] = choice.finish_reason or reasons[choice.index]
    assert texts == [c.text for c in whole.choices] and reasons == ["length", "length"]
    assert len(chunks) > 3  # written as it was generated, not at the end
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 600


def test_stop_echo_n_and_several_prompts(client):
    answer = client.completions.create(
        model="tiny", prompt=["the ", "of "], max_tokens=400, n=2, stop=[" ", "."], seed=1, echo=True
    )
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    for c in answer.choices:
        prompt = "the " if c.index < 2 else "of "
        assert c.text.startswith(prompt) and c.finish_reason == "stop"
        assert " " not in c.text[len(prompt) :] and "." not in c.text[len(prompt) :]  # ends before the stop string
    streamed = list(
        client.completions.create(model="tiny", prompt="the ", max_tokens=400, stop=[" ", "."], seed=1, stream=True)
    )
    assert (
        "".join(ch.choices[0].text for ch in streamed) == answer.choices[0].text[len("the ") :]
    )  # nothing of the stop string leaks


def test_logprobs_are_the_models(client, tiny_checkpoint):
    import numpy as np
    import torch

    from charrnn.store.model_file import build_model, open_model_file

    answer = client.completions.create(model="tiny", prompt="the", max_tokens=20, logprobs=3, seed=2, temperature=0.5)
    lp = answer.choices[0].logprobs
    text = answer.choices[0].text
    assert lp.tokens == list(text) and len(lp.token_logprobs) == 20 and lp.text_offset == list(range(20))
    assert all(len(top) == 3 for top in lp.top_logprobs)
    record = open_model_file(tiny_checkpoint)
    model, vocab = build_model(record), record.vocab
    ids = torch.as_tensor(np.asarray(vocab.encode("the" + text))[None], dtype=torch.long)
    with torch.no_grad():
        logits, _ = model(ids, None)
    logp = torch.log_softmax(logits[0].double(), -1).numpy()
    expected = [logp[2 + i, vocab.index(c)] for i, c in enumerate(text)]
    np.testing.assert_allclose(lp.token_logprobs, expected, atol=1e-4)
    for i, top in enumerate(lp.top_logprobs):
        best = sorted(top.values(), reverse=True)
        np.testing.assert_allclose(best, np.sort(logp[2 + i])[::-1][:3], atol=1e-4)


@pytest.mark.parametrize(
    "fields, param, status",
    [
        ({"model": "nope"}, "model", 404),
        ({"max_tokens": 10**9}, "max_tokens", 400),
        ({"temperature": -1}, "temperature", 400),
        ({"n": 100}, "n", 400),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", 400),
        ({"logprobs": 9}, "logprobs", 400),
        ({"prompt": [[1, 2, 3]]}, "prompt", 400),
        ({"prompt": "zebra ½"}, "prompt", 400),
        ({"frequency_penalty": 1}, "frequency_penalty", 400),
    ],
)
def test_bad_requests_are_openai_errors_naming_the_param(server, fields, param, status):
    code, answer = post(server.url + "v1/completions", {"prompt": "the", **fields})
    assert code == status and answer["error"]["param"] == param and answer["error"]["message"], answer
    assert answer["error"]["type"] == "invalid_request_error"


def test_the_client_raises_on_an_unknown_model(client):
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.completions.create(model="nope", prompt="x", max_tokens=3)


def test_curl_as_the_readme_shows(server):
    """The README's curl line: a completion, streamed as server-sent events."""
    body = json.dumps({"prompt": "the ", "max_tokens": 30, "stream": True})
    out = subprocess.run(
        ["curl", "-sN", server.url + "v1/completions", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True,
        timeout=60,
        text=True,
    )
    events = [line[len("data: ") :] for line in out.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert sum(len(json.loads(e)["choices"][0]["text"]) for e in events[:-1]) == 30


def test_a_stop_string_is_held_back_before_the_stream_says_it_stopped():
    """The engine's process sends a stream's text a moment before its end: a reader between the
    two sees the stop string at the text's end while the stream is still going, and must not show
    it (the race a loaded run of the suite found: "mFiO." streamed where the answer was "mFiO")."""
    import numpy as np

    from charrnn.sample.batch import Stream
    from charrnn.serve.openai_api import Completion

    completion = Completion.__new__(Completion)
    completion.stops = [" ", "o."]
    s = Stream([0], np.random.default_rng(0), 100)
    s.text.extend("abco")
    assert completion.visible(s, final=False) == 3  # "o" may become "o.": held back
    s.text.extend(".")
    assert s.stopped is None and completion.visible(s, final=False) == 3  # "o." met: never shown
    assert completion.visible(s, final=True) == 3
    s.text[-1] = "x"
    assert completion.visible(s, final=False) == 4 and completion.visible(s, final=True) == 5
