"""How values look to people on the console: a loss (nats and bits/char), a duration as a clock,
a text on one line."""

from __future__ import annotations

import math

from charrnn.units import LN2


def fmt_loss(nats: float | None) -> str:
    """A loss in nats and in bits per character ("-" where there is none)."""
    if nats is None or not math.isfinite(nats):
        return "-"
    if abs(nats) >= 1e4:  # a run that diverged
        return f"{nats:.4g} ({nats / LN2:.4g} bpc)"
    return f"{nats:.3f} ({nats / LN2:.3f} bpc)"


def fmt_clock(seconds: float) -> str:
    """A duration as MM:SS, or H:MM:SS from an hour on."""
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60:02d}:{seconds % 60:02d}"
    )


def one_line(text: str) -> str:
    """A sample on one line: newlines as ↵, other control characters as ·."""
    return "".join("↵" if c == "\n" else c if c.isprintable() else "·" for c in text)
