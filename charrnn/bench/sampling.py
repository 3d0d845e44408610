"""Sampling speed: the generation engine (sample/batch.py) on a 2×512 LSTM at batch 1, 4, 16 and
64 streams, with the GFLOP/s of its model step against the machine's peak, beside the torch
stepper and nn.LSTM called per character (the plain reference loop)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from charrnn.bench.training import VOCAB

BATCHES = (1, 4, 16, 64)


def bench_sampling(quick: bool, peak_gflops: float | None = None) -> list[dict[str, Any]]:
    """Characters per second (all streams together) of the engine at each of BATCHES, against
    the naive per-character loop; the engine's model step in GFLOP/s and as a share of peak."""
    from charrnn.cells import weights_per_char
    from charrnn.config import ModelConfig
    from charrnn.data.vocab import Vocab
    from charrnn.model import CharRNN, numpy_weights
    from charrnn.sample.engines import cpu_stepper
    from charrnn.sample.torch_engine import TorchStepper

    torch.manual_seed(0)
    vocab = Vocab(tuple(chr(32 + i) for i in range(VOCAB)))
    cfg = ModelConfig(vocab_size=VOCAB, cell="lstm", layers=2, hidden=512, embed=64)
    model = CharRNN(cfg).eval()
    flops = 2 * weights_per_char("lstm", 2, 512, 64, VOCAB)
    weights = numpy_weights(model.state_dict())
    length = 500 if quick else 2000
    rows = []
    naive = _naive_lstm_sampling(model, 100 if quick else 300)
    one = None
    for batch in BATCHES:
        n = max(50, length // batch) if batch > 1 else length
        measured = _engine_rate(cpu_stepper(weights, cfg), vocab, batch, n, flops)
        one = one or measured["chars_per_sec"]
        row = {
            "what": f"sample LSTM 2×512, {batch} at once (the engine{', packed' if batch > 1 else ''})",
            **measured,
            "vs_naive": measured["chars_per_sec"] / naive,
        }
        if batch > 1:
            row["vs_batch_1"] = measured["chars_per_sec"] / one
        if peak_gflops:
            row["of_peak"] = measured["step_gflops"] / peak_gflops
        rows.append(row)
    via_torch = _engine_rate(TorchStepper(model), vocab, 1, length // 4, flops)["chars_per_sec"]
    rows[0]["vs_torch_stepper"] = rows[0]["chars_per_sec"] / via_torch
    rows.append({"what": "sample LSTM 2×512, batch 1 (nn.LSTM stepper, --engine torch)", "chars_per_sec": via_torch})
    rows.append({"what": "reference: nn.LSTM called per character, batch 1", "chars_per_sec": naive})
    return rows


def _engine_rate(stepper, vocab, batch: int, n: int, flops: float) -> dict[str, float]:
    """`batch` streams of `n` characters through the engine: characters per second in all, and
    the GFLOP/s of the model's steps alone."""
    from charrnn.sample.batch import Engine, Stream

    def run(length: int) -> tuple[float, Engine]:
        engine = Engine(stepper, vocab, flops_per_row=flops)
        streams = [Stream([1], np.random.default_rng(b), length, temp=1.0) for b in range(batch)]
        engine.submit(streams)
        t = time.perf_counter()
        engine.run_until_done(streams)
        return time.perf_counter() - t, engine

    run(20)  # warm up: buffers, packing caches
    seconds, engine = run(n)
    return {"chars_per_sec": batch * n / seconds, "step_gflops": engine.row_steps * flops / engine.step_seconds / 1e9}


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
