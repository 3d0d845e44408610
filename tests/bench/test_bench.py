"""The benchmark's pure parts (FLOP counts) and one tiny pass through its machinery.
Speed itself is never asserted: `charrnn bench` prints it."""

from charrnn.bench import training as bench
from charrnn.bench.measure import median_rows


def test_flop_counts_follow_the_gate_counts():
    # LSTM 2x512 on 64-dim embeddings, 65 characters: 8H(E+H) + 8H(2H) + 2HV
    assert bench.forward_flops_per_char("lstm", 2, 512, 64, 65) == 8 * 512 * 576 + 8 * 512 * 1024 + 2 * 512 * 65
    assert bench.forward_flops_per_char("gru", 1, 10, 5, 7) == 6 * 10 * 15 + 2 * 10 * 7
    assert bench.forward_flops_per_char("rnn", 1, 10, 5, 7) == 2 * 10 * 15 + 2 * 10 * 7


def test_train_step_factories_run():
    case = bench.TrainCase("gru", 1, 16, 8, 4)
    step = bench.charrnn_train_step(case)
    step()
    bench.textbook_train_step(bench.TrainCase("lstm", 2, 16, 8, 4))()
    assert bench._timed(step, warmup=1, steps=3) > 0


def test_run_overheads_measure_a_real_evaluation_save_and_resume(monkeypatch):
    """A tiny stand-in for the LSTM 2×512: every row is measured and the table renders."""
    from rich.console import Console

    from charrnn.cli.tables import bench_tables

    monkeypatch.setattr(bench, "TRAIN_CASES", [bench.TrainCase("lstm", 1, 16, 8, 4)])
    rows = bench.bench_run_overheads(quick=True)
    assert [r["what"].strip().split()[:2] for r in rows] == [
        ["train", "LSTM"],
        ["the", "first"],
        ["after", "--resume"],
        ["evaluating", "200,000"],
        ["saving", "last.pt"],
    ]
    assert all(r.get("chars_per_sec", 1) > 0 and r.get("cost", 1) > 0 for r in rows)
    assert all(r["vs_undisturbed"] > 0 for r in rows[1:3])
    assert {"best.pt", "metrics.jsonl"} <= set(rows[1]["evaluation_wrote"])  # a real evaluation ran
    assert rows[2]["resumed_at_step"] == 1 + 2 + 1  # warm-up, 2 timed steps, the one after evaluating
    result = {
        "machine": {"cpu": "x", "threads": 1, "device": "cpu", "torch": "t"},
        "peak_gflops": 1.0,
        "training": [],
        "overheads": median_rows([rows, rows]),
        "sampling": [],
        "tokenising": {"what": "tok", "mb_per_sec": 1.0, "peak_rss_mb": 1.0},
        "startup": {"what": "s", "seconds": 0.1},
    }
    console = Console(record=True, width=200)
    for table in bench_tables(result):
        console.print(table)
    text = console.export_text()
    assert "after --resume" in text and "of training time" in text and "× undisturbed" in text


def test_the_hand_written_gru_of_the_experiment_script_is_nn_grus_gru():
    """scripts/gru_by_hand.py times a hand-written GRU against nn.GRU; its numbers mean something
    only if it computes the same outputs and gradients."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "gru_by_hand.py"
    spec = importlib.util.spec_from_file_location("gru_by_hand", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.max_gradient_error(seed=0) < 1e-10
    assert module.max_gradient_error(seed=1) < 1e-10


def test_load_bench_reads_each_training_and_shows_ratios(tmp_path):
    import json
    import subprocess
    import sys

    from rich.console import Console

    from charrnn.bench.load import _result, policies
    from charrnn.cli.tables import bench_tables

    rows = [
        {"event": "threads", "step": 0, "threads": 2},
        {"event": "threads", "step": 30, "threads": 2},
        {"event": "threads", "step": 60, "threads": 1},
        {"step": 90, "chars_per_sec": 12345.0, "threads": 1},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = subprocess.Popen([sys.executable, "-c", "pass"], stderr=subprocess.PIPE)
    assert _result(done, tmp_path) == {"chars_per_sec": 12345.0, "threads": [2, 1]}
    auto, torch_default = policies(2)
    assert policies(2)[torch_default][1] == {"GOMP_SPINCOUNT": "300000"} and policies(2)[auto][0] == [
        "--threads",
        "auto",
    ]
    result = {
        "load": {
            "cores": 2,
            "seconds": 30,
            "auto_vs_torch_alone": 0.99,
            "busy_before": 1.0,
            "rows": [
                {"policy": auto, "situation": "alone", "chars_per_sec": 40000.0, "vs_alone": 1.0, "threads": [2]},
                {
                    "policy": auto,
                    "situation": "beside a busy core",
                    "chars_per_sec": 26000.0,
                    "vs_alone": 0.65,
                    "threads": [1],
                },
            ],
        }
    }
    console = Console(record=True, width=200)
    for table in bench_tables(result):
        console.print(table)
    text = console.export_text()
    assert "26,000" in text and "65%" in text and "99% of torch's defaults" in text
    assert "the machine was not idle: other processes kept 1.0 cores busy" in " ".join(text.split())


def test_sampling_rows_measure_the_engine_at_each_batch():
    """One quick pass: a row per batch size, its model step's GFLOP/s against the peak given."""
    from rich.console import Console

    from charrnn.bench.sampling import BATCHES, bench_sampling
    from charrnn.cli.tables import bench_tables

    rows = bench_sampling(quick=True, peak_gflops=50.0)
    engine = rows[: len(BATCHES)]
    assert [int(r["what"].split(", ")[1].split()[0]) for r in engine] == list(BATCHES)
    for row in engine:
        assert row["chars_per_sec"] > 0 and row["step_gflops"] > 0 and row["of_peak"] == row["step_gflops"] / 50.0
    assert all(r["vs_batch_1"] == r["chars_per_sec"] / engine[0]["chars_per_sec"] for r in engine[1:])
    assert (
        rows[-1]["what"].startswith("reference")
        and engine[0]["vs_naive"] == engine[0]["chars_per_sec"] / rows[-1]["chars_per_sec"]
    )
    result = {
        "machine": {"cpu": "x", "threads": 1, "device": "cpu", "torch": "t"},
        "peak_gflops": 50.0,
        "training": [],
        "sampling": rows,
        "tokenising": {"what": "tok", "mb_per_sec": 1.0, "peak_rss_mb": 1.0},
        "startup": {"what": "s", "seconds": 0.1},
    }
    console = Console(record=True, width=250)
    for table in bench_tables(result):
        console.print(table)
    shown = console.export_text()
    assert "of peak" in shown and "× batch 1" in shown
