"""`sample --num-samples N` streams: the first sample is written as it is generated, each next
one as soon as those before it have ended; the text is the one the same seed always gave."""

import numpy as np
from conftest import TINY, invoke, words_text

from charrnn.config import SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.sample.generate import OneAfterAnother, generate, generate_text


class RandomStepper:
    """Logits from a seeded generator, counting the steps taken (no model needed)."""

    def __init__(self, vocab_size: int):
        self.rng, self.vocab_size, self.steps = np.random.default_rng(0), vocab_size, 0

    def prime(self, ids, batch_size):
        self.batch = batch_size
        return self.rng.normal(size=(batch_size, self.vocab_size)) * 3

    def step(self, ids):
        self.steps += 1
        return self.rng.normal(size=(self.batch, self.vocab_size)) * 3


def written_while_generating(cfg: SampleConfig, separator: str = "|") -> tuple[str, list[tuple[int, str]]]:
    """The output, and what had been written at each step of the generation."""
    vocab = Vocab.from_text("abcdefgh .\n")
    stepper, out, seen = RandomStepper(len(vocab)), [], []
    samples = OneAfterAnother(out.append, cfg.num_samples, separator)
    for b, piece in generate(stepper, vocab, cfg, on_end=samples.end):
        samples.piece(b, piece)
        seen.append((stepper.steps, "".join(out)))
    samples.close()
    expected = separator.join(generate_text(RandomStepper(len(vocab)), vocab, cfg))
    assert "".join(out) == expected  # the same text as all the samples printed at the end
    return expected, seen


def test_the_first_sample_is_written_as_it_is_generated():
    text, seen = written_while_generating(SampleConfig(length=40, prime="ab", seed=3, num_samples=3))
    first = text.split("|")[0]
    for steps, so_far in seen:
        assert first.startswith(so_far)  # nothing of the others before the first has ended
        assert len(so_far) >= len("ab") + steps  # the prime and one character a step, at once


def test_the_next_sample_follows_as_soon_as_the_one_before_stops():
    cfg = SampleConfig(length=200, seed=11, num_samples=2, stop=[". "])
    text, seen = written_while_generating(cfg)
    first, second = text.split("|")
    assert len(first) < len(second) < 200, "this seed stops the first sample well before the second"
    halfway = len(first) + 1 + len(second) // 2  # half of the second sample written
    assert next(steps for steps, so_far in seen if len(so_far) >= halfway) < seen[-1][0]  # before the end


def test_num_samples_through_the_cli_streams_the_same_text_as_before(tmp_path, monkeypatch):
    from charrnn.cli import sampling as cli
    from charrnn.sample import batch as sample

    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(8000), encoding="utf-8")
    assert (
        invoke(
            "train", str(corpus), *TINY, "--max-steps", "10", "--eval-every", "5", "--out", str(tmp_path / "ck")
        ).returncode
        == 0
    )
    steps, writes = [], []  # characters drawn so far, at each write to stdout
    counted, write = sample.probabilities, cli._Stdout.write
    monkeypatch.setattr(sample, "probabilities", lambda *a, **k: steps.append(1) or counted(*a, **k))
    monkeypatch.setattr(cli._Stdout, "write", lambda self, text: writes.append(len(steps)) or write(self, text))
    args = [
        "sample",
        "-c",
        str(tmp_path / "ck" / "c"),
        "--length",
        "30",
        "--seed",
        "4",
        "--prime",
        "th",
        "--separator",
        "|",
    ]
    two = invoke(*args, "--num-samples", "2").stdout.decode()
    assert writes[0] == 0 and writes[1] == 1 and len(steps) == 30  # the prime, then each character at once
    monkeypatch.setattr(sample, "probabilities", counted)
    from charrnn.sample.batch import Engine, config_streams
    from charrnn.sample.engines import open_stepper

    stepper, vocab, _ = open_stepper(tmp_path / "ck" / "c" / "best.pt", "auto", "cpu")
    streams = config_streams(SampleConfig(length=30, seed=4, num_samples=2), [int(i) for i in vocab.encode("th")])
    engine = Engine(stepper, vocab)
    engine.submit(streams)
    engine.run_until_done(streams)
    assert two == "|".join("th" + s.generated for s in streams)  # the engine's streams, one after the other
