"""`charrnn bench --serve`: one short pass through its machinery (a real server, real clients).
Speed itself is never asserted: the bench prints it."""

from __future__ import annotations

import pytest
from conftest import invoke
from rich.console import Console

from charrnn.errors import plural
from charrnn.machine.threads import cores_here


def test_serve_bench_measures_each_number_of_clients():
    from charrnn.bench.serve import LENGTH, run_serve
    from charrnn.cli.tables import bench_tables

    result = run_serve(seconds=0.3, clients=(1, 3), engines="2")
    assert result["length"] == LENGTH == 200 and result["model"] == "LSTM 2×256"
    assert result["engines"] == min(2, cores_here())  # (serve cuts --engines to the cores)
    assert [row["clients"] for row in result["rows"]] == [1, 3]
    for row in result["rows"]:
        assert row["requests"] >= 1 and row["requests_per_sec"] > 0
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["chars_per_sec"] == pytest.approx(row["requests_per_sec"] * LENGTH)
        assert 1 <= row["mean_batch"] <= row["clients"] and row["engine_gflops"] > 0
        assert 1 <= row["engines_stepped"] <= result["engines"]
        assert row["of_peak"] == pytest.approx(row["engine_gflops"] / result["peak_gflops"])
        assert 0 < row["model_busy"] < 1.5 * 2  # a share of the wall time, summed over two engines (a step begun
        # before the row may end in it)
    assert result["rows"][0]["vs_one_client"] == 1.0
    assert result["rows"][0]["engines_stepped"] == 1  # (one client at a time: always the first, idle, engine)
    console = Console(record=True, width=200)
    for table in bench_tables({"serve": result}):
        console.print(table)
    shown = console.export_text()
    assert "charrnn serve" in shown and "p99 latency" in shown and "requests/s" in shown and "of peak" in shown
    engines = plural(result["engines"], "engine")
    assert "model steps' share" in shown and engines in shown and "engines that stepped" in shown


def test_no_speed_names_serve_as_something_to_measure():
    result = invoke("bench", "--no-speed")
    assert result.returncode != 0 and "--serve" in result.stderr.decode()
    result = invoke("bench", "--no-speed", "--serve", "--serve-seconds", "0")
    assert result.returncode != 0 and "--serve-seconds" in result.stderr.decode()
    result = invoke("bench", "--no-speed", "--serve", "--serve-engines", "none")
    assert (
        result.returncode != 0 and "--serve-engines 'none' must be a positive number or auto" in result.stderr.decode()
    )


def test_bench_names_the_precision_it_measures():
    """train's --precision auto is a choice, not a precision to measure: refused, not run as fp32."""
    result = invoke("bench", "--quick", "--precision", "auto")
    assert result.returncode != 0 and "--precision 'auto' is not one of: fp32, bf16, fp16" in result.stderr.decode()
