"""What single units of the recurrent layers respond to: the cell-activation view of char-rnn.

`activations` feeds a text through a model one character at a time (batch 1, state carried) and
records, after each character, the state of every unit of every layer:

- LSTM: by default tanh(c), the cell state squashed to (-1, 1) as the output gate sees it
  (`state="c"`); or h = o * tanh(c), the layer's output (`state="h"`).
- GRU and vanilla RNN: h, the only state they have (also in (-1, 1)).

`text_features` turns the text into simple per-character signals (inside quotes, inside
brackets, position in the line, start of a word), and `rank_units` finds the units whose
activation correlates best (Pearson, by absolute value) with each of them. Rendering (terminal
and HTML) is in `charrnn.insight.neurons_view`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError, plural
from charrnn.model import CharRNN

OPEN_BRACKETS, CLOSE_BRACKETS = "([{", ")]}"
FEATURES = {
    "in quotes": 'inside "double quotes" (or “curly” ones), the quote marks included',
    "in brackets": "inside (), [] or {} at any depth, the brackets included",
    "line position": "characters since the last newline",
    "word start": "a letter or digit that follows something else",
}


def default_state(cell: str) -> str:
    return "c" if cell == "lstm" else "h"


def check_choice(model: CharRNN, layer: int | None, unit: int | None, state: str | None) -> tuple[int, str]:
    """Validate --layer/--unit/--state against the model; return the layer index (from 0) and state."""
    cfg = model.cfg
    state = state or default_state(cfg.cell)
    if state not in ("c", "h"):
        raise CharRNNError(f"--state {state!r} is not one of: c, h")
    if state == "c" and cfg.cell != "lstm":
        raise CharRNNError(f"--state c: only an LSTM has a cell state; this {cfg.cell.upper()} has h only")
    if layer is None:
        layer = cfg.layers - 1
    if not -cfg.layers <= layer < cfg.layers:
        raise CharRNNError(
            f"--layer {layer}: the model has {plural(cfg.layers, 'layer')}, numbered from 0"
            + (f" to {cfg.layers - 1}" if cfg.layers > 1 else "")
        )
    if unit is not None and not 0 <= unit < cfg.hidden:
        raise CharRNNError(f"--unit {unit}: each layer has {cfg.hidden} units, numbered 0 to {cfg.hidden - 1}")
    return layer % cfg.layers, state


def activations(model: CharRNN, vocab: Vocab, text: str, state: str = "h") -> np.ndarray:
    """(T, L, H) float32: every unit's state after reading each character of `text`."""
    if not text:
        raise CharRNNError("no text to show")
    cfg = model.cfg
    device = model.head.weight.device
    ids = torch.from_numpy(vocab.encode(text).astype(np.int64)).to(device).unsqueeze(0)  # (1, T)
    out = np.empty((ids.shape[1], cfg.layers, cfg.hidden), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            x = model.embed(ids)  # (1, T, E)
            hidden = None
            for t in range(ids.shape[1]):
                # one step of one stream, (1, 1, E), reads the same batch-first or time-major
                _, hidden = model.rnn(x[:, t : t + 1], hidden)  # hidden: (L, 1, H), or (h, c) of them
                if isinstance(hidden, tuple):
                    value = torch.tanh(hidden[1]) if state == "c" else hidden[0]
                else:
                    value = hidden
                out[t] = value[:, 0].float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def text_features(text: str) -> dict[str, np.ndarray]:
    """Per-character signals (T,), each the state *after* reading that character."""
    n = len(text)
    quotes, brackets, column, word_start = (np.zeros(n, dtype=np.float64) for _ in range(4))
    inside, depth, col, prev_alnum = False, 0, 0, False
    for t, c in enumerate(text):
        if c == '"':
            inside = not inside
        elif c == "“":
            inside = True
        elif c == "”":
            inside = False
        if c in OPEN_BRACKETS:
            depth += 1
        elif c in CLOSE_BRACKETS:
            depth = max(0, depth - 1)
        col = 0 if c == "\n" else col + 1
        alnum = c.isalnum()
        quotes[t] = inside or c in '"”'  # a closing quote still belongs to the quotation
        brackets[t] = depth > 0 or c in CLOSE_BRACKETS
        column[t] = col
        word_start[t] = alnum and not prev_alnum
        prev_alnum = alnum
    return {"in quotes": quotes, "in brackets": brackets, "line position": column, "word start": word_start}


@dataclass
class Match:
    feature: str
    layer: int
    unit: int
    correlation: float  # Pearson correlation of the unit's activation with the feature


def correlations(acts: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation (L, H) of every unit's activation (T, L, H) with one feature (T,)."""
    a = acts.reshape(len(acts), -1).astype(np.float64)
    a = a - a.mean(axis=0)
    f = feature - feature.mean()
    denominator = np.sqrt((a * a).sum(axis=0) * (f * f).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denominator > 0, (a * f[:, None]).sum(axis=0) / denominator, 0.0)
    return r.reshape(acts.shape[1:])


def rank_units(
    acts: np.ndarray, features: dict[str, np.ndarray], top: int = 3, layer: int | None = None
) -> tuple[list[Match], list[str]]:
    """The `top` units per feature by |correlation| (within `layer`, or all layers), best first;
    and the features that never vary in this text (so nothing can track them)."""
    matches, absent = [], []
    for name, feature in features.items():
        if feature.std() == 0:
            absent.append(name)
            continue
        r = correlations(acts, feature)  # (L, H)
        layers = list(range(r.shape[0])) if layer is None else [layer]
        candidates = r[layers]
        for flat in np.argsort(-np.abs(candidates), axis=None, kind="stable")[:top]:
            i, unit = np.unravel_index(flat, candidates.shape)
            matches.append(Match(name, layers[i], int(unit), float(candidates[i, unit])))
    return matches, absent
