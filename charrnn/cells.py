"""The three recurrent cells, described once: how many gate blocks each stacks in its weights,
the state it carries, and the names and shapes of a CharRNN's weights (torch's names and
layout, which the checkpoint, the export, the NumPy code and the benchmark all use).

model.py builds torch's cells from it, numpy_ref.py and sample/numpy_engine.py compute them by
hand, store/ checks files against it, bench/ counts FLOPs with it. It imports nothing (not even
numpy), so the NumPy-only code and a machine without torch can use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    name: str
    gates: int  # blocks of `hidden` rows stacked in weight_ih / weight_hh / the biases
    state: tuple[str, ...]  # what a stream carries from one step to the next


CELLS: dict[str, Cell] = {
    "lstm": Cell("lstm", 4, ("h", "c")),  # i, f, g, o
    "gru": Cell("gru", 3, ("h",)),  # r, z, n
    "rnn": Cell("rnn", 1, ("h",)),  # tanh
}


def weight_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The name and shape of every weight of a CharRNN with this model config (cell, layers,
    hidden, embed, vocab_size; torch's names), in the order of the model's parameters: the
    embedding, then per layer k weight_ih_lk, weight_hh_lk, bias_ih_lk, bias_hh_lk, the head."""
    G, H, V = CELLS[cfg.cell].gates, cfg.hidden, cfg.vocab_size
    shapes = {"embed.weight": (V, cfg.embed)}
    for k in range(cfg.layers):
        width = cfg.embed if k == 0 else H
        shapes |= {
            f"rnn.weight_ih_l{k}": (G * H, width),
            f"rnn.weight_hh_l{k}": (G * H, H),
            f"rnn.bias_ih_l{k}": (G * H,),
            f"rnn.bias_hh_l{k}": (G * H,),
        }
    return shapes | {"head.weight": (V, H), "head.bias": (V,)}


def parameter_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """The weights a CharRNN learns, in the order of model.parameters(): those of weight_shapes,
    less head.weight when it is the embedding's matrix (tie_weights: torch lists a shared
    parameter once)."""
    shapes = weight_shapes(cfg)
    if getattr(cfg, "tie_weights", False):
        del shapes["head.weight"]
    return shapes


def parameter_count(cfg) -> int:
    """How many numbers a CharRNN with this model config learns."""
    return sum(math.prod(shape) for shape in parameter_shapes(cfg).values())


def weights_per_char(cell: str, layers: int, hidden: int, embed: int, vocab: int) -> int:
    """The weights that each cost one multiply-add per character in the forward pass: the cells'
    input and recurrent matrices and the read-out (the embedding is a lookup, biases are noise).
    bench/ counts FLOPs with it (2 per multiply-add); --size auto, what a model costs."""
    gates = CELLS[cell].gates
    cells = sum(gates * hidden * ((embed if k == 0 else hidden) + hidden) for k in range(layers))
    return cells + vocab * hidden
