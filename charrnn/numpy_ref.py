"""The textbook equations of the recurrent cells by hand, in NumPy: forward pass, loss and
back-propagation through time (BPTT) for the vanilla RNN, the LSTM and the GRU, each cell's
equations written in its class docstring as they appear in the literature (and in torch's
documentation). No torch is imported here.

It is the reference the torch model is checked against (tests/test_numpy_ref.py), and the
gradient engine of `charrnn train --engine numpy`.

Parameters: torch's names, torch's layout
-----------------------------------------
A model is a dict of arrays named exactly as `CharRNN.state_dict()` names them, so the weights
of any checkpoint load unchanged. G is the number of blocks stacked in a weight matrix:
1 for the RNN, 4 for the LSTM (torch's order i, f, g, o), 3 for the GRU (r, z, n).

    embed.weight        (V, E)     row `id` is the input x_t of the first layer
    rnn.weight_ih_l{k}  (G·H, I)   the W_x· of layer k, one H-row block per gate (I = E if k = 0, else H)
    rnn.weight_hh_l{k}  (G·H, H)   the W_h· of layer k
    rnn.bias_ih_l{k}    (G·H,)     torch keeps two biases; the equations' single b_· is their sum
    rnn.bias_hh_l{k}    (G·H,)       (the GRU's n is the one place where they act apart)
    head.weight         (V, H)     W_hy
    head.bias           (V,)       b_y

Symbols of the equations in the code
------------------------------------
    x_t                 x[:, t]: embedding rows (first layer) or h_t of the layer below
    h_{t-1}, h_t        h_prev, h        (each (B, H): one row per stream of the batch)
    c_{t-1}, c_t        c_prev, c        (LSTM)
    i, f, g, o          i, f, g, o       (LSTM gates, each (B, H))
    r, z, n             r, z, n          (GRU)
    W_x· x_t + b_x·     a_x              all G blocks of "from the input" at once, (B, G·H)
    W_h· h_{t-1} + b_h· a_h              all G blocks of "from the past" at once, (B, G·H)
    y_t                 logits[:, t]     (B, V)
    softmax(y_t)        inside `cross_entropy`

One code path for the three cells
---------------------------------
Every cell begins each step with the same two affine maps, a_x and a_h above; only what it then
does element by element differs. So a cell here is just that element-wise part: `step` (its
equations) and `step_back` (their derivatives). `forward` and `backward` do the matrix products
and the loops over layers and time for all three.

Shapes: B batch (parallel streams), T time steps, V vocabulary, E embedding, H hidden units,
L layers. A hidden state is a tuple of (L, B, H) arrays: (h,) for the RNN and GRU, (h, c) for
the LSTM, like torch's (except that torch passes the RNN's and GRU's h without a tuple).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from charrnn.cells import CELLS as DESCRIBED  # gate counts and state: the one description


def sigmoid(u: np.ndarray) -> np.ndarray:
    """sigmoid(u) = 1 / (1 + exp(-u)), written as (1 + tanh(u / 2)) / 2: the same function,
    which cannot overflow for large |u|. Its derivative is sigmoid(u) * (1 - sigmoid(u))."""
    return 0.5 * (1.0 + np.tanh(0.5 * u))


# ------------------------------------------------------------------------------ the cells
class RNNCell:
    """Vanilla (Elman) RNN:  h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)."""

    gates, state = DESCRIBED["rnn"].gates, DESCRIBED["rnn"].state

    @staticmethod
    def step(a_x, a_h, state):
        (h_prev,) = state
        h = np.tanh(a_x + a_h)
        return (h,), h  # the new state, and what step_back needs

    @staticmethod
    def step_back(d_state, cache):
        """From dL/dh_t to dL/da (for a_x and a_h alike: they are summed) and to the part of
        dL/dh_{t-1} that does not pass through W_hh (none here: `backward` adds that path)."""
        (dh,) = d_state
        h = cache
        da = dh * (1.0 - h * h)  # tanh'(u) = 1 - tanh(u)^2
        return da, da, (np.zeros_like(dh),)


class LSTMCell:
    """Long short-term memory:

    i = sigmoid(W_xi x_t + W_hi h_{t-1} + b_i)      input gate
    f = sigmoid(W_xf x_t + W_hf h_{t-1} + b_f)      forget gate
    g = tanh   (W_xg x_t + W_hg h_{t-1} + b_g)      candidate
    o = sigmoid(W_xo x_t + W_ho h_{t-1} + b_o)      output gate
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
    """

    gates, state = DESCRIBED["lstm"].gates, DESCRIBED["lstm"].state

    @staticmethod
    def step(a_x, a_h, state):
        h_prev, c_prev = state
        a_i, a_f, a_g, a_o = np.split(a_x + a_h, 4, axis=-1)  # torch's row order: i, f, g, o
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
        c = f * c_prev + i * g
        tanh_c = np.tanh(c)
        h = o * tanh_c
        return (h, c), (i, f, g, o, c_prev, tanh_c)

    @staticmethod
    def step_back(d_state, cache):
        """dh and dc arrive from above and from step t+1; c_t reaches c_{t-1} through f directly."""
        dh, dc = d_state
        i, f, g, o, c_prev, tanh_c = cache
        do = dh * tanh_c  # h_t = o * tanh(c_t)
        dc = dc + dh * o * (1.0 - tanh_c * tanh_c)
        di, df, dg = dc * g, dc * c_prev, dc * i  # c_t = f * c_{t-1} + i * g
        dc_prev = dc * f
        da = np.concatenate([di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g * g), do * o * (1.0 - o)], axis=-1)
        return da, da, (np.zeros_like(dh), dc_prev)


class GRUCell:
    """Gated recurrent unit, as torch defines it:

    r = sigmoid(W_xr x_t + b_xr + W_hr h_{t-1} + b_hr)     reset gate
    z = sigmoid(W_xz x_t + b_xz + W_hz h_{t-1} + b_hz)     update gate
    n = tanh   (W_xn x_t + b_xn + r * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}
    """

    gates, state = DESCRIBED["gru"].gates, DESCRIBED["gru"].state

    @staticmethod
    def step(a_x, a_h, state):
        (h_prev,) = state
        x_r, x_z, x_n = np.split(a_x, 3, axis=-1)  # W_x· x_t + b_x·, torch's row order r, z, n
        h_r, h_z, h_n = np.split(a_h, 3, axis=-1)  # W_h· h_{t-1} + b_h·
        r = sigmoid(x_r + h_r)
        z = sigmoid(x_z + h_z)
        n = np.tanh(x_n + r * h_n)
        h = (1.0 - z) * n + z * h_prev
        return (h,), (r, z, n, h_n, h_prev)

    @staticmethod
    def step_back(d_state, cache):
        """The only cell whose a_x and a_h get different gradients: r multiplies h_n alone."""
        (dh,) = d_state
        r, z, n, h_n, h_prev = cache
        dn = dh * (1.0 - z)  # h_t = (1 - z) * n + z * h_{t-1}
        dz = dh * (h_prev - n)
        dh_prev = dh * z
        dn_pre = dn * (1.0 - n * n)  # n = tanh(x_n + r * h_n)
        dr = dn_pre * h_n
        dr_pre, dz_pre = dr * r * (1.0 - r), dz * z * (1.0 - z)
        da_x = np.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
        da_h = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1)
        return da_x, da_h, (dh_prev,)


CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


# ------------------------------------------------------------------------------ the network
def num_layers(params: dict[str, np.ndarray]) -> int:
    return sum(1 for name in params if name.startswith("rnn.weight_ih_l"))


def layer_weights(params: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, ...]:
    """(W_x·, W_h·, b_x·, b_h·) of layer k, all G blocks stacked as torch stores them."""
    return tuple(params[f"rnn.{name}_l{k}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def zero_state(params: dict[str, np.ndarray], cell: str, batch_size: int) -> tuple[np.ndarray, ...]:
    """The state a stream starts from: zeros, (L, B, H) for each of h (and c)."""
    hidden = params["rnn.weight_hh_l0"].shape[1]
    shape = (num_layers(params), batch_size, hidden)
    return tuple(np.zeros(shape, params["head.weight"].dtype) for _ in CELLS[cell].state)


@dataclass
class Tape:
    """What the forward pass records for the backward pass, per layer k."""

    cell: type
    ids: np.ndarray  # (B, T) the input characters
    inputs: list[np.ndarray] = field(default_factory=list)  # [k]: (B, T, I) the layer's x_t
    h_prevs: list[np.ndarray] = field(default_factory=list)  # [k]: (B, T, H) h_{t-1} for each t
    caches: list[list] = field(default_factory=list)  # [k][t]: what the cell's step_back needs
    top: np.ndarray | None = None  # (B, T, H) the last layer's h_t, input of the read-out


def forward(params: dict[str, np.ndarray], cell: str, ids: np.ndarray, state=None):
    """ids (B, T) -> logits (B, T, V), the final state, and the Tape for `backward`.

    `state` is the carried hidden state (a tuple of (L, B, H) arrays), zeros if None.
    """
    cell_eqs = CELLS[cell]
    ids = np.asarray(ids)
    batch, steps = ids.shape
    if state is None:
        state = zero_state(params, cell, batch)
    tape = Tape(cell_eqs, ids)
    final = []  # each layer's last state
    x = params["embed.weight"][ids]  # (B, T, E): x_t of the first layer is the embedding row
    for k in range(num_layers(params)):
        W_x, W_h, b_x, b_h = layer_weights(params, k)
        a_x = x @ W_x.T + b_x  # (B, T, G·H): the input side of every step, in one product
        s = tuple(part[k] for part in state)  # this layer's (h,) or (h, c), each (B, H)
        h_prevs = np.empty(x.shape[:2] + (W_h.shape[1],), W_h.dtype)  # (B, T, H)
        outputs = np.empty_like(h_prevs)
        caches = []
        for t in range(steps):
            h_prevs[:, t] = s[0]
            a_h = s[0] @ W_h.T + b_h  # (B, G·H): the recurrent side
            s, cache = cell_eqs.step(a_x[:, t], a_h, s)
            outputs[:, t] = s[0]
            caches.append(cache)
        tape.inputs.append(x)
        tape.h_prevs.append(h_prevs)
        tape.caches.append(caches)
        final.append(s)
        x = outputs  # h_t of this layer is x_t of the next
    tape.top = x
    logits = x @ params["head.weight"].T + params["head.bias"]  # y_t = W_hy h_t + b_y
    new_state = tuple(np.stack([s[j] for s in final]) for j in range(len(cell_eqs.state)))
    return logits, new_state, tape


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood, in nats per character, of `targets` (B, T) under
    softmax(logits (B, T, V)); and its gradient dL/dy_t = (softmax(y_t) - onehot(target)) / N."""
    z = logits - logits.max(axis=-1, keepdims=True)  # the same softmax, safe from overflow
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    flat_log_p = log_p.reshape(-1, log_p.shape[-1])  # (N, V), N = B·T
    rows, cols = np.arange(len(flat_log_p)), np.asarray(targets).reshape(-1)
    loss = -flat_log_p[rows, cols].mean()
    d_logits = np.exp(flat_log_p)
    d_logits[rows, cols] -= 1.0
    d_logits /= len(flat_log_p)
    return float(loss), d_logits.reshape(logits.shape)


def backward(params: dict[str, np.ndarray], tape: Tape, d_logits: np.ndarray):
    """Back-propagation through time: dL/dlogits (B, T, V) -> dL/d(every parameter), named as
    `params`, and dL/d(initial state), a tuple like the state.

    Truncated BPTT: nothing flows back into the chunk from after its last step (the gradient is
    cut there), so each layer starts its backward loop with a zero gradient of its state.
    """
    grads = {name: np.zeros_like(w) for name, w in params.items()}
    cell_eqs = tape.cell
    grads["head.weight"] = np.einsum("btv,bth->vh", d_logits, tape.top)  # y_t = W_hy h_t + b_y
    grads["head.bias"] = d_logits.sum(axis=(0, 1))
    d_x = d_logits @ params["head.weight"]  # (B, T, H): dL/dh_t of the last layer, from y_t
    d_initial = []
    for k in reversed(range(num_layers(params))):
        W_x, W_h, _, _ = layer_weights(params, k)
        batch, steps, width = d_x.shape[0], d_x.shape[1], W_h.shape[0]
        da_x = np.empty((batch, steps, width), W_h.dtype)  # dL/da_x for every step
        da_h = np.empty_like(da_x)
        d_s = tuple(np.zeros_like(tape.h_prevs[k][:, 0]) for _ in cell_eqs.state)  # nothing after the chunk
        for t in reversed(range(steps)):
            # h_t went two ways: up (to the next layer or y_t: d_x) and on (to step t+1: d_s).
            d_s = (d_s[0] + d_x[:, t],) + d_s[1:]
            da_x[:, t], da_h[:, t], d_s = cell_eqs.step_back(d_s, tape.caches[k][t])
            d_s = (d_s[0] + da_h[:, t] @ W_h,) + d_s[1:]  # a_h = W_h· h_{t-1} + b_h·
        # a_x = W_x· x_t + b_x· and a_h = W_h· h_{t-1} + b_h·: sum the gradients over b and t.
        grads[f"rnn.weight_ih_l{k}"] = np.einsum("btg,bti->gi", da_x, tape.inputs[k])
        grads[f"rnn.bias_ih_l{k}"] = da_x.sum(axis=(0, 1))
        grads[f"rnn.weight_hh_l{k}"] = np.einsum("btg,bth->gh", da_h, tape.h_prevs[k])
        grads[f"rnn.bias_hh_l{k}"] = da_h.sum(axis=(0, 1))
        d_x = da_x @ W_x  # dL/dx_t: the layer below's h_t, or the embedding rows
        d_initial.insert(0, d_s)
    np.add.at(grads["embed.weight"], tape.ids, d_x)  # a character used twice sums its rows' gradients
    d_state = tuple(np.stack([d[j] for d in d_initial]) for j in range(len(cell_eqs.state)))
    return grads, d_state


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Gradient clipping, in place: when the global norm ||g|| (the square root of the sum of
    every squared entry of every gradient) exceeds `max_norm`, rescale all gradients by
    max_norm / ||g||, keeping their direction. Returns ||g|| before clipping, as torch's
    `clip_grad_norm_` does (with its same 1e-6 guard)."""
    norm = float(np.sqrt(sum(float((g * g).sum()) for g in grads.values())))
    scale = min(1.0, max_norm / (norm + 1e-6))
    if scale < 1.0:
        for g in grads.values():
            g *= scale
    return norm
