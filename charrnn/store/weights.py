"""The checks that a checkpoint's or an export's weights are those a model config needs (names
and shapes, as cells.py describes them; finite values).

Both file formats use torch's parameter names and layout. This module imports no torch: an
export is checked where torch is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from charrnn.cells import CELLS, weight_shapes
from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError


def check_shapes(shapes: Mapping[str, tuple[int, ...]], cfg: ModelConfig, source: str) -> None:
    """A CharRNNError naming the first weight that is missing, extra or of the wrong shape."""
    if cfg.cell not in CELLS:
        raise CharRNNError(f"{source}: damaged model: unknown cell {cfg.cell!r}")
    expected = weight_shapes(cfg)
    for name in sorted(set(expected) | set(shapes)):
        if name not in shapes:
            raise CharRNNError(f"{source}: damaged model: weight {name} is missing")
        if name not in expected:
            raise CharRNNError(f"{source}: damaged model: unexpected weight {name}")
        if tuple(shapes[name]) != expected[name]:
            raise CharRNNError(
                f"{source}: damaged model: {name} has shape {tuple(shapes[name])}, expected {expected[name]}"
            )


def check_finite(weights: Mapping[str, Any], source: str) -> None:
    """A CharRNNError naming the first weight holding a NaN or an infinity (such a model samples
    garbage, a run resumed from it learns nothing)."""
    for name, w in weights.items():
        finite = w.isfinite().all() if hasattr(w, "isfinite") else np.isfinite(w).all()  # torch or NumPy
        if not finite:
            raise CharRNNError(f"{source}: damaged model: weight {name} holds non-finite values (NaN or infinity)")
