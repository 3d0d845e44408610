"""Sampling speed: batch 1 and 64 at once from a 2×512 LSTM with the fused NumPy step and the
torch stepper, against nn.LSTM called per character."""

from __future__ import annotations

import time
from typing import Any

import torch

from charrnn.bench.training import VOCAB


def bench_sampling(quick: bool) -> list[dict[str, Any]]:
    """Batch-1 and batch-64 generation from a 2×512 LSTM, against the naive per-character loop."""
    from charrnn.config import ModelConfig, SampleConfig
    from charrnn.model import CharRNN
    from charrnn.sample.generate import generate_text
    from charrnn.model import numpy_weights
    from charrnn.sample.engines import numpy_stepper
    from charrnn.sample.torch_engine import TorchStepper

    fused_stepper = lambda model: numpy_stepper(numpy_weights(model.state_dict()), model.cfg)  # noqa: E731
    from charrnn.data.vocab import Vocab

    torch.manual_seed(0)
    vocab = Vocab(tuple(chr(32 + i) for i in range(VOCAB)))
    model = CharRNN(ModelConfig(vocab_size=VOCAB, cell="lstm", layers=2, hidden=512, embed=64)).eval()
    length = 500 if quick else 2000
    rows = []

    def rate(make, batch: int, n: int) -> float:
        stepper = make(model)
        cfg = SampleConfig(length=n, temp=1.0, seed=0, num_samples=batch, prime="A")
        generate_text(stepper, vocab, SampleConfig(length=20, seed=0, num_samples=batch, prime="A"))
        t = time.perf_counter()
        generate_text(stepper, vocab, cfg)
        return batch * n / (time.perf_counter() - t)

    one = rate(fused_stepper, 1, length)  # what `sample` uses on the CPU (--engine auto)
    many = rate(fused_stepper, 64, length // 4)
    via_torch = rate(TorchStepper, 1, length // 4)
    naive = _naive_lstm_sampling(model, 100 if quick else 300)
    rows.append({"what": "sample LSTM 2×512, batch 1 (fused NumPy step, --engine numpy)", "chars_per_sec": one, "vs_naive": one / naive, "vs_torch_stepper": one / via_torch})
    rows.append({"what": "sample LSTM 2×512, 64 at once, summed (fused NumPy step)", "chars_per_sec": many, "vs_batch_1": many / one})
    rows.append({"what": "sample LSTM 2×512, batch 1 (nn.LSTM stepper, --engine torch)", "chars_per_sec": via_torch})
    rows.append({"what": "reference: nn.LSTM called per character, batch 1", "chars_per_sec": naive})
    return rows


def _naive_lstm_sampling(model, n: int) -> float:
    x = torch.zeros(1, 1, dtype=torch.long)
    hidden = None
    with torch.inference_mode():
        t = time.perf_counter()
        for _ in range(n):
            emb = model.embed(x)
            out, hidden = model.rnn(emb, hidden)
            probs = torch.softmax(model.head(out[-1]), -1)
            x = torch.multinomial(probs, 1)
        return n / (time.perf_counter() - t)
