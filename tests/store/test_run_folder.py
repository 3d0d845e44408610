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


def test_losses_no_run_writes_read_as_unknown(tmp_path):
    # Before: `charrnn runs` showed a tampered val loss of 1e-320 as the run's best (0.000).
    tampered = [
        {"step": s, "chars_seen": s * 64, "train_loss": 2.0, "val_loss": v}
        for s, v in enumerate([1e-320, -1.0, 0.0, float("nan"), float("inf"), "1.0", True, 1e300, 2.5], start=1)
    ]
    run = folder_with_metrics(tmp_path / "run", rows=tampered, tail="")
    assert [r["val_loss"] for r in run.read_metrics()] == [None] * 8 + [2.5]
    (summary,) = list_runs(tmp_path)
    assert summary.best_val_loss == 2.5
    assert [c.loss for c in load_curves([run.path]) if c.split == "val"] == [[2.5]]


def test_a_huge_line_is_skipped_without_holding_it(tmp_path):
    # Before: the file was read whole (a 300 MB line took 0.9 GB); now a line over MAX_LINE is
    # passed over in chunks. tracemalloc counts what Python allocates while reading.
    import tracemalloc

    from charrnn.store import run_folder

    run = folder_with_metrics(tmp_path / "run", tail="")
    with open(run.metrics, "a", encoding="utf-8") as fh:
        fh.write('{"step": 5, "pad": "' + "x" * (16 << 20) + '"}\n')
        fh.write(json.dumps(ROWS[2] | {"step": 6}) + "\n")
        fh.write("x" * run_folder.MAX_LINE + "\n")  # (a line exactly MAX_LINE long is still read)
    tracemalloc.start()
    try:
        rows = run.read_metrics()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == [ROWS[0], ROWS[2], ROWS[2] | {"step": 6}]
    assert peak < 4 * run_folder.MAX_LINE, f"{peak:,} bytes to read a file with a 16 MB line"


def test_a_line_that_is_not_utf8_is_skipped_not_the_whole_file(tmp_path):
    # Before: one undecodable byte made the whole file unreadable (a torn multi-byte character).
    run = folder_with_metrics(tmp_path / "run", tail="")
    with open(run.metrics, "ab") as fh:
        fh.write(b'{"step": 5, "x": "\xff"}\n')
    assert run.read_metrics() == [ROWS[0], ROWS[2]]
