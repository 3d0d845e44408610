"""The end-of-run line that says whether a run went as expected."""

import random

import pytest
from tiny_run import invoke

from charrnn.training import expected
from charrnn.training.expected import CURVES, TOLERANCE, expected_loss, kind_of, verdict


def counts_of(text: str):
    alphabet = "".join(sorted(set(text)))
    return alphabet, [text.count(c) for c in alphabet]


def chinese(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = [
        "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(7))
        + "，"
        + "".join(chr(0x4E00 + rng.randrange(3000)) for _ in range(7))
        + "。"
        for _ in range(n)
    ]
    return "\n".join(lines)


def prose(n_chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = "the a of to and in that is was he for it with as his on be at by i this had not".split()
    lines = [
        " ".join(rng.choice(words) for _ in range(rng.randint(5, 10))).capitalize() + rng.choice(".,;!?")
        for _ in range(n_chars // 30)
    ]
    return "\n".join(lines)[:n_chars]


def code(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    names = ["count", "total", "item_list", "value", "i", "result"]
    lines = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        lines.append(f"    if ({a} > {rng.randrange(99)}) {{ {b}[{a}] = {a} * 2; }}")
    return "\n".join(lines)


@pytest.mark.parametrize(
    "text, kind", [(prose(5000), "English text"), (chinese(200), "Chinese text"), (code(200), "source code")]
)
def test_the_kind_of_a_text(text, kind):
    assert kind_of(*counts_of(text)) == kind


def test_expected_loss_falls_with_characters_read_and_holds_beyond_the_measurements():
    for kind, points in CURVES.items():
        reads = [points[0][0] / 10] + [c for c, _ in points] + [points[-1][0] * 10]
        losses = [expected_loss(kind, c) for c in reads]
        assert losses == sorted(losses, reverse=True), kind
        assert losses[0] == points[0][1] and losses[-1] == points[-1][1]
        (c0, y0), (c1, y1) = points[:2]
        middle = expected_loss(kind, (c0 * c1) ** 0.5)  # half way in log characters
        assert middle == pytest.approx((y0 + y1) / 2)
    assert expected_loss("Klingon", 1e6) is None


def test_the_verdict_line():
    (reads, loss), *_ = CURVES["English text"][1:]
    assert verdict(loss, "English text", reads).endswith("as expected")
    assert "worse than expected" in verdict(loss + TOLERANCE + 0.05, "English text", reads)
    assert "better than expected" in verdict(loss - TOLERANCE - 0.05, "English text", reads)
    assert f"{loss:.2f} nats/char after {reads / 1e6:,.1f} M characters" in verdict(loss, "English text", reads)
    assert verdict(None, "English text", reads) is None
    assert verdict(float("nan"), "English text", reads) is None


def test_a_finished_run_ends_with_the_expectation(tmp_path, monkeypatch):
    corpus = tmp_path / "c.txt"
    corpus.write_text(prose(20_000))
    common = [
        "train",
        corpus,
        "--max-steps",
        60,
        "--hidden",
        32,
        "--embed",
        16,
        "--seq-len",
        32,
        "--batch-size",
        8,
        "--lr",
        0.02,
        "--warmup",
        0,
        "--threads",
        1,
        "--out",
        tmp_path / "runs",
        "--cache-dir",
        tmp_path / "cache",
        "--sample-every",
        0,
    ]
    result = invoke(*common)
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("expected: runs on English text"))
    assert (
        line.rsplit("; this one reached ", 1)[1].split(",")[0] in result.stderr.split("expected:")[0]
    )  # the run's best loss
    monkeypatch.setattr(expected, "CURVES", {"English text": ((1.0, 0.01),)})  # an expectation no run meets
    worse = invoke(*common, "--name", "again")
    assert "worse than expected" in worse.stderr
