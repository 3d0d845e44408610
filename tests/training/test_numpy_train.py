"""`charrnn train --engine numpy`: the hand-written BPTT drives the same training run as autograd."""

import json
import math

import pytest
from conftest import TINY, invoke, repeat_text, words_text

from charrnn.config import TrainConfig
from charrnn.data.vocab import Vocab
from charrnn.training.numpy_engine import NumpyTrainer
from charrnn.training.trainer import Trainer


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_numpy_engine_trains_like_torch_step_for_step(cell, tmp_path):
    """Same seed, same options: only who computes the gradient differs, so every step's loss,
    the evaluations and the final weights agree up to float32 rounding."""
    text = words_text(6000)
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    cfg = TrainConfig(
        cell=cell,
        layers=2,
        hidden=24,
        embed=8,
        seq_len=16,
        batch_size=8,
        lr=1e-2,
        warmup=0,
        max_steps=40,
        eval_every=20,
        save_every=40,
        threads=1,
        device="cpu",
    ).validate()
    runs = {}
    for engine in (Trainer, NumpyTrainer):
        losses = []
        on_step = lambda event: losses.append(event["loss"]) if event["event"] == "step" else None  # noqa: E731
        trainer = engine(cfg, vocab, ids[:5400], ids[5400:], tmp_path / engine.__name__, events=on_step)
        summary = trainer.fit()
        runs[engine] = losses, summary["best_loss"], trainer.model.state_dict()
    (torch_losses, torch_best, torch_weights), (numpy_losses, numpy_best, numpy_weights) = (
        runs[Trainer],
        runs[NumpyTrainer],
    )
    assert len(numpy_losses) == 40 and numpy_losses[-1] < numpy_losses[0] - 0.5  # it learns
    assert max(abs(a - b) for a, b in zip(torch_losses, numpy_losses)) < 1e-4
    assert numpy_best == pytest.approx(torch_best, abs=1e-4)
    for name, weight in torch_weights.items():
        assert (weight - numpy_weights[name]).abs().max().item() < 1e-3, name


def test_train_engine_numpy_through_the_cli(tmp_path):
    """The vanilla RNN learns a repetitive text with the hand-written BPTT and clipping, and its
    checkpoints are ordinary ones: info reads them, sample samples from them."""
    corpus = tmp_path / "abc.txt"
    corpus.write_text(repeat_text(4000, "the quick brown fox.\n"), encoding="utf-8")
    out = tmp_path / "ck"
    result = invoke(
        "train",
        str(corpus),
        *TINY,
        "--engine",
        "numpy",
        "--cell",
        "rnn",
        "--max-steps",
        "120",
        "--eval-every",
        "60",
        "--lr",
        "1e-2",
        "--grad-clip",
        "0.5",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert "engine numpy" in result.stderr.decode()
    rows = [json.loads(line) for line in (out / "abc" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_loss"] < 0.2 * math.log(16)  # 16 distinct characters: ln 16 is a uniform guess
    meta = json.loads(invoke("info", str(out / "abc" / "best.pt"), "--json").stdout)
    assert meta["config"]["engine"] == "numpy" and meta["model"]["cell"] == "rnn"
    text = invoke(
        "sample", "-c", str(out / "abc" / "best.pt"), "--prime", "the ", "--length", "40", "--temp", "0"
    ).stdout.decode()
    assert text.startswith("the quick brown fox.")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dropout", "0.2"], "--dropout 0.2"),
        (["--weight-drop", "0.3"], "--weight-drop 0.3"),
        (["--device", "cuda"], "CPU only"),
        (["--precision", "bf16"], "fp32"),
        (["--compile"], "--compile"),
    ],
)
def test_train_engine_numpy_refuses_what_it_cannot_do(flags, message, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(words_text(2000), encoding="utf-8")
    result = invoke(
        "train", str(corpus), *TINY, "--engine", "numpy", "--max-steps", "2", "--out", str(tmp_path / "ck"), *flags
    )
    assert result.returncode == 2 and message in result.stderr.decode() and "--engine numpy" in result.stderr.decode()
    assert not (tmp_path / "ck" / "c" / "last.pt").exists()
