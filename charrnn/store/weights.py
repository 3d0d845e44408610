"""The weights a model needs: the name and shape of each for a model config, and the checks
that a checkpoint's or an export's weights are those (names, shapes, finite values).

Both file formats use torch's parameter names and layout. This module imports no torch: an
export is checked where torch is not installed.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.numpy_ref import CELLS


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The name and shape of every weight of a CharRNN with this config (torch's names), in the
    order of the model's parameters."""
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


def check_shapes(shapes: Mapping[str, tuple[int, ...]], cfg: ModelConfig, source: str) -> None:
    """A CharRNNError naming the first weight that is missing, extra or of the wrong shape."""
    if cfg.cell not in CELLS:
        raise CharRNNError(f"{source}: damaged model: unknown cell {cfg.cell!r}")
    expected = expected_shapes(cfg)
    for name in sorted(set(expected) | set(shapes)):
        if name not in shapes:
            raise CharRNNError(f"{source}: damaged model: weight {name} is missing")
        if name not in expected:
            raise CharRNNError(f"{source}: damaged model: unexpected weight {name}")
        if tuple(shapes[name]) != expected[name]:
            raise CharRNNError(f"{source}: damaged model: {name} has shape {tuple(shapes[name])}, expected {expected[name]}")


def check_weights(weights: Mapping[str, Any], cfg: ModelConfig, source: str) -> None:
    """Names and shapes as `cfg` needs them, then finite values: NumPy arrays or torch tensors."""
    check_shapes({name: tuple(w.shape) for name, w in weights.items()}, cfg, source)
    check_finite(weights, source)


def check_finite(weights: Mapping[str, Any], source: str) -> None:
    """A CharRNNError naming the first weight holding a NaN or an infinity (such a model samples
    garbage, a run resumed from it learns nothing)."""
    for name, w in weights.items():
        finite = w.isfinite().all() if hasattr(w, "isfinite") else np.isfinite(w).all()  # torch or NumPy
        if not finite:
            raise CharRNNError(f"{source}: damaged model: weight {name} holds non-finite values (NaN or infinity)")
