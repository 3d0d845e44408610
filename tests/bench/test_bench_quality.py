"""`charrnn bench --quality FILE --seconds N`: the default recipe and the previous defaults, in one run."""

import json
import subprocess
import sys

from tiny_run import invoke, structured_text

from charrnn.bench.quality import PREVIOUS, _at, quality_table
from charrnn.config import TrainConfig
from charrnn.store import checkpoint
from charrnn.store.run_folder import RunFolder
from charrnn.training import sizing


def test_quality_trains_both_recipes_and_reports_their_curves(tmp_path, monkeypatch):
    """The whole command, each recipe a real `charrnn train --time-budget` process; each is also
    given --max-steps 6 (and an evaluation every 3 steps), so that the runs end at a step count
    long before the budget, however busy the machine (an idle one took 15 s in all)."""
    from charrnn.bench import quality

    for name in quality.RECIPES:
        monkeypatch.setitem(quality.RECIPES, name, {**quality.RECIPES[name], "max_steps": 6, "eval_every": 3})
    corpus = tmp_path / "c.txt"
    corpus.write_text(structured_text(40_000))
    done = invoke(
        "bench", "--no-speed", "--quality", corpus, "--seconds", 600, "--json", "--quality-out", tmp_path / "kept"
    )
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout)["quality"]
    assert result["seconds"] == 600 and set(result["recipes"]) == {"default recipe", "previous defaults"}
    previous = result["recipes"]["previous defaults"]
    assert (
        previous["model"] == f"LSTM {PREVIOUS['layers']}×{PREVIOUS['hidden']}, embed {PREVIOUS['embed']}, dropout 0, "
        f"batch {PREVIOUS['batch_size']}"
    )
    assert previous["size_line"] is None
    auto = result["recipes"]["default recipe"]
    assert auto["size_line"].startswith("--size auto:") and auto["model"] in auto["size_line"].replace(
        "embedding", "embed"
    )
    for name, run in result["recipes"].items():
        folder = tmp_path / "kept" / f"c-{name.replace(' ', '-')}" / "run"  # kept for `charrnn plot`
        evals = RunFolder(folder).read_metrics()
        # the previous defaults train without weight decay, as charrnn did before 2026-12-07; the
        # default recipe with the rule's for its dropout (the optimizer's own settings, not only the config's)
        saved = checkpoint.load(RunFolder(folder).last)
        dropout = saved.meta["config"]["dropout"]
        decay = 0.0 if name == "previous defaults" else sizing.weight_decay_for(dropout)
        assert name == "previous defaults" or decay >= TrainConfig().weight_decay > 0
        assert saved.meta["config"]["weight_decay"] == decay
        assert {g["weight_decay"] for g in saved.optimizer["param_groups"]} == {decay}
        assert [r["step"] for r in evals] == [3, 6] and run["steps"] == 6
        assert run["curve"] == [
            {
                "seconds": r["elapsed_s"],
                "chars_seen": r["chars_seen"],
                "val_loss": r["val_loss"],
                "train_loss": r["train_loss"],
            }
            for r in evals
        ]
        best = min(evals, key=lambda r: r["val_loss"])
        assert (run["best_val_loss"], run["train_loss_at_best"], run["chars_seen"]) == (
            best["val_loss"],
            best["train_loss"],
            evals[-1]["chars_seen"],
        )
    table = done.stderr.split("validation loss (nats/char)", 1)[1]
    assert (
        "previous" in table
        and "defaults" in table
        and f"{previous['best_val_loss']:.3f}" in table
        and f"{auto['best_val_loss']:.3f}" in table
    )


def test_the_table_shows_the_best_loss_up_to_each_time():
    curve = [{"seconds": 10, "val_loss": 2.0}, {"seconds": 20, "val_loss": 1.5}, {"seconds": 30, "val_loss": 1.6}]
    assert _at(curve, 5) == "–" and _at(curve, 15) == "2.000" and _at(curve, 30) == "1.500"
    run = {"model": "m", "chars_seen": 1e6, "curve": curve, "best_val_loss": 1.5, "train_loss_at_best": 1.4}
    table = quality_table({"corpus": "c.txt", "seconds": 40, "recipes": {"a": run}})
    assert table.row_count == 1


def test_quality_needs_a_file(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "charrnn", "bench", "--no-speed", "--quality", str(tmp_path / "missing.txt")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "missing.txt: not a file" in done.stderr
