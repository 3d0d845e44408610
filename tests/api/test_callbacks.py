"""The callbacks of charrnn/api/callbacks.py in tiny runs: plain lines for a log, TensorBoard's
event file read back as TensorBoard reads it, and `charrnn train --tensorboard DIR`."""

from __future__ import annotations

import io
import sys

import pytest
from conftest import invoke, need_module, words_text

from charrnn.api.callbacks import PlainProgress, TensorBoard
from charrnn.api.training import train
from charrnn.errors import CharRNNError

TINY = dict(layers=1, hidden=16, embed=8, seq_len=16, batch_size=8, threads=1, eval_every=5, sample_every=0)


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_text(words_text(3000), encoding="utf-8")
    return path


def scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in `logdir`, as TensorBoard loads them: tag -> [(step, value)]."""
    need_module("tensorboard", "pip install 'charrnn[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_plain_progress_writes_a_line_per_evaluation_and_one_at_the_end(text, tmp_path):
    log = io.StringIO()
    run = train(text, out=tmp_path, max_steps=10, callbacks=[PlainProgress(log)], **TINY)
    lines = log.getvalue().splitlines()
    evaluations = [line for line in lines if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in evaluations] == ["step 5", "step 10"]
    assert all(" chars/s | lr " in line and "bpc" in line for line in evaluations)
    assert lines[0].startswith(f"{text}: ")  # the corpus described
    done = [line for line in lines if line.startswith("done (")]
    assert len(done) == 1 and done[0].endswith(f"; last: {run.last}")
    assert done[0].startswith(f"done (done): 10 steps, best loss {run.summary['best_loss']:.3f} (")


def test_plain_progress_writes_to_stderr_when_given_no_file(capsys):
    PlainProgress()({"event": "warning", "message": "careful"})
    assert capsys.readouterr() == ("", "warning: careful\n")


def test_tensorboard_writes_losses_learning_rate_and_speed_at_each_evaluation(text, tmp_path):
    logdir = tmp_path / "tb"
    run = train(text, out=tmp_path, max_steps=10, callbacks=[TensorBoard(logdir)], **TINY)
    found = scalars(logdir)
    assert set(found) == {"loss/train", "loss/val", "lr", "chars_per_sec"}
    rows = run.metrics
    for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("lr", "lr")):
        assert [step for step, _ in found[tag]] == [row["step"] for row in rows] == [5, 10]
        assert [value for _, value in found[tag]] == pytest.approx([row[key] for row in rows], rel=1e-6)
    assert all(value > 0 for _, value in found["chars_per_sec"])


def test_tensorboard_missing_is_a_clear_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # (importing it now fails)
    with pytest.raises(CharRNNError, match=r"pip install 'charrnn\[tensorboard\]'"):
        TensorBoard(tmp_path / "tb")


def test_train_tensorboard_flag_writes_the_event_file(text, tmp_path):
    logdir = tmp_path / "tb"
    result = invoke(
        "train", str(text), *sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items()), []),
        "--max-steps", "10", "--out", str(tmp_path / "ck"), "--tensorboard", str(logdir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    assert [step for step, _ in scalars(logdir)["loss/val"]] == [5, 10]
