"""A fused NumPy engine for generation: one character per step, as fast as the CPU allows.

Sampling one character at a time is memory-bound: every step reads all recurrent weights once.
So this engine prepares the weights once for matrix-vector products and then does as little
per step as possible:

- the first layer's input projection `W_ih x + b` of every character is precomputed into a
  (V, G·H) table, so the embedding and its matmul become one row lookup;
- for the LSTM and the vanilla RNN, each upper layer's `W_ih x + W_hh h` is one product of the
  concatenated weights with the concatenated `[x, h]`, and the two biases are summed;
- the LSTM's rows are reordered to (i, f, o, g) and the sigmoid gates' rows are halved, so one
  `tanh` over all 4·H pre-activations gives every gate: sigmoid(x) = (tanh(x / 2) + 1) / 2;
- weights stay in torch's row-major (out, in) layout: at batch 1 the product is a
  matrix-vector product over contiguous rows, the fastest way to stream them from cache;
- every buffer is allocated once per batch size; each step writes into them in place.

It imports no torch: it works from a dict of NumPy arrays named as torch names them, so it
serves checkpoints and torch-free exports alike. Results match torch to float32 precision.
"""

from __future__ import annotations

import numpy as np

from charrnn.cells import CELLS


class FusedStepper:
    """prime/step as `sample.Stepper`, from weights `embed.weight`, `rnn.weight_ih_l0`, ...,
    `head.weight`, `head.bias` (float arrays) and the model's `cell`, `layers`, `hidden`."""

    def __init__(self, weights: dict[str, np.ndarray], cell: str, layers: int, hidden: int):
        self.cell, self.layers, self.hidden = cell, layers, hidden
        w = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        H, G = hidden, CELLS[cell].gates
        order = np.r_[0:H, H : 2 * H, 3 * H : 4 * H, 2 * H : 3 * H] if cell == "lstm" else np.arange(G * H)
        scale = np.ones(G * H, np.float32)
        if cell == "lstm":
            scale[: 3 * H] = 0.5  # i, f, o: tanh(x / 2) gives the sigmoid
        self.table = None  # (V, G·H): first layer's input projection (+ biases) per character
        self.w_cat, self.w_ih, self.w_hh, self.b, self.b_ih, self.b_hh = [], [], [], [], [], []
        for layer in range(layers):
            w_ih, w_hh = w[f"rnn.weight_ih_l{layer}"][order], w[f"rnn.weight_hh_l{layer}"][order]
            b_ih, b_hh = w[f"rnn.bias_ih_l{layer}"][order], w[f"rnn.bias_hh_l{layer}"][order]
            if cell == "gru":  # r multiplies (W_hn h + b_hn) alone: keep the two products apart
                if layer == 0:
                    self.table = np.ascontiguousarray(w["embed.weight"] @ w_ih.T + b_ih)
                self.w_ih.append(np.ascontiguousarray(w_ih))
                self.b_ih.append(b_ih)
                self.w_hh.append(np.ascontiguousarray(w_hh))
                self.b_hh.append(b_hh)
                continue
            w_ih, w_hh, bias = w_ih * scale[:, None], w_hh * scale[:, None], (b_ih + b_hh) * scale
            if layer == 0:
                self.table = np.ascontiguousarray(w["embed.weight"] @ w_ih.T + bias)
                self.w_hh.append(np.ascontiguousarray(w_hh))  # (G·H, H)
                self.w_cat.append(None)
                self.b.append(None)
            else:
                self.w_cat.append(np.ascontiguousarray(np.concatenate([w_ih, w_hh], axis=1)))  # (G·H, 2H)
                self.w_hh.append(None)
                self.b.append(bias)
        self.head_w = np.ascontiguousarray(w["head.weight"])  # (V, H)
        self.head_b = w["head.bias"]
        self.batch = 0

    # -------------------------------------------------------------------------- buffers
    def _allocate(self, batch: int) -> None:
        H, G, L = self.hidden, CELLS[self.cell].gates, self.layers
        self.batch = batch
        # layer 0's input is a row of the table: its buffer is its h alone, contiguous (a product
        # reads that faster than every other half-row); above it, [input | own h] for one product
        self.xh = [np.zeros((batch, H if layer == 0 else 2 * H), np.float32) for layer in range(L)]
        self.c = [np.zeros((batch, H), np.float32) for _ in range(L)]  # LSTM cell state
        self.gates = np.empty((batch, G * H), np.float32)
        self.gates_h = np.empty((batch, G * H), np.float32)  # GRU's hidden-side products
        self.tmp = np.empty((batch, H), np.float32)
        self.logits = np.empty((batch, self.head_b.shape[0]), np.float32)

    def reset(self, batch: int) -> None:
        if batch != self.batch:
            self._allocate(batch)
        for buf in (*self.xh, *self.c):
            buf.fill(0.0)

    # -------------------------------------------------------------------------- one step
    def _product(self, weight: np.ndarray, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """x @ weight.T, in `out` (an engine may return a buffer of its own instead). With one
        row, a matrix-vector product over the weight's contiguous rows, which streams the weights
        fastest (about 1.3x a 1-row matmul)."""
        if self.batch == 1:
            np.dot(weight, x[0], out=out[0])
        else:
            np.matmul(x, weight.T, out=out)
        return out

    def _layer(self, layer: int, ids: np.ndarray | None) -> np.ndarray:
        """Advance `layer` one step; returns its new h (also copied into the next layer's input)."""
        H, g, xh = self.hidden, self.gates, self.xh[layer]
        h = xh if layer == 0 else xh[:, H:]
        if self.cell == "gru":
            if layer == 0:
                np.take(self.table, ids, axis=0, out=g)
            else:
                g = self._product(self.w_ih[layer], xh[:, :H], g)
                g += self.b_ih[layer]
            gh = self._product(self.w_hh[layer], h, self.gates_h)
            gh += self.b_hh[layer]
            g[:, : 2 * H] += gh[:, : 2 * H]
            rz = g[:, : 2 * H]
            np.negative(rz, out=rz)
            np.exp(rz, out=rz)
            rz += 1.0
            np.reciprocal(rz, out=rz)  # r, z = sigmoid(...)
            n = g[:, 2 * H :]
            gh[:, 2 * H :] *= g[:, :H]  # r * (W_hn h + b_hn)
            n += gh[:, 2 * H :]
            np.tanh(n, out=n)
            # h = (1 - z) * n + z * h  =  n + z * (h - n)
            np.subtract(h, n, out=self.tmp)
            self.tmp *= g[:, H : 2 * H]
            np.add(n, self.tmp, out=h)
        else:
            if layer == 0:
                g = self._product(self.w_hh[0], h, g)
                g += self.table[ids]
            else:
                g = self._product(self.w_cat[layer], xh, g)
                g += self.b[layer]
            np.tanh(g, out=g)
            if self.cell == "rnn":
                h[...] = g
            else:
                sig = g[:, : 3 * H]
                sig *= 0.5
                sig += 0.5
                c = self.c[layer]
                c *= g[:, H : 2 * H]  # f * c
                np.multiply(g[:, :H], g[:, 3 * H :], out=self.tmp)  # i * g
                c += self.tmp
                np.tanh(c, out=self.tmp)
                np.multiply(g[:, 2 * H : 3 * H], self.tmp, out=h)  # o * tanh(c)
        if layer + 1 < self.layers:
            self.xh[layer + 1][:, :H] = h
        return h

    def step(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.intp)
        h = None
        for layer in range(self.layers):
            h = self._layer(layer, ids)
        logits = self._product(self.head_w, h, self.logits)
        logits += self.head_b
        return logits

    def select(self, rows: np.ndarray) -> None:
        """Row i becomes the old row rows[i], or a fresh (zero) state where rows[i] is -1."""
        rows = np.asarray(rows, dtype=np.intp)
        fresh = rows < 0
        kept = [buf[np.maximum(rows, 0)] for buf in (*self.xh, *self.c)] if self.batch else None  # (copies)
        if len(rows) != self.batch:
            self._allocate(len(rows))
        for i, buf in enumerate((*self.xh, *self.c)):
            if kept is None:
                buf.fill(0.0)
            else:
                buf[...] = kept[i]
                buf[fresh] = 0.0

    def prime(self, ids: list[int], batch_size: int) -> np.ndarray:
        self.reset(batch_size)
        logits = None
        for i in ids:
            logits = self.step(np.full(batch_size, i, dtype=np.intp))
        return logits
