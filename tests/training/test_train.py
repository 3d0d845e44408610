import json
import math
import random

import numpy as np
import pytest
import torch
from conftest import repeat_text

from charrnn.config import TrainConfig
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError
from charrnn.store import checkpoint
from charrnn.training.trainer import Trainer


def make_trainer(text, tmp_path, events=None, resume_from=None, engine=Trainer, clock=None, **overrides):
    """A Trainer of a tiny model on `text` (its tail held out); `clock`: a fake one (FakeClock)."""
    settings = dict(
        layers=1,
        hidden=32,
        embed=16,
        seq_len=16,
        batch_size=8,
        lr=1e-2,
        warmup=0,
        eval_every=50,
        save_every=50,
        threads=1,
        device="cpu",
    )
    cfg = TrainConfig(**{**settings, **overrides}).validate()
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    n_val = int(len(ids) * cfg.val_frac)
    timing = {} if clock is None else {"clock": clock}
    return engine(
        cfg,
        vocab,
        ids[: len(ids) - n_val],
        ids[len(ids) - n_val :],
        tmp_path / "run",
        events=events,
        resume_from=resume_from,
        **timing,
    )


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_each_cell_learns_a_repetitive_text(cell, tmp_path):
    text = repeat_text(6000, "the quick brown fox.\n")
    trainer = make_trainer(text, tmp_path, cell=cell, max_steps=150)
    summary = trainer.fit()
    ln_v = math.log(len(trainer.vocab))
    assert summary["best_loss"] < 0.1 * ln_v, f"{cell}: val loss {summary['best_loss']:.3f} vs ln V {ln_v:.3f}"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 150 and rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert (tmp_path / "run" / "best.pt").exists() and (tmp_path / "run" / "last.pt").exists()


def long_range_text(n_records: int, seed: int = 0) -> str:
    """Records of 25 characters, 'XefgXefgXefgXefgXefgXefg\\n' with X random among abcd per record.

    After a 'g' comes either the next X or, after the sixth 'Xefg', the newline: knowing which
    needs counting to 24, and a chunk of 8 characters never shows that much. A model whose state
    is reset at every chunk can only guess (the newline is 1 in 6 of the characters after a 'g');
    one trained with the state carried over chunk boundaries can learn where the record is.
    """
    rng = random.Random(seed)
    return "".join((rng.choice("abcd") + "efg") * 6 + "\n" for _ in range(n_records))


def per_target_losses(model, ids: np.ndarray, streams: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The loss (nats) of every next character of `ids` laid out as `streams` streams read in
    chunks with the state carried, as validation reads them; and those characters (ids)."""
    from charrnn.data.batches import batchify

    rows = batchify(ids, streams).astype(np.int64)
    n = (rows.shape[1] - 1) // seq_len * seq_len
    losses, hidden = [], None
    model.eval()
    with torch.no_grad():
        for start in range(0, n, seq_len):
            block = torch.from_numpy(rows[:, start : start + seq_len + 1])
            logits, hidden = model(block[:, :-1], hidden)
            losses.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), block[:, 1:], reduction="none"))
    return torch.cat(losses, dim=1).numpy(), rows[:, 1 : n + 1]


def test_carried_state_learns_structure_longer_than_a_chunk(tmp_path):
    """Two models trained alike but for --carry-state, evaluated alike (state carried, as
    validation does): only the one trained with carried state knows where a record ends."""
    seq_len = 8
    text = long_range_text(600)
    newline_loss = {}
    for carry in (True, False):
        trainer = make_trainer(
            text,
            tmp_path / str(carry),
            cell="lstm",
            hidden=64,
            seq_len=seq_len,
            batch_size=16,
            carry_state=carry,
            max_steps=1200,
            eval_every=1200,
            lr=1e-2,
            val_frac=0.2,
        )
        trainer.fit()
        losses, targets = per_target_losses(trainer.model, trainer.val_ids, 16, seq_len)
        newlines = targets == trainer.vocab.index("\n")
        assert newlines.sum() > 100
        newline_loss[carry] = losses[newlines].mean()
    # Guessing, the newline costs ln 6 (1.79) after a 'g'; the model reset at every chunk cannot
    # do much better (1.6 measured); the one trained with carried state has learned to count
    # (0.5 measured). With the state zeroed in training, both are the same model.
    assert newline_loss[False] > 1.2 and newline_loss[False] - newline_loss[True] > 0.5, newline_loss


def test_resume_is_exact(tmp_path):
    text = repeat_text(4000, "to be or not to be, that is the question.\n")
    common = dict(max_steps=24, eval_every=5, save_every=7, dropout=0.2, layers=2, lr_schedule="cosine", warmup=4)
    straight = make_trainer(text, tmp_path / "a", **common)
    straight.fit()

    first = make_trainer(text, tmp_path / "b", **common)
    first.fit(until_step=12)  # stops like an interruption: saves last.pt, evaluates nothing extra
    resumed = make_trainer(
        text, tmp_path / "b", resume_from=checkpoint.load(tmp_path / "b" / "run" / "last.pt"), **common
    )
    assert resumed.progress.step == 12
    resumed.fit()

    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)

    def losses(folder):
        rows = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rows]

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert [r[0] for r in a] == [5, 10, 15, 20, 24] == [r[0] for r in b]
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5)


def edited(ckpt: checkpoint.Checkpoint, path) -> checkpoint.Checkpoint:
    """A checkpoint whose metadata a test changed, as the file saying so reads (its typed info too)."""
    checkpoint.save(ckpt, path)
    return checkpoint.load(path)


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path):
    text = repeat_text(3000)
    common = dict(max_steps=20, eval_every=2, save_every=5)
    trainer = make_trainer(text, tmp_path, **common)
    trainer.fit(until_step=8)  # last.pt at step 8, metrics to step 8
    ckpt = checkpoint.load(tmp_path / "run" / "last.pt")
    ckpt.meta["progress"]["step"] = 5  # pretend the crash came between a save and later evals
    resumed = make_trainer(text, tmp_path, resume_from=edited(ckpt, tmp_path / "edited.pt"), **common)
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4] and resumed.progress.step == 5


def test_short_corpus_shrinks_the_batch_with_a_warning(tmp_path):
    events = []
    trainer = make_trainer(repeat_text(100), tmp_path, events=events.append, batch_size=32, seq_len=16, max_steps=3)
    assert trainer.batch_size == 5  # 90 training characters hold 5 streams of 16 + 1
    assert any(e["event"] == "warning" and "batch-size 5" in e["message"] for e in events)
    trainer.fit()


def test_schedule_warms_up_and_decays(tmp_path):
    from charrnn.training.schedule import lr_at

    cfg = make_trainer(repeat_text(2000), tmp_path, lr=1.0, warmup=10, max_steps=100, min_lr_frac=0.1).cfg
    assert lr_at(cfg, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1.0)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(0.55)
    assert lr_at(cfg, 99, 1.0) == pytest.approx(0.1)


def poison_steps(trainer, bad_steps):
    """Make the loss NaN on the given (1-based) steps by corrupting the read-out layer's output."""
    calls = {"n": 0}

    def hook(module, inputs, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] in bad_steps:
                return output * float("nan")
        return output

    trainer.model.head.register_forward_hook(hook)


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    events = []
    trainer = make_trainer(repeat_text(3000), tmp_path, events=events.append, max_steps=30, eval_every=10)
    poison_steps(trainer, {5, 6, 7, 20})
    summary = trainer.fit()
    assert summary["skipped_steps"] == 4 and summary["step"] == 30
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["skipped_steps"] == 4 and math.isfinite(rows[-1]["val_loss"])
    assert [e["message"] for e in events if e["event"] == "warning"] == [
        f"step {n}: non-finite loss or gradient, update skipped" for n in (5, 6, 7, 20)
    ]


def test_a_non_finite_gradient_of_a_finite_loss_is_skipped_too(tmp_path):
    events = []
    trainer = make_trainer(repeat_text(3000), tmp_path, events=events.append, max_steps=6, eval_every=100)
    trainer.model.head.bias.register_hook(lambda grad: grad * float("nan") if trainer.progress.step == 2 else grad)
    summary = trainer.fit()
    losses = [e["loss"] for e in events if e["event"] == "step"]
    assert all(math.isfinite(loss) for loss in losses) and summary["skipped_steps"] == 1
    assert [e["message"] for e in events if e["event"] == "warning"] == [
        "step 3: non-finite loss or gradient, update skipped"
    ]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_a_loss_spike_does_not_abort(tmp_path):
    trainer = make_trainer(repeat_text(3000), tmp_path, max_steps=20)

    def spike(module, inputs, output):
        return output * 1000 if module.training and trainer.progress.step == 8 else output

    trainer.model.head.register_forward_hook(spike)
    assert trainer.fit()["step"] == 20


def test_persistent_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    events = []
    trainer = make_trainer(repeat_text(3000), tmp_path, events=events.append, max_steps=100, save_every=5, eval_every=5)
    poison_steps(trainer, set(range(13, 100)))
    with pytest.raises(CharRNNError, match="diverged") as info:
        trainer.fit()
    assert info.value.exit_code == 1 and "10 steps in a row" in str(info.value)
    skipped = [e["message"].split(":")[0] for e in events if e["event"] == "warning"]
    assert skipped == [f"step {n}" for n in range(13, 23)]  # the tenth bad step in a row ends it
    kept = checkpoint.load(tmp_path / "run" / "last.pt")
    assert kept.meta["progress"]["step"] == 10
    assert all(torch.isfinite(t).all() for t in kept.model.values())


def test_a_trainer_built_with_precision_auto_trains_and_saves_fp32(tmp_path):
    """ "auto" is decided when a run is planned (plan.size_model); a Trainer given it directly does
    not guess, and saves what it ran, so that a resume does not probe and switch half-way."""
    from charrnn.store import checkpoint

    trainer = make_trainer(repeat_text(3000), tmp_path, precision="auto", max_steps=2)
    assert trainer.cfg.precision == "fp32"
    trainer.fit()
    assert checkpoint.load(tmp_path / "run" / "last.pt").info.config.precision == "fp32"


def test_precision_options(tmp_path):
    events = []
    bf16 = make_trainer(repeat_text(3000), tmp_path / "bf16", events=events.append, precision="bf16", max_steps=60)
    logits = set()
    bf16.model.head.register_forward_hook(lambda module, args, out: logits.add(out.dtype) if module.training else None)
    assert bf16.fit()["best_loss"] < 1.0
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    if warnings:  # a CPU without bf16 RNN kernels: one warning, and fp32
        assert len(warnings) == 1 and "--precision bf16" in warnings[0] and "training in fp32" in warnings[0], warnings
        assert logits == {torch.float32}
    else:  # in bf16
        assert logits == {torch.bfloat16}
    events.clear()
    fp16 = make_trainer(repeat_text(3000), tmp_path / "fp16", events=events.append, precision="fp16", max_steps=2)
    logits.clear()
    fp16.model.head.register_forward_hook(lambda module, args, out: logits.add(out.dtype) if module.training else None)
    fp16.fit()
    assert [e["message"] for e in events if e["event"] == "warning"] == [
        "--precision fp16 is not supported on the CPU; training in fp32 (try bf16)"
    ]
    assert logits == {torch.float32}


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    events = []
    trainer = make_trainer(repeat_text(3000), tmp_path, events=events.append, compile=True, max_steps=5)
    assert trainer.fit()["step"] == 5
    warnings = [e["message"] for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "--compile failed" in warnings[0] and "no compiler here" in warnings[0]


def test_the_compiled_forward_trains_and_a_compile_that_fails_later_falls_back_with_the_state(tmp_path, monkeypatch):
    """--compile: the model is compiled once and its compiled forward trains, given the carried
    state; when it fails at a later call (a recompilation), training goes on in eager mode from
    the same state, with one warning: the weights are those of an eager run."""
    calls = []

    def fake_compile(module):
        calls.append(module)

        def compiled(x, hidden):
            calls.append(hidden is None)
            if len(calls) == 4:
                raise RuntimeError("recompilation failed: " + "x" * 300 + "\nsecond line")
            return module(x, hidden)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    text = repeat_text(3000)
    eager = make_trainer(text, tmp_path / "eager", max_steps=6)
    eager.fit()
    events = []
    trainer = make_trainer(text, tmp_path / "compiled", events=events.append, compile=True, max_steps=6)
    trainer.fit()
    assert calls == [trainer.train_model, True, False, False]  # one compile; steps 1 and 2 compiled, step 3 failed
    assert [e["message"] for e in events if e["event"] == "warning"] == [
        f"--compile failed (RuntimeError: {('recompilation failed: ' + 'x' * 300)[:200]}); training without it"
    ]
    for name, weight in eager.model.state_dict().items():
        assert torch.equal(trainer.model.state_dict()[name], weight), name


def test_checkpoints_from_before_prepared_corpora_still_resume(tmp_path):
    import hashlib

    text = repeat_text(3000)
    trainer = make_trainer(text, tmp_path, max_steps=10)
    trainer.fit(until_step=5)
    old = checkpoint.load(tmp_path / "run" / "last.pt")
    del old.meta["world_size"]  # as written by the versions that hashed the training ids whole
    ids = Vocab.from_text(text).encode(text)
    old.meta["corpus"]["digest"] = hashlib.sha1(ids[: len(ids) - int(len(ids) * 0.1)].tobytes()).hexdigest()
    resume_from = edited(old, tmp_path / "old.pt")
    assert "world_size" not in resume_from.meta and resume_from.info.world_size == 1
    assert make_trainer(text, tmp_path, resume_from=resume_from, max_steps=10).progress.step == 5
    old.meta["corpus"]["digest"] = "0" * 40  # another corpus
    with pytest.raises(CharRNNError, match="cannot resume: the corpus"):
        make_trainer(text, tmp_path, resume_from=edited(old, tmp_path / "other.pt"), max_steps=10)


class ProbingPolicy:
    """A thread policy in the middle of a probe: it measures 1 thread, the run trains with 2."""

    threads, settled, interruptions, cores, others = 1, 2, 0, 2, 0.0

    def step_done(self, seconds):
        return None

    def take_decision(self):
        return None

    def interrupted(self):
        self.interruptions += 1


def test_evaluations_and_samples_run_at_the_settled_thread_count_not_a_probes(tmp_path, monkeypatch):
    """A probe of 1 thread of 2 in flight when a --time-budget run ended evaluated at half speed,
    and its deadline cut the final evaluation in half (2026-12-07)."""
    import charrnn.training.trainer as trainer_module

    seen = {}
    validation_sum = trainer_module.validation_sum

    def counting_validation(*args, **kwargs):
        seen.setdefault("eval", torch.get_num_threads())
        return validation_sum(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "validation_sum", counting_validation)
    trainer = make_trainer(repeat_text(4000), tmp_path, max_steps=50, eval_every=50, sample_every=50)
    generate = trainer.samples.generate

    def counting_sample(model):
        seen.setdefault("sample", torch.get_num_threads())
        return generate(model)

    trainer.samples.generate = counting_sample
    trainer.thread_use.policy, trainer.thread_use.threads = ProbingPolicy(), 1
    try:
        trainer.fit()
        assert seen == {"eval": 2, "sample": 2}
        assert torch.get_num_threads() == 1  # the probe goes on at its candidate
        assert trainer.thread_use.policy.interruptions == 2
        assert trainer.last_eval["threads"] == 2
    finally:
        torch.set_num_threads(1)
