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


def rows_of(*losses):
    """Evaluation rows, every 100 steps, from (train, val) pairs."""
    return [{"step": 100 * (i + 1), "train_loss": t, "val_loss": v} for i, (t, v) in enumerate(losses)]


def test_over_fitting_is_named_when_validation_rises_while_training_falls():
    # The run: best val 5.27 at step 200, 9.12 at the end, train 0.004.
    rows = rows_of((3.0, 5.5), (2.0, 5.27), (0.5, 6.0), (0.05, 7.5), (0.004, 9.12))
    line = expected.overfitting(rows)
    assert line.startswith(
        "over-fitting: the validation loss was best at step 200 (5.27 nats/char) and has risen to 9.12 since, "
        "while the training loss fell from 2.00 to 0.00"
    )
    assert "best.pt keeps it at its best" in line and "--lr" not in line


@pytest.mark.parametrize(
    "rows",
    [
        rows_of((3.0, 3.1), (2.0, 2.1), (1.5, 1.6)),  # still improving
        rows_of((3.0, 3.1), (2.0, 2.1), (1.5, 2.13)),  # a rise within the noise
        rows_of((3.0, 3.1), (2.0, 2.1), (2.5, 2.6)),  # both rose: diverging, not over-fitting
        rows_of((3.0, 3.1)),  # one evaluation
        rows_of((3.0, None), (2.0, None), (0.1, None)),  # no validation split
        rows_of((3.0, float("nan")), (2.0, float("nan")), (0.1, float("nan"))),
    ],
)
def test_no_over_fitting_is_named_without_it(rows):
    assert expected.overfitting(rows) is None


def test_a_running_run_is_told_after_patience_evaluations_without_a_better_one():
    watch = expected.Overfitting()
    for row in rows_of((3.0, 3.0), (2.0, 2.0), (1.5, 2.2), (1.2, 2.3), (1.0, 2.4), (0.9, 2.5)):
        watch.add(row)
        assert watch.diagnosis(expected.PATIENCE) is None  # 4 evaluations after the best: not yet
    watch.add({"step": 700, "train_loss": 0.8, "val_loss": 2.6})
    assert watch.diagnosis(expected.PATIENCE).startswith("over-fitting: the validation loss was best at step 200")
    watch.add({"step": 800, "train_loss": 0.8, "val_loss": 1.9})  # a new best: the count starts again
    assert watch.diagnosis(expected.PATIENCE) is None and watch.since_best == 0


def test_a_run_that_over_fits_is_told_so_during_and_after_it(tmp_path):
    """A tiny text and a model far larger than it, trained long: validation is best early, then
    rises while training falls. Before: no word during the run, and at its end either nothing
    or 'the model did not learn ... try a lower --lr', judged on the last loss."""
    from conftest import words_text

    from charrnn.api.training import train

    corpus = tmp_path / "tiny.txt"
    corpus.write_text(words_text(2000, seed=3), encoding="utf-8")
    events = []
    options = dict(layers=1, hidden=128, embed=16, seq_len=16, batch_size=8, threads=1, eval_every=25)
    run = train(
        corpus,
        out=tmp_path,
        max_steps=300,
        sample_every=0,
        lr=1e-2,
        warmup=0,
        dropout=0.0,
        callbacks=[events.append],
        **options,
    )
    said = [(e["event"], e["message"]) for e in events if e["event"] in ("warning", "verdict")]
    kinds = [e["event"] for e in events]
    assert [k for k, m in said] == ["warning", "warning"] and all(m.startswith("over-fitting:") for k, m in said)
    assert kinds.index("done") < len(kinds) - 1  # the second one after the run: its verdict
    best = min(run.metrics, key=lambda r: r["val_loss"])
    assert f"best at step {best['step']:,} ({best['val_loss']:.2f} nats/char)" in said[-1][1]


def test_the_end_of_a_run_is_judged_on_its_best_loss_not_its_last(tmp_path):
    """A run whose last evaluation went bad (both losses rose: not over-fitting) but whose best
    is well below the unigram entropy learned something: best.pt holds it. Before: 'the model
    did not learn', from the last loss."""
    import types

    import numpy as np

    from charrnn.api.training import _Setup
    from charrnn.data.vocab import Vocab
    from charrnn.store.run_folder import RunFolder
    from charrnn.training.distributed import Dist

    text = prose(3000)
    vocab = Vocab.from_text(text)
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    rows = rows_of((3.0, 3.0), (1.2, 1.3), (4.0, 4.1))  # unigram entropy of prose: about 2.9
    for row in rows:
        folder.append_metrics(row)
    setup = _Setup.__new__(_Setup)
    events = []
    setup.run_dir, setup.dist, setup.callbacks, setup.last_eval = folder.path, Dist(), [events.append], rows[-1]
    summary = {"event": "end", "reason": "done", "step": 300, "best_loss": 1.3, "chars_seen": 3e6}
    setup.report(summary, types.SimpleNamespace(ids=np.asarray(vocab.encode(text)), vocab=vocab))
    assert [e["event"] for e in events] == ["done", "verdict"], events
    assert "this one reached 1.30" in events[-1]["message"]
