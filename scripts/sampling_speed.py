"""Batch-1 (and batch-64) sampling speed of the engines, in one run: chars/s through the whole
sampling loop (`sample.generate_text`: logits -> temperature -> draw -> next step).

    PYTHONPATH=. python scripts/sampling_speed.py                  # threads as charrnn uses them
    OMP_NUM_THREADS=1 PYTHONPATH=. python scripts/sampling_speed.py  # one thread for both engines

Model: a 2x512 LSTM, embedding 64, vocabulary 65, random weights (speed does not depend on
what was learnt). Engines: torch (TorchStepper over nn.LSTM), numpy (the fused FusedStepper that
`--engine numpy` uses) and, for scale, the readable `numpy_ref.forward` called one step at a time.
Each figure is the median of 5 runs, interleaved so that load on a shared machine hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from charrnn import numpy_ref
from charrnn.config import ModelConfig, SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.model import CharRNN
from charrnn.sample.engines import numpy_stepper
from charrnn.sample.generate import generate_text
from charrnn.sample.torch_engine import TorchStepper


class ReadableStepper:
    """prime/step through numpy_ref.forward, one character at a time (no fusing, no buffers)."""

    def __init__(self, weights, cell):
        self.params, self.cell, self.state = {k: v.astype(np.float32) for k, v in weights.items()}, cell, None

    def prime(self, ids, batch_size):
        self.state = None
        logits, self.state, _ = numpy_ref.forward(self.params, self.cell, np.tile(ids, (batch_size, 1)), None)
        return logits[:, -1]

    def step(self, ids):
        logits, self.state, _ = numpy_ref.forward(self.params, self.cell, np.asarray(ids)[:, None], self.state)
        return logits[:, -1]


def chars_per_sec(stepper, vocab, batch: int, length: int) -> float:
    cfg = SampleConfig(length=length, temp=1.0, seed=0, num_samples=batch, prime="A").validate()
    start = time.perf_counter()
    generate_text(stepper, vocab, cfg)
    return batch * length / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1000, help="characters per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    vocab = Vocab(tuple(chr(32 + i) for i in range(65)))
    model = CharRNN(ModelConfig(vocab_size=65, cell="lstm", layers=2, hidden=512, embed=64)).eval()
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    engines = {
        "torch (TorchStepper)": lambda: TorchStepper(model),
        "numpy (FusedStepper)": lambda: numpy_stepper(weights, model.cfg),
        "numpy_ref.forward per step": lambda: ReadableStepper(weights, "lstm"),
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch threads; numpy {np.__version__}")
    for batch, length in ((1, args.length), (64, args.length // 10)):
        runs = {name: [] for name in engines}
        for make in engines.values():  # warm-up
            chars_per_sec(make(), vocab, batch, 20)
        for _ in range(args.repeats):
            for name, make in engines.items():
                runs[name].append(chars_per_sec(make(), vocab, batch, length))
        for name, rates in runs.items():
            each = ", ".join(f"{r:,.0f}" for r in rates)
            print(f"batch {batch:>2}  {name:<28} {statistics.median(rates):>9,.0f} chars/s  (runs: {each})")


if __name__ == "__main__":
    main()
