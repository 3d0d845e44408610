import numpy as np
import pytest
import torch

from charrnn.config import ModelConfig, SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sample.generate import draw, generate_text, prime_ids, probabilities
from charrnn.sample.torch_engine import TorchStepper


@pytest.fixture(params=["lstm", "gru", "rnn"])
def model_and_vocab(request):
    torch.manual_seed(0)
    vocab = Vocab.from_text("abcdefgh \n.")
    model = CharRNN(ModelConfig(vocab_size=len(vocab), cell=request.param, layers=2, hidden=24, embed=8)).eval()
    # Larger weights make the untrained model's choices far from uniform, so ties cannot happen.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3)
    return model, vocab


def sample(model, vocab, **kw):
    cfg = SampleConfig(**{"length": 60, "prime": "abc", "seed": 1, **kw}).validate()
    return generate_text(TorchStepper(model), vocab, cfg)


def test_same_seed_same_text_and_prime_is_echoed(model_and_vocab):
    model, vocab = model_and_vocab
    a, b, c = sample(model, vocab, seed=7), sample(model, vocab, seed=7), sample(model, vocab, seed=8)
    assert a == b
    assert a != c
    assert a[0].startswith("abc") and len(a[0]) == 3 + 60


def test_temp_zero_is_the_argmax_continuation(model_and_vocab):
    model, vocab = model_and_vocab
    ids = [int(i) for i in vocab.encode("abc")]
    with torch.no_grad():
        for _ in range(40):  # the slow, obviously right way: rerun the whole sequence each time
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    expected = vocab.decode(ids)
    assert sample(model, vocab, temp=0.0, length=40) == [expected]
    assert sample(model, vocab, temp=1.0, top_k=1, length=40, seed=3) == [expected]


def test_num_samples_are_independent_rows(model_and_vocab):
    model, vocab = model_and_vocab
    texts = sample(model, vocab, num_samples=4, temp=1.5)
    assert len(texts) == 4 and len(set(texts)) > 1
    assert all(t.startswith("abc") and len(t) == 63 for t in texts)


def test_stop_string_ends_the_text(model_and_vocab):
    model, vocab = model_and_vocab
    text = sample(model, vocab, length=2000, temp=2.0, stop=["a"], prime="bc")[0]
    generated = text[2:]
    assert generated.endswith("a") and generated.count("a") == 1 and len(generated) < 2000


def test_top_p_keeps_the_smallest_set_reaching_p():
    p = np.array([0.05, 0.5, 0.15, 0.3])
    logits = np.log(p)
    kept = lambda top_p: set(np.flatnonzero(probabilities(logits, 1.0, 0, top_p)[0]))  # noqa: E731
    assert kept(0.4) == {1}
    assert kept(0.7) == {1, 3}
    assert kept(0.85) == {1, 3, 2}
    assert kept(1.0) == {0, 1, 2, 3}
    np.testing.assert_allclose(probabilities(logits, 1.0, 0, 0.7)[0], [0, 0.625, 0, 0.375])


def test_top_k_and_temperature():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]]))
    probs = probabilities(logits, 1.0, 2, 1.0)[0]
    np.testing.assert_allclose(probs, [0, 0, 3 / 7, 4 / 7])
    sharp = probabilities(logits, 0.5)[0]
    np.testing.assert_allclose(sharp, np.array([1, 4, 9, 16]) / 30)
    assert probabilities(logits, 0.0)[0].tolist() == [0, 0, 0, 1]


def test_draw_follows_the_distribution():
    probs = np.tile([[0.2, 0.0, 0.8]], (20000, 1))
    picks = draw(probs, np.random.default_rng(0))
    assert 1 not in picks
    assert abs((picks == 2).mean() - 0.8) < 0.02


def test_unknown_prime_characters():
    vocab = Vocab.from_text("abc\n")
    with pytest.raises(CharRNNError, match="'z'"):
        prime_ids(vocab, "abz")
    ids, echo, dropped = prime_ids(vocab, "azb", unknown="skip")
    assert echo == "ab" and dropped == ["z"] and ids == [vocab.index("a"), vocab.index("b")]
    assert prime_ids(vocab, "")[:2] == ([vocab.index("\n")], "")


def test_dropping_unknown_prime_characters_takes_work_linear_in_the_prime(monkeypatch):
    """A prime of thousands of distinct unknown characters (issue 26, item 2): the work must not
    grow with length x distinct unknown ones. Counted as the sets and dicts built, not timed."""
    from charrnn.sample import generate

    built = {"n": 0}

    class CountingSet(set):
        def __init__(self, *args):
            built["n"] += 1
            super().__init__(*args)

    monkeypatch.setattr(generate, "set", CountingSet, raising=False)
    vocab = Vocab.from_text("abc")
    unknown = "".join(chr(0x4E00 + i) for i in range(3000))  # 3,000 distinct CJK characters
    prime = "a" + unknown + "b" + unknown[::-1] + "c"
    ids, echo, dropped = prime_ids(vocab, prime, unknown="skip")
    assert echo == "abc" and ids == [int(i) for i in vocab.encode("abc")]
    assert dropped == list(unknown)
    assert built["n"] <= 2  # not one a character (6,003 before)
