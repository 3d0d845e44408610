"""The packed engine: the fused NumPy step (numpy_engine.py) with its matrix products done by
oneDNN (through torch) on weights packed once for the product.

Why: generation steps many streams as one batch (sample/batch.py), and a batch of 2-64 rows is
where the BLAS called the usual way is slowest: `np.matmul(x, W.T)` re-packs the whole weight
matrix at every call, so 4 rows of a 2048x1024 product run at ~7 GFLOP/s on one core. oneDNN's
inner product on a weight reordered once (`mkldnn._reorder_linear_weight`) reads it as it is:
measured on this project's 2-core machine (LSTM 2x512's 2048x1024 product, one thread), 53
GFLOP/s at 2 rows, 90 at 4, 100 at 8, 103 at 16, 110 at 64.

And a row's result does not depend on how many rows are computed with it: the packed kernel
walks the same blocks for any batch size (measured bit for bit, batch 2 to 64, one thread or
two), and the elementwise rest of the step (NumPy, row by row) keeps it so. `charrnn sample`
and `charrnn serve` both step through this engine, so a served text equals the command's for
the same seed.

One row is the exception: oneDNN's fixed cost per call (~15 us) makes it 1.5-2.5x slower than
NumPy's matrix-vector product there (LSTM 2x256: 173 against 71 us a step), so a batch of one
runs the NumPy step, whose float32 rounding differs in the last bits (see sample/batch.py).

Needs torch built with oneDNN (torch's x86 and Arm CPU wheels are); `packed_available()` says
whether it is, and the engines fall back to the NumPy step where it is not.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from charrnn.sample.numpy_engine import FusedStepper

PACK_FOR_ROWS = 16  # the batch the weights are packed for; any other batch reuses the packing


@cache
def packed_available() -> bool:
    """Whether torch (with oneDNN, on the CPU) can run the packed products here."""
    try:
        import torch

        if not torch.backends.mkldnn.is_available():
            return False
        w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), PACK_FOR_ROWS)
        y = torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), w, None, "none", [], "")
        return bool(torch.equal(y, torch.full((1, 2), 2.0)))
    except Exception:  # no torch, an old one, or a build without oneDNN
        return False


class PackedStepper(FusedStepper):
    """`FusedStepper` whose products `x @ W.T` run as oneDNN inner products on packed weights."""

    def __init__(self, weights: dict[str, np.ndarray], cell: str, layers: int, hidden: int):
        import torch

        super().__init__(weights, cell, layers, hidden)
        self._torch = torch
        self._op = torch.ops.mkldnn._linear_pointwise.default
        self._packed: dict[int, object] = {}
        for weight in (*self.w_cat, *self.w_ih, *self.w_hh, self.head_w):
            if weight is not None:
                self._packed[id(weight)] = torch.ops.mkldnn._reorder_linear_weight(
                    torch.from_numpy(weight), PACK_FOR_ROWS
                )

    def _product(self, weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """x @ weight.T: oneDNN's own result (copying it into `out` cost 26 us of a 130 us
        product at batch 16), or at batch 1 NumPy's, in `out`."""
        if self.batch == 1:  # one row: NumPy's matrix-vector product is the faster (see above)
            return super()._product(weight, x, out)
        return self._op(self._torch.from_numpy(x), self._packed[id(weight)], None, "none", [], "").numpy()
