"""`charrnn bench --quality FILE --seconds N`: the default recipe and the previous defaults, in one run."""

import json
import subprocess
import sys

from charrnn.bench.quality import PREVIOUS, _at, quality_table

from tiny_run import structured_text


def test_quality_trains_both_recipes_and_reports_their_curves(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(structured_text(40_000))
    done = subprocess.run([sys.executable, "-m", "charrnn", "bench", "--no-speed", "--quality", str(corpus), "--seconds", "10", "--json", "--quality-out", str(tmp_path / "kept")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["quality"]
    assert result["seconds"] == 10 and set(result["recipes"]) == {"default recipe", "previous defaults"}
    previous = result["recipes"]["previous defaults"]
    assert previous["model"] == f"LSTM {PREVIOUS['layers']}×{PREVIOUS['hidden']}, embed {PREVIOUS['embed']}, dropout 0, batch {PREVIOUS['batch_size']}"
    assert previous["size_line"] is None
    auto = result["recipes"]["default recipe"]
    assert auto["size_line"].startswith("--size auto:")
    for run in result["recipes"].values():
        assert run["curve"] and run["best_val_loss"] == min(row["val_loss"] for row in run["curve"])
        assert run["curve"][-1]["seconds"] <= 10 * 1.1
    assert "previous defaults" in done.stderr and "best" in done.stderr  # the table
    for recipe in ("default-recipe", "previous-defaults"):  # kept for `charrnn plot`
        assert (tmp_path / "kept" / f"c-{recipe}" / "run" / "metrics.jsonl").is_file()


def test_the_table_shows_the_best_loss_up_to_each_time():
    curve = [{"seconds": 10, "val_loss": 2.0}, {"seconds": 20, "val_loss": 1.5}, {"seconds": 30, "val_loss": 1.6}]
    assert _at(curve, 5) == "–" and _at(curve, 15) == "2.000" and _at(curve, 30) == "1.500"
    run = {"model": "m", "chars_seen": 1e6, "curve": curve, "best_val_loss": 1.5, "train_loss_at_best": 1.4}
    table = quality_table({"corpus": "c.txt", "seconds": 40, "recipes": {"a": run}})
    assert table.row_count == 1


def test_quality_needs_a_file(tmp_path):
    done = subprocess.run([sys.executable, "-m", "charrnn", "bench", "--no-speed", "--quality", str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert done.returncode == 2 and "missing.txt: not a file" in done.stderr
