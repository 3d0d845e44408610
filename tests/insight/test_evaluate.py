"""`charrnn eval`: streaming loss on any text, unknown characters skipped and reported."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_run import invoke, structured_text, train_tiny_run

from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.insight.scores import drop_unknown, score_ids, score_text
from charrnn.store.model_file import build_model, open_model_file

TEXT = structured_text(6000)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval") / "run"
    train_tiny_run(folder, TEXT)
    record = open_model_file(folder / "best.pt")
    model, vocab = build_model(record), record.vocab
    return folder, model, vocab


def one_pass_loss(model, ids):
    """The obvious way: the whole text in one forward pass."""
    x = torch.tensor(ids[:-1], dtype=torch.long)[None]
    with torch.no_grad():
        logits, _ = model(x)
    return F.cross_entropy(logits[0], torch.tensor(ids[1:], dtype=torch.long)).item()


def test_chunks_with_carried_state_equal_one_pass(run):
    _, model, vocab = run
    ids = vocab.encode(TEXT[:700]).astype(np.int64)
    expected = one_pass_loss(model, ids)
    for chunk_len in (7, 64, 10_000):
        assert score_ids(model, ids, chunk_len=chunk_len) == pytest.approx(expected, rel=1e-5)
    # without the carried state the loss would differ: the check above has teeth
    reset = np.mean([one_pass_loss(model, ids[i : i + 8]) for i in range(0, 693, 7)])
    assert abs(reset - expected) > 1e-3


def test_unknown_characters_are_dropped_counted_and_named(run):
    _, model, vocab = run
    text = "é" + TEXT[:300] + "☃é" + TEXT[300:600] + "é"
    score = score_text(model, vocab, text, chunk_len=50)
    assert score.unknown == {"é": 3, "☃": 1} and score.unknown_chars == 4
    assert score.chars == len(text) and score.chars_scored == 600 - 1
    assert score.loss_nats == pytest.approx(score_text(model, vocab, TEXT[:600]).loss_nats, rel=1e-6)
    assert score.bpc == pytest.approx(score.loss_nats / math.log(2))
    assert score.perplexity == pytest.approx(math.exp(score.loss_nats))


def test_drop_unknown_keeps_known_text_whole():
    vocab = Vocab.from_text("abc")
    assert drop_unknown(vocab, "abcab") == ("abcab", {})
    assert drop_unknown(vocab, "xaxbyx") == ("ab", {"x": 3, "y": 1})


def test_a_text_with_nothing_to_score_is_a_clear_error(run):
    _, model, vocab = run
    with pytest.raises(CharRNNError, match="at least 2"):
        score_text(model, vocab, "é☃é")


def test_eval_command_prints_the_three_measures(run, tmp_path):
    folder, model, vocab = run
    text_file = tmp_path / "held_out.txt"
    text_file.write_text(structured_text(1500, seed=5) + "é", encoding="utf-8")
    result = invoke("eval", folder, text_file)  # a run folder stands for its best.pt
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"checkpoint  {folder / 'best.pt'}"
    assert "1,501 characters, 1,499 scored" in lines[1]
    nats = float(lines[2].split()[1])
    assert lines[2].endswith("nats/char") and lines[3].endswith("bits/char")
    assert float(lines[3].split()[0]) == pytest.approx(nats / math.log(2), abs=1e-3)
    assert float(lines[4].split()[1]) == pytest.approx(math.exp(nats), rel=1e-3)
    assert "skipped 1 character the model never saw: 'é' (seen once)" in lines[5]

    as_json = invoke("eval", folder / "best.pt", text_file, "--json", "--device", "cpu")
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert data["loss_nats"] == pytest.approx(nats, abs=1e-4)
    assert data["unknown"] == {"é": 1} and data["chars_scored"] == 1499
    assert set(data) >= {"checkpoint", "file", "chars", "bpc", "perplexity", "unknown_chars"}
    assert "'é'" in as_json.stderr  # people are told on stderr; stdout stays pure JSON


def test_eval_command_errors_are_one_line(run, tmp_path):
    folder, _, _ = run
    missing = invoke("eval", folder / "best.pt", tmp_path / "nope.txt")
    assert missing.exit_code == 2 and missing.stderr.strip() == f"charrnn: error: {tmp_path / 'nope.txt'}: no such file"
    bad_ckpt = invoke("eval", tmp_path / "nope.pt", folder / "metrics.jsonl")
    assert bad_ckpt.exit_code == 2 and "no such checkpoint" in bad_ckpt.stderr


def test_dropping_unknown_characters_takes_work_linear_in_the_text(monkeypatch):
    """Thousands of distinct unknown characters (issue 26, item 2: `eval` of 500 K characters with
    5,000 of them took 53.9 s against 3.2 s for English): counted as the sets built, not timed."""
    from charrnn.insight import scores

    built = {"n": 0}

    class CountingSet(set):
        def __init__(self, *args):
            built["n"] += 1
            super().__init__(*args)

    monkeypatch.setattr(scores, "set", CountingSet, raising=False)
    vocab = Vocab.from_text("abc")
    unknown = "".join(chr(0x4E00 + i) for i in range(3000))
    kept, counts = scores.drop_unknown(vocab, "a" + unknown + "b" + unknown + "c")
    assert kept == "abc" and len(counts) == 3000 and set(counts.values()) == {2}
    assert built["n"] <= 2  # not one a character (6,003 before)


def test_dynamic_evaluation_adapts_to_a_text_that_repeats_itself(run):
    """Krause et al.'s dynamic evaluation: a text the model never saw, repeated, is predicted
    better once the model has taken steps on its first copies; the model itself is unchanged."""
    from charrnn.insight.scores import dynamic_loss

    _, model, vocab = run
    rng = np.random.default_rng(3)
    once = "".join(rng.choice(list("the of and in that is")) for _ in range(120))
    ids = vocab.encode(once * 6).astype(np.int64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = score_ids(model, ids)
    adapted = dynamic_loss(model, ids, lr=1e-2, segment=40)
    assert adapted < plain - 0.2, (plain, adapted)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy adapted
    # each character is scored before any step on it: one segment as long as the text is the plain loss
    assert dynamic_loss(model, ids, lr=1e-2, segment=len(ids)) == pytest.approx(plain, rel=1e-5)
    with pytest.raises(CharRNNError, match="--dynamic-segment 0 must be"):
        dynamic_loss(model, ids, segment=0)


def test_eval_dynamic_reports_both_losses_and_leaves_the_file_alone(run, tmp_path):
    folder, _, _ = run
    text = tmp_path / "t.txt"
    rng = np.random.default_rng(4)
    text.write_text("".join(rng.choice(list("the of and in that is")) for _ in range(120)) * 6, encoding="utf-8")
    checkpoint_bytes = (folder / "best.pt").read_bytes()
    dynamic = ["--dynamic", "--dynamic-lr", "0.01", "--dynamic-segment", "40"]
    result = invoke("eval", str(folder), str(text), *dynamic, "--json", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer["dynamic"]) == {"loss_nats", "bpc", "lr", "segment"} and answer["dynamic"]["lr"] == 0.01
    assert answer["dynamic"]["loss_nats"] < answer["loss_nats"] - 0.05  # the second copy, adapted to
    assert (folder / "best.pt").read_bytes() == checkpoint_bytes
    plain = invoke("eval", str(folder), str(text), "--threads", "1")
    shown = invoke("eval", str(folder), str(text), "--dynamic", "--threads", "1")
    assert "below the plain loss" not in plain.stdout and "below the plain loss" in shown.stdout


def test_dynamic_steps_are_rms_normalised_weight_by_weight():
    """Every weight's first step is lr whatever its gradient's scale (a plain SGD step would move
    the one with a gradient of 1e-4 ten million times less than the one with 1e3), also for a
    weight whose first gradient comes late; a gradient larger than its running mean moves it further."""
    from charrnn.insight.scores import rms_step

    params = [torch.zeros(3), torch.zeros(2)]
    squares, seen = [torch.zeros(3), torch.zeros(2)], [torch.zeros(3), torch.zeros(2)]
    grads = [torch.tensor([1e-4, -2e-4, 0.0]), torch.tensor([1e3, -5e2])]
    rms_step(params, grads, squares, seen, lr=0.01)
    assert torch.allclose(params[0], torch.tensor([-0.01, 0.01, 0.0]), atol=1e-6)  # (no gradient: no step)
    assert torch.allclose(params[1], torch.tensor([-0.01, 0.01]))
    for _ in range(200):  # the third weight gets no gradient for 200 steps, then its first
        rms_step(params, [torch.zeros(3), torch.zeros(2)], squares, seen, lr=0.01)
    before = params[0][2].item()
    rms_step(params, [torch.tensor([0.0, 0.0, 3.0]), torch.zeros(2)], squares, seen, lr=0.01)
    assert params[0][2].item() - before == pytest.approx(-0.01, rel=1e-4)
    rms_step(params, [torch.zeros(3), grads[1] * 10], squares, seen, lr=0.01)  # 10x its running mean
    assert params[1][0].item() + 0.01 < -0.01
