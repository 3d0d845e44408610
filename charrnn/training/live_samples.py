"""Live samples during training: when one is due, and generating it from the model being trained."""

from __future__ import annotations

from collections.abc import Callable

import torch

from charrnn.config import SampleConfig, TrainConfig
from charrnn.data.vocab import Vocab
from charrnn.model import CharRNN
from charrnn.sample.generate import generate_text
from charrnn.sample.torch_engine import TorchStepper
from charrnn.training.schedule import Costs


class LiveSamples:
    """A short text at the fixed --sample-prime and seed after evaluations (or every
    --sample-every steps), so that the same sentence is seen improving. Its cost per character
    goes into `costs`, for the time a --time-budget run keeps for its end. (The prime is checked
    against the vocabulary before: parts.check_sample_prime.)"""

    def __init__(self, cfg: TrainConfig, vocab: Vocab, device: torch.device, clock: Callable[[], float], costs: Costs):
        self.every, self.chars, self.prime = cfg.sample_every, cfg.sample_chars, cfg.sample_prime
        self.config = SampleConfig(length=cfg.sample_chars, temp=0.8, prime=cfg.sample_prime, seed=cfg.seed)
        self.vocab, self.device, self.clock, self.costs = vocab, device, clock, costs

    def due(self, step: int, evaluated: bool) -> bool:
        """Whether a sample comes after `step`: with each evaluation due (`evaluated`: the trainer
        passes one --eval-share skipped too), or every --sample-every (0: never)."""
        return evaluated if self.every is None else self.every > 0 and step % self.every == 0

    def chars_at(self, step: int) -> int:
        """The characters of the sample that would come with an evaluation at `step` (0: none)."""
        return self.chars if self.due(step, True) else 0

    def generate(self, model: CharRNN) -> str:
        """The sample of `model` now. Dropout is off (eval mode) and the draws come from their own
        NumPy generator, so neither the torch RNG nor the model's training mode is changed:
        resuming stays exact."""
        started = self.clock()
        try:
            text = generate_text(TorchStepper(model, self.device), self.vocab, self.config)[0]
        finally:
            model.train()
        self.costs.sample_per_char = (self.clock() - started) / max(1, len(self.prime) + self.chars)
        return text
