"""One training step, seen from outside: the state each chunk starts from, AdamW's weight decay
and the gradient clipping, each visible in what the model and the optimizer are given."""

from __future__ import annotations

import pytest
import torch
from conftest import repeat_text, words_text

from charrnn.training.numpy_engine import NumpyTrainer
from charrnn.training.trainer import Trainer
from training.test_train import make_trainer


def as_tuple(state) -> tuple[torch.Tensor, ...]:
    """A hidden state as a tuple of tensors: (h,) or (h, c); () for None (a zero state)."""
    if state is None:
        return ()
    return tuple(t.detach().clone() for t in (state if isinstance(state, tuple) else (state,)))


def is_zero(state: tuple[torch.Tensor, ...]) -> bool:
    return all(not t.any() for t in state)


def chunk_states(trainer) -> list[tuple[tuple, tuple]]:
    """Filled while training: for each training chunk, in order, the state the recurrent layers
    start from and the state they end with (evaluations and samples are left out)."""
    seen: list[tuple[tuple, tuple]] = []

    def hook(module, args, output):
        if module.training:
            seen.append((as_tuple(args[1] if len(args) > 1 else None), as_tuple(output[1])))

    trainer.model.rnn.register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_chunk_starts_from_the_state_the_previous_chunk_of_its_streams_ended_with(cell, tmp_path):
    """Carried state: chunk k of an epoch starts where chunk k - 1 stopped (the same streams, the
    next characters), and the first chunk of every epoch starts from zero."""
    trainer = make_trainer(
        words_text(700), tmp_path, cell=cell, seq_len=16, batch_size=4, max_steps=25, eval_every=1000
    )
    per_epoch = trainer.chunks_per_epoch
    assert 3 <= per_epoch <= 12  # several chunks, and more than two epochs in 25 steps
    seen = chunk_states(trainer)
    trainer.fit()
    assert len(seen) == 25
    for step, (start, end) in enumerate(seen):
        assert not is_zero(end)
        if step % per_epoch == 0:  # an epoch's first chunk: the streams start again at their beginning
            assert is_zero(start), f"step {step}: the first chunk of epoch {step // per_epoch} does not start from zero"
        else:
            previous_end = seen[step - 1][1]
            assert len(start) == len(previous_end) and all(torch.equal(a, b) for a, b in zip(start, previous_end)), (
                f"step {step}: the chunk does not start from the state the previous chunk ended with"
            )


def test_without_carried_state_every_chunk_starts_from_zero(tmp_path):
    trainer = make_trainer(
        words_text(700), tmp_path, seq_len=16, batch_size=4, max_steps=12, eval_every=1000, carry_state=False
    )
    seen = chunk_states(trainer)
    trainer.fit()
    assert len(seen) == 12 and all(is_zero(start) and not is_zero(end) for start, end in seen)


def weights(trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("engine", [Trainer, NumpyTrainer])
def test_weight_decay_shrinks_every_weight_by_lr_times_decay(engine, tmp_path):
    """AdamW decays the weights apart from the gradient's update: from the same start, one step
    with --weight-decay wd leaves every weight lr x wd x its old value below the step without."""
    lr, decay = 0.05, 0.5
    after = {}
    for wd in (0.0, decay):
        trainer = make_trainer(
            words_text(3000), tmp_path / str(wd), engine=engine, lr=lr, warmup=0, weight_decay=wd, max_steps=10
        )
        before = weights(trainer)
        trainer.train_step()
        after[wd] = weights(trainer)
    for name, w0 in before.items():
        assert w0.abs().max() > 0.05, name
        torch.testing.assert_close(after[decay][name] - after[0.0][name], -lr * decay * w0, rtol=0, atol=2e-6, msg=name)


def grad_norm(model) -> float:
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None])
    ).item()


@pytest.mark.parametrize("engine", [Trainer, NumpyTrainer])
def test_the_optimizer_is_given_the_gradient_clipped_to_grad_clip(engine, tmp_path):
    """The gradient AdamW applies has the norm --grad-clip where the raw one is larger, the raw
    one where it is smaller; with --grad-clip 0, always the raw one."""
    for clip in (0.02, 0.3, 0.0):
        trainer = make_trainer(
            repeat_text(3000, "the quick brown fox.\n"),
            tmp_path / str(clip),
            engine=engine,
            grad_clip=clip,
            lr=0.05,
            max_steps=6,
        )
        raw, applied = [], []
        gradients = trainer.gradients

        def measured(x, y):
            loss, norm, hidden = gradients(x, y)
            raw.append(norm)
            return loss, norm, hidden

        trainer.gradients = measured
        trainer.optimizer.register_step_pre_hook(
            lambda optimizer, args, kwargs: applied.append(grad_norm(trainer.model))
        )
        trainer.fit()
        assert len(raw) == len(applied) == 6
        assert all(r > 0.1 for r in raw), raw  # (a clip of 0.02 always cuts)
        if clip == 0.3:
            assert min(raw) < clip < max(raw), raw  # some steps are cut, some not
        expected = [min(r, clip) if clip else r for r in raw]
        assert applied == pytest.approx(expected, rel=1e-4), (clip, raw, applied)


def test_the_training_loss_of_an_evaluation_is_the_mean_of_the_steps_since_the_last_one(tmp_path):
    events = []
    trainer = make_trainer(
        words_text(3000), tmp_path, events=events.append, max_steps=12, eval_every=5, batch_size=4, seq_len=16
    )
    trainer.fit()
    steps = {e["step"]: e for e in events if e["event"] == "step"}
    evals = [e for e in events if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [5, 10, 12]
    for previous, now in zip([0, 5, 10], evals):
        losses = [steps[s]["loss"] for s in range(previous + 1, now["step"] + 1)]
        assert now["train_loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
    assert [e["chars_seen"] for e in steps.values()] == [n * 4 * 16 for n in range(1, 13)]


@pytest.mark.parametrize(
    "precision, device, scaled",
    [("fp16", "cuda", True), ("bf16", "cuda", False), ("fp32", "cuda", False), ("fp16", "cpu", False)],
)
def test_a_loss_scale_exactly_for_fp16_on_cuda(precision, device, scaled):
    """fp16 gradients below 6e-5 underflow to zero: fp16 autocast on CUDA scales the loss; bf16
    (fp32's range) and fp32 need none, and fp16 on a CPU runs in fp32 (see test_precision_options)."""
    import contextlib

    from charrnn.training.resources import scales_gradients

    autocast = lambda: torch.autocast(device_type=device, dtype=torch.float16)  # noqa: E731
    assert scales_gradients(precision, torch.device(device), autocast) is scaled
    assert not scales_gradients(precision, torch.device(device), contextlib.nullcontext)  # (fell back to fp32)


def test_without_fp16_on_cuda_the_scaler_changes_nothing(tmp_path):
    trainer = make_trainer(words_text(3000), tmp_path, max_steps=2)
    assert not trainer.scaler.is_enabled()


def scaled(trainer, scale: float = 2.0**10):
    """The trainer's step with an enabled loss scale (on the CPU, as fp16 on CUDA would have)."""
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=10_000)
    return trainer


def test_with_a_loss_scale_the_true_gradient_is_clipped(tmp_path):
    """The scaled loss' gradient is unscaled before clipping: what the clip measures and what
    AdamW applies are those of the loss itself, as without a scale (a clip of the scaled
    gradient would apply clip / scale)."""
    clip = 0.3
    runs = {}
    for name, make in (("plain", lambda t: t), ("scaled", scaled)):
        trainer = make(
            make_trainer(
                repeat_text(3000, "the quick brown fox.\n"), tmp_path / name, grad_clip=clip, lr=0.05, max_steps=6
            )
        )
        raw, applied = [], []
        gradients = trainer.gradients

        def measured(x, y, gradients=gradients, raw=raw):
            loss, norm, hidden = gradients(x, y)
            raw.append(norm)
            return loss, norm, hidden

        trainer.gradients = measured
        trainer.optimizer.register_step_pre_hook(
            lambda optimizer, args, kwargs, trainer=trainer, applied=applied: applied.append(grad_norm(trainer.model))
        )
        trainer.fit()
        assert len(applied) == 6 and min(raw) < clip < max(raw), raw
        assert applied == pytest.approx([min(r, clip) for r in raw], rel=1e-4)
        runs[name] = raw
    assert runs["scaled"] == pytest.approx(runs["plain"], rel=1e-4)  # the same gradients, scaled or not


def test_a_step_the_loss_scale_made_overflow_is_skipped_and_counted(tmp_path):
    """An inf gradient (what a too large loss scale gives) is skipped like any non-finite step
    (counted, said, no weight changed), and the scale halves for the next step."""
    events = []
    trainer = scaled(make_trainer(repeat_text(3000), tmp_path, events=events.append, max_steps=6, eval_every=100))
    trainer.model.head.bias.register_hook(lambda grad: grad * float("inf") if trainer.progress.step == 2 else grad)
    before = {}
    trainer.optimizer.register_step_pre_hook(lambda *args: before.update(weights(trainer)))
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1 and trainer.scaler.get_scale() == 2.0**9
    assert [e["message"] for e in events if e["event"] == "warning"] == [
        "step 3: non-finite loss or gradient, update skipped"
    ]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_a_resumed_run_goes_on_with_its_loss_scale(tmp_path, monkeypatch):
    """The loss scale (and its count of steps since it last grew) is saved with the run, so a
    resumed fp16-on-CUDA run does not start again from 65536 and skip steps to find it back; the
    weights then end as those of the run that was not interrupted."""
    from charrnn.store import checkpoint
    from charrnn.training import trainer as trainer_module

    monkeypatch.setattr(
        trainer_module,
        "grad_scaler_for",
        lambda *args: torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3),
    )
    text, common = repeat_text(3000), dict(max_steps=8, eval_every=100, save_every=100)

    def overflow_at_step_2(trainer):
        head = trainer.model.head.bias
        head.register_hook(lambda grad: grad * float("inf") if trainer.progress.step == 2 else grad)
        return trainer

    whole = overflow_at_step_2(make_trainer(text, tmp_path / "whole", **common))
    whole.fit()
    first = overflow_at_step_2(make_trainer(text, tmp_path / "half", **common))
    first.fit(until_step=4)
    saved = (first.scaler.get_scale(), first.scaler.state_dict()["_growth_tracker"])
    assert saved == (2.0**9, 1)  # halved by the overflow of the 3rd step, one good step since
    resumed = make_trainer(
        text, tmp_path / "half", resume_from=checkpoint.load(tmp_path / "half" / "run" / "last.pt"), **common
    )
    assert (resumed.scaler.get_scale(), resumed.scaler.state_dict()["_growth_tracker"]) == saved
    resumed.fit()
    assert resumed.scaler.get_scale() == whole.scaler.get_scale()
    for name, value in weights(whole).items():
        torch.testing.assert_close(weights(resumed)[name], value, rtol=0, atol=0)
