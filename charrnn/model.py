"""`CharRNN`: embedding -> multi-layer LSTM / GRU / vanilla RNN -> linear read-out.

The three cells share every line but the choice of torch module; the only cell-specific detail
is the LSTM's hidden state, an (h, c) pair instead of a single tensor. The model knows nothing
about files, flags or devices.

Shapes: B = batch (streams), T = time steps, E = embedding, H = hidden, L = layers,
V = vocabulary size.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charrnn.cells import CELLS
from charrnn.config import ModelConfig

RNN_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

Hidden = "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"  # (L, B, H) or a pair of them


class CharRNN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        self.rnn = RNN_MODULES[cfg.cell](
            input_size=cfg.embed,
            hidden_size=cfg.hidden,
            num_layers=cfg.layers,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,
            batch_first=False,  # time-major: the fused CPU kernels run about 2x faster this way
        )
        self.drop = nn.Dropout(cfg.dropout)
        # How dropout's masks are drawn while training: "locked" (one mask per stream and chunk,
        # the same at every time step: variational dropout, AWD-LSTM's LockedDropout) or
        # "element" (a new mask at every time step). A training option (`--dropout-mask`), set by
        # the trainer, not part of the model's shape; see `_dropped`.
        self.dropout_mask = "locked"
        # DropConnect on the recurrent (hidden-to-hidden) matrices while training: a training
        # option (`--weight-drop`), set by the trainer, not part of the model's shape
        self.weight_drop = 0.0
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        if cfg.tie_weights:  # one (V, H) matrix reads characters in and scores them out (embed == hidden)
            self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor, hidden: Hidden | None = None):
        """ids (B, T) -> logits (B, T, V), new hidden state.

        The recurrent layers run time-major (T, B, ...), which the fused kernels prefer; the
        transposes at both ends are views, not copies.
        """
        x = self._dropped(self.embed(ids.t()))  # (T, B, E)
        out, hidden = self._recur(x, hidden)  # (T, B, H)
        return self.head(self._dropped(out)).transpose(0, 1), hidden  # (B, T, V)

    def _locked(self) -> bool:
        return self.training and self.drop.p > 0 and self.dropout_mask == "locked"

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout on a non-recurrent connection, x (T, B, D). Locked: each stream drops the same
        units at every time step of the chunk, so a mask is B x D random numbers, not T x B x D:
        on the CPU drawing them (`bernoulli_`) was most of what dropout cost (LSTM 2x256, bf16,
        batch 32 x 128, two threads: three masks 22 ms of a 130 ms step)."""
        if not self._locked():
            return self.drop(x)
        return x * self._mask(x)

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        """A locked mask for x (T, B, D): (1, B, D), 0 or 1 / (1 - p)."""
        keep = 1.0 - self.drop.p
        return x.new_empty((1, *x.shape[1:])).bernoulli_(keep).div_(keep)

    def _recur(self, x: torch.Tensor, hidden: Hidden | None):
        """The recurrent layers. With weight drop (training only), AWD-LSTM's DropConnect: each
        hidden-to-hidden matrix has a random `weight_drop` of its weights zeroed (the rest
        scaled up) for this chunk, the same for every stream and time step, and the dropped
        matrices are handed to the same fused kernel as the weights themselves (`functional_call`
        swaps them in for this call only): no per-step loop, and the gradient reaches the
        parameters through the mask. With locked dropout (training only) between layers, the
        layers run one fused call each, a locked mask between them (`_layers`), on the CPU; on
        a GPU the masks between layers stay torch's own, one a step (cuDNN runs its layers from
        one flat buffer of weights, which one call a layer would copy at every call: not tried
        on a GPU), and only the embedding's and the read-out's are locked."""
        weights = None
        if self.training and self.weight_drop > 0:
            keep = 1.0 - self.weight_drop
            weights = {  # (a Bernoulli mask times the weights: half the time of F.dropout on the CPU)
                name: w * torch.empty_like(w).bernoulli_(keep).div_(keep) if name.startswith("weight_hh") else w
                for name, w in self.rnn.named_parameters()
            }
        if self.rnn.num_layers > 1 and self._locked() and x.device.type == "cpu":
            return self._layers(x, hidden, weights or dict(self.rnn.named_parameters()))
        if weights is None:
            return self.rnn(x, hidden)
        return torch.func.functional_call(self.rnn, weights, (x, hidden))

    def _layers(self, x: torch.Tensor, hidden: Hidden | None, weights: dict[str, torch.Tensor]):
        """The recurrent layers one fused call each (what `self.rnn` runs, layer by layer), the
        input of every layer above the first multiplied by a locked mask (`_mask`)."""
        run = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn": torch._VF.rnn_tanh}[self.cfg.cell]
        L, B, H = self.rnn.num_layers, x.shape[1], self.rnn.hidden_size
        if hidden is None:
            zeros = x.new_zeros((L, B, H))
            hidden = (zeros, zeros) if self.cfg.cell == "lstm" else zeros
        parts = hidden if isinstance(hidden, tuple) else (hidden,)  # each (L, B, H)
        ends = []
        for layer in range(L):
            if layer:
                x = self._dropped(x)
            params = [weights[f"{kind}_l{layer}"] for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            state = tuple(part[layer : layer + 1] for part in parts)
            x, *end = run(x, state if len(state) > 1 else state[0], params, True, 1, 0.0, self.training, False, False)
            ends.append(end)
        new = tuple(torch.cat([end[i] for end in ends]) for i in range(len(parts)))
        return x, (new if isinstance(hidden, tuple) else new[0])


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the gradient at a chunk boundary (truncated BPTT) but keep the values."""
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def hidden_to_list(hidden: Hidden | None) -> list[torch.Tensor]:
    """A hidden state as a list of tensors (for checkpoints), whatever the cell."""
    if hidden is None:
        return []
    return [h.detach().cpu() for h in (hidden if isinstance(hidden, tuple) else (hidden,))]


def hidden_from_list(tensors: list[torch.Tensor], cell: str, device) -> Hidden | None:
    if not tensors:
        return None
    tensors = [t.to(device) for t in tensors]
    return tuple(tensors) if len(CELLS[cell].state) > 1 else tensors[0]


def numpy_weights(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A model's weights (a state dict) as float32 NumPy arrays on the CPU, torch's names."""
    return {name: tensor.detach().float().cpu().numpy() for name, tensor in state.items()}


def stream_loss(
    model: CharRNN,
    streams: np.ndarray,
    seq_len: int,
    device,
    carry_state: bool = True,
    whole: bool = False,
    deadline: float | None = None,
    on_progress=None,
    clock=time.perf_counter,
) -> tuple[float, int]:
    """Summed cross-entropy (nats) of predicting each next character of `streams` (B, N), and
    how many characters that covers: chunks of `seq_len` inputs read in order, the hidden state
    carried from one to the next (unless `carry_state` is off). Validation reads full chunks
    only (the same chunks every time); with `whole` the last, shorter chunk is read too (`eval`
    scores every character). At `deadline` (a reading of `clock`) it stops after the
    chunk in hand; `on_progress(done, total)` counts the targets of one stream."""
    n_targets = streams.shape[1] - 1
    n_chunks = -(-n_targets // seq_len) if whole else n_targets // seq_len
    was_training = model.training
    model.eval()
    total, count, hidden = 0.0, 0, None
    try:
        with torch.no_grad():
            for start in range(0, max(n_chunks, 0) * seq_len, seq_len):
                block = torch.from_numpy(np.asarray(streams[:, start : start + seq_len + 1], dtype=np.int64)).to(
                    device
                )  # (B, T + 1)
                x, y = block[:, :-1], block[:, 1:]  # (B, T) each
                logits, hidden = model(x, hidden if carry_state else None)  # (B, T, V)
                total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
                count += y.numel()
                if on_progress is not None:
                    on_progress(min(start + seq_len, n_targets), n_targets)
                if deadline is not None and clock() >= deadline:
                    break
    finally:
        model.train(was_training)
    return total, count
