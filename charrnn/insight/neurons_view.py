"""Showing a unit's activation on its text: coloured characters for the terminal and for HTML.

Each character gets a background from red (-1) through white (0) to blue (+1): the activation
of the unit after reading that character. Newlines are shown as ↵ (and still break the line).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
from rich.table import Table
from rich.text import Text

from charrnn.insight.neurons import FEATURES, Match


@dataclass
class Section:
    """One unit shown on a text."""

    title: str
    text: str
    values: np.ndarray  # (T,) activations in [-1, 1]


def colour(value: float) -> tuple[int, int, int]:
    """-1 red, 0 white, +1 blue."""
    v = float(np.clip(value, -1.0, 1.0))
    if v >= 0:
        return round(255 * (1 - v)), round(255 * (1 - 0.55 * v)), 255
    a = -v
    return 255, round(255 * (1 - 0.8 * a)), round(255 * (1 - 0.8 * a))


def shown(char: str) -> str:
    if char == "\n":
        return "↵"
    if char == "\t":
        return "→"
    return char if char.isprintable() else "·"


def rich_text(text: str, values: np.ndarray) -> Text:
    out = Text()
    for char, value in zip(text, values):
        r, g, b = colour(value)
        out.append(shown(char), style=f"black on rgb({r},{g},{b})")
        if char == "\n":
            out.append("\n")
    return out


def legend() -> Text:
    out = Text("activation: ")
    for v in (-1.0, -0.5, 0.0, 0.5, 1.0):
        r, g, b = colour(v)
        out.append(f" {v:+.1f} ", style=f"black on rgb({r},{g},{b})")
    return out


def ranking_table(matches: list[Match], absent: list[str]) -> Table:
    table = Table(title="units that best track each feature", title_justify="left")
    for name, justify in (("feature", "left"), ("layer", "right"), ("unit", "right"), ("correlation", "right")):
        table.add_column(name, justify=justify)
    for m in matches:
        table.add_row(m.feature, str(m.layer), str(m.unit), f"{m.correlation:+.3f}")
    for name in absent:
        table.add_row(name, "-", "-", "[dim]never varies in this text[/]")
    return table


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
.text {{ font-family: monospace; white-space: pre-wrap; line-height: 1.5; border: 1px solid #ddd; padding: 0.5em; }}
.text span {{ color: #000; }}
.note {{ color: #555; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="note">{note}</p>
<p class="note">Background: the unit's activation after reading each character, from red (&minus;1)
through white (0) to blue (+1); hover for the value. &#8629; marks a newline.</p>
{sections}
</body>
</html>
"""


def html_section(section: Section) -> str:
    spans = []
    for char, value in zip(section.text, section.values):
        r, g, b = colour(value)
        spans.append(
            f'<span style="background:#{r:02x}{g:02x}{b:02x}" title="{value:+.3f}">{html.escape(shown(char))}</span>'
        )
        if char == "\n":
            spans.append("\n")
    return f'<h2>{html.escape(section.title)}</h2>\n<div class="text">{"".join(spans)}</div>\n'


def html_page(title: str, note: str, sections: list[Section], matches: list[Match] | None = None) -> str:
    body = ""
    if matches:
        rows = "".join(
            f"<tr><td>{html.escape(m.feature)}</td><td>{m.layer}</td><td>{m.unit}</td><td>{m.correlation:+.3f}</td></tr>"
            for m in matches
        )
        features = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in FEATURES.items())
        body += (
            "<h2>Units that track features of the text</h2>\n<ul>" + features + "</ul>\n"
            '<table border="1" cellpadding="4"><tr><th>feature</th><th>layer</th><th>unit</th>'
            "<th>correlation</th></tr>" + rows + "</table>\n"
        )
    body += "".join(html_section(s) for s in sections)
    return PAGE.format(title=html.escape(title), note=html.escape(note), sections=body)
