"""Live samples while training: when they come, what they hold, and that they change nothing."""

import io
import json

import pytest
import torch
from conftest import repeat_text
from rich.console import Console

from charrnn.cli.display import TrainDisplay
from charrnn.config import TrainConfig, build
from charrnn.errors import CharRNNError
from training.test_train import make_trainer

TEXT = repeat_text(3000, "to be or not to be, that is the question.\n")


def samples_of(events):
    return [e for e in events if e["event"] == "sample"]


def test_a_sample_follows_each_evaluation_at_a_fixed_prime(tmp_path):
    events = []
    make_trainer(
        TEXT, tmp_path, events=events.append, max_steps=12, eval_every=5, sample_chars=30, sample_prime="to"
    ).fit()
    samples = samples_of(events)
    assert [s["step"] for s in samples] == [5, 10, 12]  # 12: the final evaluation
    assert all(s["text"].startswith("to") and len(s["text"]) == 2 + 30 for s in samples)
    order = [e["event"] for e in events if e["event"] in ("eval", "sample")]
    assert order == ["eval", "sample"] * 3


def test_sample_every_sets_its_own_pace_and_zero_turns_it_off(tmp_path):
    events = []
    make_trainer(
        TEXT, tmp_path / "a", events=events.append, max_steps=9, eval_every=5, sample_every=3, sample_chars=5
    ).fit()
    assert [s["step"] for s in samples_of(events)] == [3, 6, 9]
    events.clear()
    make_trainer(TEXT, tmp_path / "b", events=events.append, max_steps=9, eval_every=5, sample_every=0).fit()
    assert samples_of(events) == []


def test_the_same_model_gives_the_same_sample(tmp_path):
    """Fixed prime and seed: two runs that reach the same weights print the same sentence."""
    runs = []
    for name in ("a", "b"):
        events = []
        make_trainer(TEXT, tmp_path / name, events=events.append, max_steps=10, eval_every=10, sample_chars=40).fit()
        runs.append(samples_of(events)[0]["text"])
    assert runs[0] == runs[1] and len(runs[0]) == 40


def test_sampling_leaves_training_untouched(tmp_path):
    """Dropout draws from the torch RNG; a sample must not consume it, nor leave eval mode on."""
    common = dict(max_steps=8, eval_every=4, dropout=0.3, layers=2)
    quiet = make_trainer(TEXT, tmp_path / "quiet", sample_every=0, **common)
    quiet.fit()
    chatty = make_trainer(TEXT, tmp_path / "chatty", sample_every=1, sample_chars=20, **common)
    chatty.fit()
    assert chatty.model.training
    for key, value in quiet.model.state_dict().items():
        torch.testing.assert_close(chatty.model.state_dict()[key], value, rtol=0, atol=0)

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "run" / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in rows]

    assert losses("quiet") == losses("chatty")


def test_a_prime_outside_the_corpus_is_refused(tmp_path):
    with pytest.raises(CharRNNError, match="--sample-prime .*'Z'"):
        make_trainer(TEXT, tmp_path, sample_prime="Zo")


@pytest.mark.parametrize(
    "values, flag", [({"sample_every": -1}, "--sample-every"), ({"sample_chars": 0}, "--sample-chars")]
)
def test_bad_sample_options(values, flag):
    with pytest.raises(CharRNNError, match=flag):
        build(TrainConfig, {}, values)


EVENT = {"event": "sample", "step": 40, "prime": "to", "text": "to be\nor not"}


def test_the_log_shows_a_sample_on_one_line():
    out = io.StringIO()
    TrainDisplay(Console(file=out, width=80))(EVENT)
    assert out.getvalue() == "sample @ step 40: to be↵or not\n"
    quiet = io.StringIO()
    TrainDisplay(Console(file=quiet, width=80), quiet=True)(EVENT)
    assert quiet.getvalue() == ""


def test_the_terminal_shows_the_sample_under_the_progress_bar():
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system=None)
    with TrainDisplay(console) as display:
        display(
            {
                "event": "step",
                "step": 40,
                "epoch": 0.5,
                "loss": 1.5,
                "lr": 1e-3,
                "fraction": 0.4,
                "chars_seen": 9,
                "elapsed_s": 1.0,
            }
        )
        display(EVENT)
    final = out.getvalue().split("\r")[-1]  # the last frame the live display drew
    bar, _, below = final.partition("\n")
    assert "step" in bar and "sample @ 40: to be↵or not" in below
