"""Live samples during training: when one is due, and generating it from the model being trained."""

from __future__ import annotations

from charrnn.config import SampleConfig
from charrnn.sample.generate import generate_text
from charrnn.sample.torch_engine import TorchStepper


class LiveSamples:
    """A part of `Trainer` (see trainer.py), split out by idea; it uses the trainer's attributes."""

    def _sample_due(self, evaluated: bool) -> bool:
        every = self.cfg.sample_every
        return evaluated if every is None else every > 0 and self.progress.step % every == 0

    def _sample(self) -> None:
        """A short text at the fixed prime and seed, so that the same sentence is seen improving.

        Dropout is off (eval mode) and the draws come from their own NumPy generator, so neither
        the torch RNG nor the model's training mode is changed: resuming stays exact.
        """
        if not self.dist.main:  # only rank 0 shows it
            return
        cfg = self.cfg
        sample_cfg = SampleConfig(length=cfg.sample_chars, temp=0.8, prime=cfg.sample_prime, seed=cfg.seed)
        started = self.clock()
        try:
            text = generate_text(TorchStepper(self.model, self.device), self.vocab, sample_cfg)[0]
        finally:
            self.model.train()
        self.costs.sample_per_char = (self.clock() - started) / max(1, len(cfg.sample_prime) + cfg.sample_chars)
        self.events({"event": "sample", "step": self.progress.step, "prime": cfg.sample_prime, "text": text})
