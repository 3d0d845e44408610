"""`CharRNN`: embedding -> multi-layer LSTM / GRU / vanilla RNN -> linear read-out.

The three cells share every line but the choice of torch module; the only cell-specific detail
is the LSTM's hidden state, an (h, c) pair instead of a single tensor. The model knows nothing
about files, flags or devices.

Shapes: B = batch (streams), T = time steps, E = embedding, H = hidden, L = layers,
V = vocabulary size.
"""

from __future__ import annotations

import torch
from torch import nn

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
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    def init_hidden(self, batch_size: int, device=None) -> Hidden:
        """A zero state: (L, B, H), or an (h, c) pair of them for the LSTM."""
        device = device or self.head.weight.device
        zeros = lambda: torch.zeros(self.cfg.layers, batch_size, self.cfg.hidden, device=device)  # noqa: E731
        return (zeros(), zeros()) if self.cfg.cell == "lstm" else zeros()

    def forward(self, ids: torch.Tensor, hidden: Hidden | None = None):
        """ids (B, T) -> logits (B, T, V), new hidden state.

        The recurrent layers run time-major (T, B, ...), which the fused kernels prefer; the
        transposes at both ends are views, not copies.
        """
        x = self.drop(self.embed(ids.t()))  # (T, B, E)
        out, hidden = self.rnn(x, hidden)  # (T, B, H)
        return self.head(self.drop(out)).transpose(0, 1), hidden  # (B, T, V)


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
    return tuple(tensors) if cell == "lstm" else tensors[0]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
