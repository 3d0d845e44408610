"""`charrnn runs`: a table of the runs under checkpoints/."""

import json
import os

import pytest
from tiny_run import invoke, structured_text, train_tiny_run

from charrnn.errors import CharRNNError
from charrnn.insight.runs import age, human, list_runs
from charrnn.model import CharRNN


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """checkpoints/ with an LSTM run, a GRU run in a subfolder, and a run whose last.pt is damaged."""
    root = tmp_path_factory.mktemp("runs") / "checkpoints"
    text = structured_text(4000)
    train_tiny_run(root / "lstm-run", text, max_steps=20)
    train_tiny_run(root / "sweep" / "gru-run", text, cell="gru", hidden=24, max_steps=10, eval_every=5)
    broken = root / "broken"
    broken.mkdir()
    (broken / "last.pt").write_bytes(b"not a checkpoint")
    (broken / "metrics.jsonl").write_text('{"step": 5, "chars_seen": 320, "val_loss": 2.5}\n{"step": 10, "chars')
    (root / "notes").mkdir()  # a folder without run files is not a run
    for age_s, name in (
        (5.5 * 3600, "lstm-run"),
        (4.5 * 3600, "sweep/gru-run"),
        (3.5 * 3600, "broken"),
    ):  # (half an hour from the next age shown)
        for f in (root / name).iterdir():
            os.utime(f, (f.stat().st_atime, f.stat().st_mtime - age_s))
    return root


def test_runs_are_found_and_summarised(root):
    runs = list_runs(root)
    assert [r.name for r in runs] == ["broken", "sweep/gru-run", "lstm-run"]  # the newest first
    broken, gru, lstm = runs
    assert (lstm.cell, lstm.layers, lstm.hidden, lstm.steps, lstm.chars_seen) == ("lstm", 2, 16, 20, 20 * 4 * 16)
    assert lstm.parameters == sum(p.numel() for p in CharRNN(_model_config(root / "lstm-run")).parameters())
    metrics = [json.loads(line) for line in (root / "lstm-run" / "metrics.jsonl").read_text().splitlines()]
    assert lstm.best_val_loss == min(r["val_loss"] for r in metrics)
    assert (gru.model, gru.steps) == ("GRU 2×24", 10)
    assert broken.cell is None and "last.pt" in broken.problem
    assert (broken.steps, broken.chars_seen, broken.best_val_loss) == (5, 320, 2.5)  # from the readable metrics


def _model_config(folder):
    from charrnn.store import checkpoint

    return checkpoint.load(folder / "best.pt").info.model


def test_runs_command_prints_a_table(root):
    result = invoke("runs", "--root", root)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"runs under {root}/")
    assert lines[1].split() == ["run", "model", "params", "steps", "chars", "val", "loss", "bpc", "modified"]
    rows = {line.split()[0]: line.split() for line in lines[3:] if line.strip()}
    assert rows["lstm-run"][1:4] == ["LSTM", "2×16", human(_params(root / "lstm-run"))]
    assert rows["lstm-run"][4:6] == ["20", "1.28k"] and rows["lstm-run"][-2:] == ["5h", "ago"]
    assert rows["broken"][1] == "unreadable"
    assert "warning: broken:" in result.stderr and "not a readable charrnn checkpoint" in result.stderr


def _params(folder):
    return sum(p.numel() for p in CharRNN(_model_config(folder)).parameters())


def test_runs_json(root):
    result = invoke("runs", "--root", root, "--json")
    data = json.loads(result.stdout)
    assert [r["name"] for r in data] == ["broken", "sweep/gru-run", "lstm-run"]
    assert data[2]["cell"] == "lstm" and data[2]["best_val_bpc"] == pytest.approx(
        data[2]["best_val_loss"] / 0.6931471805599453
    )
    assert data[0]["problem"] and data[1]["problem"] is None and len(data[2]["modified"]) == 19


def test_the_default_root_and_an_empty_or_missing_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = invoke("runs")
    assert missing.exit_code == 2 and "checkpoints: no such folder" in missing.stderr
    (tmp_path / "checkpoints").mkdir()
    empty = invoke("runs")
    assert empty.exit_code == 0 and empty.stdout == "" and "no runs under checkpoints/" in empty.stderr
    assert invoke("runs", "--json").stdout.strip() == "[]"
    (tmp_path / "notes.txt").write_text("x")
    a_file = invoke("runs", "--root", "notes.txt")
    assert a_file.exit_code == 2 and "notes.txt: a file, not a folder of runs" in a_file.stderr
    with pytest.raises(CharRNNError):
        list_runs(tmp_path / "nope")


def test_short_numbers():
    assert [human(n) for n in (0, 999, 1000, 1280, 2_500_000, 3e9)] == ["0", "999", "1k", "1.28k", "2.5M", "3G"]
    assert [age(s) for s in (5, 90, 7200, 3 * 86400)] == ["5s ago", "1m ago", "2h ago", "3d ago"]


def test_a_tampered_metrics_file_is_a_row_not_a_traceback(tmp_path):
    # Before: a step that is not a number ended `charrnn runs` in a ValueError traceback.
    run = tmp_path / "checkpoints" / "odd"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": "x", "chars_seen": [1], "val_loss": 1e-320}\n', encoding="utf-8")
    result = invoke("runs", "--root", tmp_path / "checkpoints")
    assert result.exit_code == 0, result.stderr
    (row,) = [line.split() for line in result.stdout.splitlines() if line.startswith("odd")]
    assert row[1:7] == ["?", "-", "-", "-", "-", "-"]
