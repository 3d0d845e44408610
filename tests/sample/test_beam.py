"""Beam search (`sample --beam`): against exhaustive search and greedy decoding on tiny models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import invoke, words_text

from charrnn.config import ModelConfig, SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.model import CharRNN
from charrnn.sample.beam import beam_search, best_indices, log_softmax
from charrnn.sample.generate import generate_text
from charrnn.sample.numpy_engine import FusedStepper
from charrnn.sample.torch_engine import TorchStepper

CHARS = "\nabc"  # (a vocabulary is sorted by code point)


def tiny_model(cell: str = "lstm", seed: int = 0) -> CharRNN:
    """Random weights, scaled up so that the distributions are far from uniform."""
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=len(CHARS), cell=cell, layers=2, hidden=8, embed=4)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def fused(model: CharRNN) -> FusedStepper:
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return FusedStepper(weights, model.cfg.cell, model.cfg.layers, model.cfg.hidden)


def exhaustive(model: CharRNN, prime: list[int], length: int) -> list[tuple[float, tuple[int, ...]]]:
    """Every continuation of `length` characters with its log-probability, best first."""
    texts = list(itertools.product(range(len(CHARS)), repeat=length))
    x = torch.tensor([prime + list(t) for t in texts])
    with torch.no_grad():
        logits, _ = model(x[:, :-1])
    logp = log_softmax(logits.double().numpy())  # (N, T, V)
    start = len(prime) - 1
    scores = [sum(logp[n, start + i, c] for i, c in enumerate(t)) for n, t in enumerate(texts)]
    return sorted(zip(scores, texts), key=lambda st: (-st[0], st[1]))


def test_best_indices_break_ties_by_position():
    assert best_indices(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 3).tolist() == [1, 2, 4]
    assert best_indices(np.array([0.5, 0.1]), 5).tolist() == [0, 1]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_wide_enough_beam_is_exhaustive_search(cell):
    model, prime, length = tiny_model(cell), [0, 1], 4
    truth = exhaustive(model, prime, length)
    width = len(CHARS) ** (length - 1)  # every prefix survives: nothing can be pruned wrongly
    for stepper in (TorchStepper(model), fused(model)):
        beams = beam_search(stepper, prime, length, width)
        assert [tuple(b.ids) for b in beams[:10]] == [t for _, t in truth[:10]]
        np.testing.assert_allclose([b.logprob for b in beams[:10]], [s for s, _ in truth[:10]], rtol=1e-4)


def test_a_narrow_beam_finds_what_greedy_misses_and_never_less():
    found_better = 0
    for seed in range(8):
        model = tiny_model("lstm", seed)
        truth = exhaustive(model, [0], 5)
        greedy = beam_search(TorchStepper(model), [0], 5, width=1)[0]
        best_of_3 = beam_search(TorchStepper(model), [0], 5, width=3)[0]
        assert truth[0][0] + 1e-6 >= best_of_3.logprob >= greedy.logprob - 1e-6
        found_better += best_of_3.logprob > greedy.logprob + 1e-6
    assert found_better > 0  # beams are not greedy decoding under another name


def test_width_one_is_greedy_sampling():
    model = tiny_model("gru", 3)
    vocab = Vocab(tuple(CHARS))
    cfg = SampleConfig(length=12, temp=0.0, prime="ab")
    greedy_text = generate_text(TorchStepper(model), vocab, cfg)[0]
    beam = beam_search(fused(model), list(vocab.encode("ab")), 12, width=1)[0]
    assert "ab" + "".join(CHARS[i] for i in beam.ids) == greedy_text


def test_stop_strings_finish_beams_and_length_normalisation_ranks_them():
    model = tiny_model("lstm", 1)
    beams = beam_search(TorchStepper(model), [0], 6, width=4, chars=tuple(CHARS), stops=("\n",))
    finished = [b for b in beams if b.finished]
    assert all(CHARS[b.ids[-1]] == "\n" and "\n" not in "".join(CHARS[i] for i in b.ids[:-1]) for b in finished)
    assert all(not b.finished and len(b.ids) == 6 for b in beams if b not in finished)
    normalised = beam_search(TorchStepper(model), [0], 6, width=4, chars=tuple(CHARS), stops=("\n",), norm=1.0)
    scores = [b.logprob / len(b.ids) for b in normalised]
    assert scores == sorted(scores, reverse=True)


def test_sample_beam_from_the_command_line(tmp_path):
    corpus = tmp_path / "w.txt"
    corpus.write_text(words_text(6000), encoding="utf-8")
    flags = [
        "--layers",
        "1",
        "--hidden",
        "32",
        "--embed",
        "16",
        "--seq-len",
        "16",
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]
    assert (
        invoke(
            "train", str(corpus), *flags, "--max-steps", "40", "--eval-every", "20", "--out", str(tmp_path / "ck")
        ).returncode
        == 0
    )
    ckpt = str(tmp_path / "ck" / "w" / "best.pt")
    args = [
        "sample",
        "-c",
        ckpt,
        "--beam",
        "4",
        "--length",
        "40",
        "--prime",
        "The ",
        "--num-samples",
        "2",
        "--separator",
        "|",
    ]
    first = invoke(*args)
    assert first.returncode == 0, first.stderr.decode()
    texts = first.stdout.decode().split("|")
    assert len(texts) == 2 and all(t.startswith("The ") and len(t) == 44 for t in texts) and texts[0] != texts[1]
    assert invoke(*args, "--seed", "9", "--temp", "1.5").stdout == first.stdout  # deterministic
    assert invoke(*args, "--engine", "torch").stdout == first.stdout  # either engine
    refused = invoke("sample", "-c", ckpt, "--beam", "2", "--num-samples", "3")
    assert refused.returncode == 2 and "--num-samples 3 must be at most --beam 2" in refused.stderr.decode()
