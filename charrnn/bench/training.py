"""Training speed: charrnn's real Trainer on fixed cases against a textbook LSTMCell loop, in
chars/s and as a share of the machine's peak matmul FLOP/s; and what a run's evaluations, saves
and resumes cost it.

FLOPs per character and layer, forward (I = layer input size, H = hidden, V = vocabulary):
LSTM 8·H·(I+H), GRU 6·H·(I+H), RNN 2·H·(I+H); read-out 2·H·V; training ≈ 3 × forward.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.cells import weights_per_char

VOCAB = 65  # tiny-shakespeare's


def forward_flops_per_char(cell: str, layers: int, hidden: int, embed: int, vocab: int) -> int:
    return 2 * weights_per_char(cell, layers, hidden, embed, vocab)


def _timed(step: Callable[[], None], warmup: int, steps: int) -> float:
    """Median seconds per call of `step` after `warmup` calls (median of 3 groups)."""
    for _ in range(warmup):
        step()
    groups = []
    per_group = max(1, steps // 3)
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(per_group):
            step()
        groups.append((time.perf_counter() - t) / per_group)
    return statistics.median(groups)


@dataclass
class TrainCase:
    cell: str
    layers: int
    hidden: int
    seq_len: int
    batch_size: int
    embed: int = 64

    @property
    def label(self) -> str:
        return f"{self.cell.upper()} {self.layers}×{self.hidden} (seq {self.seq_len}, batch {self.batch_size})"


def bench_trainer(
    case: TrainCase, run_dir: str, precision: str = "fp32", device: str = "cpu", val_chars: int = 0, resume_from=None
):
    """charrnn's real Trainer on random ids of a 65-character vocabulary: `val_chars` of them
    for validation, and a checkpoint to resume from if given."""
    from charrnn.config import TrainConfig
    from charrnn.data.vocab import Vocab
    from charrnn.training.trainer import Trainer

    vocab = Vocab(tuple(chr(32 + i) for i in range(VOCAB)))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, size=case.batch_size * (case.seq_len * 50 + 1) + val_chars, dtype=np.uint8)
    cfg = TrainConfig(
        cell=case.cell,
        layers=case.layers,
        hidden=case.hidden,
        embed=case.embed,
        seq_len=case.seq_len,
        batch_size=case.batch_size,
        max_steps=10**9,
        eval_every=10**9,
        save_every=10**9,
        device=device,
        threads=torch.get_num_threads(),
        precision=precision,
        val_frac=0.0,
        sample_every=0,
    ).validate()
    split = len(ids) - val_chars
    return Trainer(cfg, vocab, ids[:split], ids[split:], run_dir, resume_from=resume_from, corpus_digest="bench")


def charrnn_train_step(case: TrainCase, precision: str = "fp32", device: str = "cpu") -> Callable[[], None]:
    """One real training step of charrnn's Trainer (TBPTT chunk, clipping, AdamW, carried state)."""
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as run_dir:  # (train_step writes nothing there)
        trainer = bench_trainer(case, run_dir, precision, device)
    return lambda: trainer.train_step()


def textbook_train_step(case: TrainCase) -> Callable[[], None]:
    """The reference: nn.LSTMCell stepped in a Python loop, plain Adam, fp32 (LSTM only)."""
    emb = torch.nn.Embedding(VOCAB, case.embed)
    cells = torch.nn.ModuleList(
        torch.nn.LSTMCell(case.embed if i == 0 else case.hidden, case.hidden) for i in range(case.layers)
    )
    head = torch.nn.Linear(case.hidden, VOCAB)
    params = [*emb.parameters(), *cells.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.randint(0, VOCAB, (case.batch_size, case.seq_len))
    y = torch.randint(0, VOCAB, (case.batch_size, case.seq_len))
    state = [(torch.zeros(case.batch_size, case.hidden), torch.zeros(case.batch_size, case.hidden)) for _ in cells]

    def step():
        nonlocal state
        state = [(h.detach(), c.detach()) for h, c in state]
        outputs = []
        for t in range(case.seq_len):
            inp = emb(x[:, t])
            for i, cell in enumerate(cells):
                state[i] = cell(inp, state[i])
                inp = state[i][0]
            outputs.append(head(inp))
        loss = torch.nn.functional.cross_entropy(torch.stack(outputs, 1).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    return step


TRAIN_CASES = [
    TrainCase("lstm", 2, 512, 100, 64),
    TrainCase("gru", 2, 512, 100, 64),
    TrainCase("rnn", 2, 512, 100, 64),
    TrainCase("lstm", 1, 128, 64, 32),
]


def bench_training(peak: float, quick: bool, precision: str, device: str) -> list[dict[str, Any]]:
    """One round: chars/s of every case, then of the textbook loop on the first case."""
    steps = 3 if quick else 6
    rows = []
    for case in TRAIN_CASES:
        seconds = _timed(charrnn_train_step(case, precision, device), warmup=2, steps=steps)
        rows.append(_train_row(f"train {case.label}", case, case.batch_size * case.seq_len / seconds, peak))
    ref_case = TRAIN_CASES[0]
    seconds = _timed(textbook_train_step(ref_case), warmup=1, steps=steps)
    rows.append(
        _train_row(
            f"reference: LSTMCell loop {ref_case.label}",
            ref_case,
            ref_case.batch_size * ref_case.seq_len / seconds,
            peak,
        )
    )
    rows[0]["vs_reference"] = rows[0]["chars_per_sec"] / rows[-1]["chars_per_sec"]
    return rows


def _train_row(what: str, case: TrainCase, chars_per_sec: float, peak: float) -> dict[str, Any]:
    gflops = chars_per_sec * 3 * forward_flops_per_char(case.cell, case.layers, case.hidden, case.embed, VOCAB) / 1e9
    return {"what": what, "chars_per_sec": chars_per_sec, "gflops": gflops, "of_peak": gflops / peak}


def bench_run_overheads(quick: bool, precision: str = "fp32", device: str = "cpu") -> list[dict[str, Any]]:
    """Is training as fast per character right after an evaluation, and after `--resume`, as in
    a run going on undisturbed (the first training case, LSTM 2×512)? And what would evaluating
    and saving at the default intervals (--eval-every, --eval-chars, --save-every) cost this
    model and batch, as a share of its training time? (Measured by `_overheads`.)"""
    from charrnn.config import TrainConfig, defaults

    default = defaults(TrainConfig)
    case = TRAIN_CASES[0]
    chars = case.batch_size * case.seq_len
    m = _overheads(case, quick, precision, device)
    undisturbed, first_after_eval, after_resume = m["undisturbed"], m["first_after_eval"], m["after_resume"]
    eval_chars_per_s, save_s = m["eval_chars_per_s"], m["save_s"]
    between = default["eval_every"] * undisturbed  # training seconds between two evaluations
    return [
        {"what": f"train {case.label}, undisturbed", "chars_per_sec": chars / undisturbed},
        {
            "what": "  the first step after an evaluation",
            "chars_per_sec": chars / first_after_eval,
            "vs_undisturbed": undisturbed / first_after_eval,
            "evaluation_wrote": m["wrote"],
        },
        {
            "what": "  after --resume from a checkpoint",
            "chars_per_sec": chars / after_resume,
            "vs_undisturbed": undisturbed / after_resume,
            "resumed_at_step": m["resumed_at"],
        },
        {
            "what": f"  evaluating {default['eval_chars']:,} chars every {default['eval_every']} steps",
            "chars_per_sec": eval_chars_per_s,
            "cost": default["eval_chars"] / eval_chars_per_s / between,
        },
        {
            "what": f"  saving last.pt every {default['save_every']} steps",
            "seconds": save_s,
            "cost": save_s / (default["save_every"] * undisturbed),
        },
    ]


def _overheads(case: TrainCase, quick: bool, precision: str, device: str) -> dict[str, Any]:
    """Seconds per step undisturbed (measured before and after the others, averaged), of the
    first step after an evaluation (timed alone: that is where a slow path, a mode left on or
    weights re-laid out, would show) and after a resume (with one warm-up step, like the
    undisturbed one); evaluation speed, the files an evaluation wrote, and a save's seconds."""
    from charrnn.store import checkpoint
    from charrnn.store.run_folder import LAST
    from charrnn.training.evaluation import evaluate_sum

    steps = 2 if quick else 4
    val_chars = case.batch_size * (case.seq_len * (2 if quick else 6) + 1)

    def seconds_per_step(trainer) -> float:
        t = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        return (time.perf_counter() - t) / steps

    m: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        trainer = bench_trainer(case, tmp, precision, device, val_chars)
        trainer.train_step()
        before = seconds_per_step(trainer)
        one_chunk = trainer.val_ids[: trainer.batch_size * (case.seq_len + 1)]
        evaluate_sum(trainer.model, one_chunk, trainer.batch_size, case.seq_len, trainer.device)  # warm-up
        t = time.perf_counter()
        _, count = evaluate_sum(trainer.model, trainer.val_ids, trainer.batch_size, case.seq_len, trainer.device)
        m["eval_chars_per_s"] = count / (time.perf_counter() - t)
        trainer._evaluate(lr=0.0, chars_per_sec=0.0)  # the real one: metrics, best.pt, train mode again
        m["wrote"] = sorted(p.name for p in Path(tmp).iterdir())
        t = time.perf_counter()
        trainer.train_step()
        m["first_after_eval"] = time.perf_counter() - t
        t = time.perf_counter()
        path = trainer.save(LAST)
        m["save_s"] = time.perf_counter() - t
        resumed = bench_trainer(case, tmp, precision, device, val_chars, resume_from=checkpoint.load(path))
        m["resumed_at"] = resumed.progress.step
        resumed.train_step()
        m["after_resume"] = seconds_per_step(resumed)
        del resumed
        m["undisturbed"] = (before + seconds_per_step(trainer)) / 2
    return m
