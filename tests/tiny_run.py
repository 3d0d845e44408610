"""A tiny trained run for the tests of the insight commands (eval, plot, neurons, runs).

`train_tiny_run` trains a small model for a few dozen steps with the real `Trainer`, so the run
folder holds real `last.pt`, `best.pt` and `metrics.jsonl` files; it takes about a second.
"""

from __future__ import annotations

import random
from pathlib import Path

from typer.testing import CliRunner

from charrnn.cli.app import app
from charrnn.config import TrainConfig
from charrnn.data.vocab import Vocab
from charrnn.training.trainer import Trainer

WORDS = "the a of to and in that is was he for it with as his on".split()


def structured_text(n_chars: int, seed: int = 0) -> str:
    """Lines of words with "quotations" and (asides), so every feature of `neurons --find` varies."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 9))]
        i, j = sorted(rng.sample(range(len(words) + 1), 2))
        if j > i:
            left, right = rng.choice(['""', "()"])
            words[i:j] = [left + " ".join(words[i:j]) + right]
        line = " ".join(words).capitalize() + "."
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)[:n_chars]


def train_tiny_run(run_dir: Path, text: str, cell: str = "lstm", max_steps: int = 30, **overrides) -> Trainer:
    settings = dict(
        cell=cell,
        layers=2,
        hidden=16,
        embed=8,
        seq_len=16,
        batch_size=4,
        lr=1e-2,
        warmup=0,
        eval_every=10,
        save_every=10,
        eval_chars=2000,
        sample_every=0,
        max_steps=max_steps,
        threads=1,
        device="cpu",
    )
    cfg = TrainConfig(**{**settings, **overrides}).validate()
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    n_val = int(len(ids) * cfg.val_frac)
    trainer = Trainer(cfg, vocab, ids[: len(ids) - n_val], ids[len(ids) - n_val :], run_dir)
    trainer.fit()
    return trainer


def invoke(*args: str):
    """Run a charrnn command in this process (fast); result.stdout and result.stderr are separate."""
    return CliRunner().invoke(app, [str(a) for a in args])
