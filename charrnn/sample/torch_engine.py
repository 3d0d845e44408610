"""The torch engine for generation: one character per step through a `CharRNN`."""

from __future__ import annotations

import numpy as np
import torch

from charrnn.model import CharRNN


class TorchStepper:
    """Turns the last character ids into next-character logits, keeping the hidden state."""

    def __init__(self, model: CharRNN, device: torch.device | str = "cpu"):
        self.model = model.eval()
        self.device = torch.device(device)
        self.hidden = None

    @torch.inference_mode()
    def prime(self, ids: list[int], batch_size: int) -> np.ndarray:
        x = torch.tensor(ids, dtype=torch.long, device=self.device).unsqueeze(0).expand(batch_size, -1)
        logits, self.hidden = self.model(x, None)  # (B, T, V)
        return logits[:, -1].float().cpu().numpy()

    @torch.inference_mode()
    def step(self, ids: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(ids, dtype=np.int64)).view(-1, 1).to(self.device)
        logits, self.hidden = self.model(x, self.hidden)  # (B, 1, V)
        return logits[:, -1].float().cpu().numpy()

    @torch.inference_mode()
    def select(self, rows: np.ndarray) -> None:
        """Row i becomes the old row rows[i], or a fresh (zero) state where rows[i] is -1."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.hidden is None and (rows < 0).all():
            return  # (no state yet: the model starts every row from zeros)
        if self.hidden is None:
            raise ValueError("select: no state to keep rows of")
        index = torch.as_tensor(np.maximum(rows, 0), device=self.device)
        fresh = torch.as_tensor(rows < 0, device=self.device).view(1, -1, 1)
        parts = self.hidden if isinstance(self.hidden, tuple) else (self.hidden,)  # each (L, B, H)
        kept = tuple(part.index_select(1, index).masked_fill(fresh, 0.0) for part in parts)
        self.hidden = kept if isinstance(self.hidden, tuple) else kept[0]
