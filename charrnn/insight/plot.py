"""Loss curves of one or more runs: train and validation loss against characters seen.

The curves come from each run's `metrics.jsonl`. `terminal_chart` draws them with braille
characters (2×4 dots per character cell) for the terminal, with no dependency beyond rich:
each run has its colour, validation is a solid line, training a dotted one. `save_figure` writes
a PNG or SVG with matplotlib, an optional dependency (`pip install 'charrnn[plot]'`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text

from charrnn.errors import CharRNNError
from charrnn.insight.runs import finite, human
from charrnn.store.run_folder import METRICS, metrics_path, read_metrics
from charrnn.units import LN2

COLOURS = ("cyan", "magenta", "yellow", "green", "blue", "red", "bright_white")
HEX_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
# braille dot bit for (column 0-1, row 0-3) inside one character cell
DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


@dataclass
class Curve:
    run: str  # label of the run
    split: str  # "train" or "val"
    chars_seen: list[float]
    loss: list[float]


def load_curves(paths: list[str | Path], bpc: bool = False) -> list[Curve]:
    """Train and validation curves of each run folder (or metrics.jsonl file) in `paths`."""
    folders = [Path(p) for p in paths]
    names = [f.parent.name if f.name == METRICS else f.name for f in folders]
    if len(set(names)) < len(names):  # two runs of the same name in different places
        names = [str(f) for f in folders]
    scale = 1 / LN2 if bpc else 1.0
    curves = []
    for folder, name in zip(folders, names):
        metrics = metrics_path(folder)
        if not metrics.is_file():
            raise CharRNNError(f"{folder}: no {METRICS} here (give a run folder, e.g. checkpoints/NAME)")
        rows = sorted((r for r in read_metrics(metrics) if finite(r.get("chars_seen"))), key=lambda r: r["chars_seen"])
        found = False
        for split in ("train", "val"):
            points = [(r["chars_seen"], r[f"{split}_loss"] * scale) for r in rows if finite(r.get(f"{split}_loss"))]
            if points:
                found = True
                curves.append(Curve(name, split, [p[0] for p in points], [p[1] for p in points]))
        if not found:
            raise CharRNNError(f"{metrics}: no evaluations recorded yet")
    return curves


def _span(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-12:
        pad = abs(low) * 0.05 or 1.0
        return low - pad, high + pad
    return low, high


def terminal_chart(curves: list[Curve], width: int = 72, height: int = 16, unit: str = "nats/char") -> Text:
    """A braille line chart of the curves: y labels on the left, chars seen below, a legend."""
    if not curves:
        raise CharRNNError("nothing to plot")
    x_low, x_high = _span([x for c in curves for x in c.chars_seen])
    y_low, y_high = _span([y for c in curves for y in c.loss])
    label_width = max(len(f"{v:.3f}") for v in (y_low, y_high))
    width = max(10, width - label_width - 2)
    height = max(3, height)
    cols, rows = width * 2, height * 4  # dot resolution
    bits = [[0] * width for _ in range(height)]
    style = [[""] * width for _ in range(height)]
    runs = list(dict.fromkeys(c.run for c in curves))
    colour = {run: COLOURS[i % len(COLOURS)] for i, run in enumerate(runs)}

    def to_dot(x: float, y: float) -> tuple[int, int]:
        col = round((x - x_low) / (x_high - x_low) * (cols - 1))
        row = round((y_high - y) / (y_high - y_low) * (rows - 1))
        return col, row

    for curve in sorted(curves, key=lambda c: c.split == "val"):  # validation drawn last, on top
        dots = [to_dot(x, y) for x, y in zip(curve.chars_seen, curve.loss)]
        path = dots[:1]
        for (c0, r0), (c1, r1) in zip(dots, dots[1:]):
            n = max(abs(c1 - c0), abs(r1 - r0), 1)
            path += [(round(c0 + (c1 - c0) * k / n), round(r0 + (r1 - r0) * k / n)) for k in range(1, n + 1)]
        dotted = curve.split == "train"
        for k, (col, row) in enumerate(path):
            if dotted and k % 3 == 2 and 0 < k < len(path) - 1:
                continue
            bits[row // 4][col // 2] |= DOTS[col % 2][row % 4]
            style[row // 4][col // 2] = colour[curve.run] if curve.split == "val" else f"dim {colour[curve.run]}"

    out = Text(f"loss ({unit}) against characters seen\n", style="bold")
    for r in range(height):
        label = f"{y_high - (y_high - y_low) * r / (height - 1):.3f}" if r in (0, height // 2, height - 1) else ""
        out.append(f"{label:>{label_width}} {'┤' if label else '│'}")
        for c in range(width):
            out.append(chr(0x2800 + bits[r][c]) if bits[r][c] else " ", style=style[r][c] or None)
        out.append("\n")
    out.append(" " * label_width + " └" + "─" * width + "\n")
    ticks = [human(x_low), human((x_low + x_high) / 2), human(x_high)]
    axis = [" "] * width
    for pos, tick in ((0, ticks[0]), ((width - len(ticks[1])) // 2, ticks[1]), (width - len(ticks[2]), ticks[2])):
        axis[pos : pos + len(tick)] = tick
    out.append(" " * (label_width + 2) + "".join(axis).rstrip() + "\n")
    for run in runs:
        out.append(" " * (label_width + 2))
        splits = {c.split for c in curves if c.run == run}
        out.append("━━ val" if "val" in splits else "      ", style=colour[run])
        out.append("  ")
        out.append("┅┅ train" if "train" in splits else "        ", style=f"dim {colour[run]}")
        out.append(f"  {run}\n")
    return out


def save_figure(curves: list[Curve], out: str | Path, unit: str = "nats/char") -> Path:
    """Write the curves as a PNG or SVG (by the file's extension) with matplotlib."""
    out = Path(out)
    kind = out.suffix.lower().lstrip(".")
    if kind not in ("png", "svg"):
        raise CharRNNError(f"--out {out}: give a file name ending in .png or .svg")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CharRNNError(
            "writing a plot file needs matplotlib, an optional dependency of charrnn that is not "
            "installed here: pip install 'charrnn[plot]' (or pip install matplotlib; make setup "
            "installs it); without --out the plot is drawn in the terminal"
        ) from None
    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    runs = list(dict.fromkeys(c.run for c in curves))
    for curve in curves:
        colour = HEX_COLOURS[runs.index(curve.run) % len(HEX_COLOURS)]
        solid = curve.split == "val"
        ax.plot(
            curve.chars_seen,
            curve.loss,
            color=colour,
            linestyle="-" if solid else "--",
            alpha=1.0 if solid else 0.6,
            marker="o" if len(curve.loss) == 1 else None,
            label=f"{curve.run} {curve.split}",
        )
    ax.set_xlabel("characters seen")
    ax.set_ylabel(f"loss ({unit})")
    ax.grid(alpha=0.3)
    ax.legend()
    try:
        fig.savefig(out, format=kind)
    except OSError as exc:
        raise CharRNNError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    return out
