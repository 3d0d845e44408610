"""The run folder's one home (store/run_folder.py): its file names, the one reader of
metrics.jsonl (a torn last line is skipped, wherever it is read: runs, plot, bench), and the
model a folder stands for."""

import json
import os

import pytest

from charrnn.errors import CharRNNError
from charrnn.insight.plot import load_curves
from charrnn.insight.runs import list_runs
from charrnn.store.model_file import resolve_checkpoint
from charrnn.store.run_folder import RunFolder, find_runs, metrics_path, newest_model, read_metrics

ROWS = [
    {"step": 2, "chars_seen": 64, "train_loss": 3.0, "val_loss": 3.1},
    {"event": "threads", "step": 3, "threads": 2},
    {"step": 4, "chars_seen": 128, "train_loss": 2.5, "val_loss": 2.4},
]


def folder_with_metrics(path, rows=ROWS, tail='{"step": 6, "chars'):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    return RunFolder(path)


def test_metrics_are_read_one_way_a_torn_last_line_skipped(tmp_path):
    run = folder_with_metrics(tmp_path / "run")
    assert read_metrics(run.metrics) == [ROWS[0], ROWS[2]]
    assert run.read_metrics(notes=True) == ROWS
    assert [c.loss for c in load_curves([run.path])] == [[3.0, 2.5], [3.1, 2.4]]  # plot: the same rows
    (summary,) = list_runs(tmp_path)  # runs: the same rows
    assert (summary.steps, summary.best_val_loss, summary.problem) == (4, 2.4, None)
    assert RunFolder(tmp_path / "none").read_metrics() == []
    with pytest.raises(CharRNNError, match="no such file"):
        read_metrics(tmp_path / "none" / "metrics.jsonl")


def test_truncating_metrics_keeps_the_steps_up_to_a_resume(tmp_path):
    run = folder_with_metrics(tmp_path / "run")
    run.truncate_metrics(3)
    assert run.read_metrics(notes=True) == ROWS[:2]  # the torn line is gone too
    run.append_metrics({"step": 4, "val_loss": 2.0})
    assert run.read_metrics() == [ROWS[0], {"step": 4, "val_loss": 2.0}]


def test_a_folder_stands_for_its_best_model_else_its_last(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    assert run.model_file() is None and run.existing() == []
    with pytest.raises(CharRNNError, match="no best.pt or last.pt"):
        resolve_checkpoint(run.path)
    run.last.write_bytes(b"x")
    assert run.model_file() == run.last == resolve_checkpoint(run.path)
    run.best.write_bytes(b"x")
    assert run.model_file() == run.best == resolve_checkpoint(run.path)
    assert run.existing() == ["last.pt", "best.pt"]
    assert metrics_path(run.path) == run.metrics == metrics_path(run.metrics)


def test_runs_and_the_newest_model_under_a_root(tmp_path):
    old, new = RunFolder(tmp_path / "a"), RunFolder(tmp_path / "sweep" / "b")
    for run in (old, new):
        run.path.mkdir(parents=True)
        run.last.write_bytes(b"x")
    (tmp_path / "notes").mkdir()
    os.utime(old.last, ns=(1, 1))
    assert find_runs(tmp_path) == [old.path, new.path]
    assert newest_model(tmp_path) == new.last
    old.best.write_bytes(b"x")  # a best.pt anywhere wins over any last.pt
    os.utime(old.best, ns=(2, 2))
    assert newest_model(tmp_path) == old.best
    with pytest.raises(CharRNNError, match="no checkpoint under"):
        newest_model(tmp_path / "notes")
