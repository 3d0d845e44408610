"""`charrnn plot`: loss curves of several runs, in the terminal and as PNG/SVG files."""

import json
import math
import os
import struct
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import need_module, run_cli
from tiny_run import invoke

from charrnn.errors import CharRNNError
from charrnn.insight.plot import load_curves, save_figure, terminal_chart


def write_run(folder, rows):
    folder.mkdir(parents=True)
    lines = [json.dumps(r) for r in rows]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n{torn line", encoding="utf-8")
    return folder


def rows(start, end, n=6, val=True):
    out = []
    for k in range(1, n + 1):
        loss = start + (end - start) * k / n
        out.append(
            {"step": 10 * k, "chars_seen": 1000 * k, "train_loss": loss + 0.1, "val_loss": loss if val else None}
        )
    return out


@pytest.fixture
def two_runs(tmp_path):
    return (
        write_run(tmp_path / "lstm-small", rows(3.0, 1.5)),
        write_run(tmp_path / "gru-big", rows(2.8, 1.2, n=4, val=False)),  # no validation split
    )


def test_curves_come_from_metrics_sorted_by_chars_seen(two_runs):
    curves = load_curves(list(two_runs))
    assert [(c.run, c.split, len(c.loss)) for c in curves] == [
        ("lstm-small", "train", 6),
        ("lstm-small", "val", 6),
        ("gru-big", "train", 4),
    ]
    assert curves[1].chars_seen == [1000, 2000, 3000, 4000, 5000, 6000] and curves[1].loss[-1] == pytest.approx(1.5)
    in_bits = load_curves([two_runs[0]], bpc=True)
    assert in_bits[1].loss[-1] == pytest.approx(1.5 / math.log(2))


def test_terminal_chart_has_axes_lines_and_a_legend(two_runs):
    chart = terminal_chart(load_curves(list(two_runs)), width=60, height=10).plain
    lines = chart.splitlines()
    assert lines[0] == "loss (nats/char) against characters seen"
    plot_rows = lines[1:11]
    assert plot_rows[0].startswith("2.850 ┤") and plot_rows[-1].startswith("1.300 ┤")  # highest and lowest loss
    assert all(len(row) <= 60 for row in lines)
    assert sum(row.count(c) for row in plot_rows for c in row if "\u2800" < c <= "\u28ff") > 40  # braille dots
    assert lines[12].split() == ["1k", "3.5k", "6k"]  # characters seen: first, middle, last
    assert lines[13].split() == ["━━", "val", "┅┅", "train", "lstm-small"]
    assert lines[14].split() == ["┅┅", "train", "gru-big"]  # it has no validation curve


def test_a_falling_curve_is_drawn_from_top_left_to_bottom_right(tmp_path):
    run = write_run(tmp_path / "r", [{"chars_seen": 0, "val_loss": 2.0}, {"chars_seen": 10, "val_loss": 1.0}])
    rows_ = terminal_chart(load_curves([run]), width=30, height=5).plain.splitlines()[1:6]
    cells = [row[7:].ljust(30 - 7) for row in rows_]  # drop the labels ("2.000 ┤")
    assert cells[0][0] != " " and cells[-1][-1] != " "  # starts top left, ends bottom right
    assert cells[0][-1] == " " and cells[-1][0] == " "


def test_missing_metrics_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharRNNError, match="no metrics.jsonl"):
        load_curves([tmp_path / "empty"])
    write_run(tmp_path / "fresh", [])
    with pytest.raises(CharRNNError, match="no evaluations"):
        load_curves([tmp_path / "fresh"])


def test_plot_command_draws_in_the_terminal(two_runs):
    result = invoke("plot", *two_runs, "--width", "70", "--height", "8", "--bpc")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("loss (bits/char)") and "gru-big" in result.stdout and result.stderr == ""


def test_runs_of_the_same_name_are_told_apart(tmp_path):
    a = write_run(tmp_path / "a" / "run", rows(2, 1))
    b = write_run(tmp_path / "b" / "run", rows(2, 1))
    assert {c.run for c in load_curves([a, b / "metrics.jsonl"])} == {str(a), str(b / "metrics.jsonl")}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_and_svg_files(two_runs, tmp_path):
    need_module("matplotlib", "pip install -e '.[plot]'")
    result = invoke("plot", *two_runs, "--out", tmp_path / "loss.png")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and "wrote" in result.stderr
    data = (tmp_path / "loss.png").read_bytes()
    assert png_size(data) == (800, 450) and len(data) > 10_000
    save_figure(load_curves(list(two_runs)), tmp_path / "loss.svg")
    root = ET.parse(tmp_path / "loss.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "lstm-small val" in (tmp_path / "loss.svg").read_text()  # the legend is in the picture


def test_out_needs_a_known_extension(two_runs, tmp_path):
    with pytest.raises(CharRNNError, match=r"\.png or \.svg"):
        save_figure(load_curves(list(two_runs)), tmp_path / "loss.jpg")


def test_missing_matplotlib_gets_a_clear_message(two_runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(CharRNNError, match=r"needs matplotlib.*pip install 'charrnn\[plot\]'"):
        save_figure(load_curves(list(two_runs)), tmp_path / "loss.png")
    assert not (tmp_path / "loss.png").exists()


def test_missing_matplotlib_through_the_real_command(two_runs, tmp_path):
    """A matplotlib that cannot be imported (first on the path) gives one line and exit 2."""
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    path = os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])])
    result = run_cli("plot", *map(str, two_runs), "--out", str(tmp_path / "loss.png"), env_extra={"PYTHONPATH": path})
    stderr = result.stderr.decode()
    assert result.returncode == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "needs matplotlib" in stderr and "charrnn[plot]" in stderr and "Traceback" not in stderr
