"""Averaged weights (`train --average ema|swa`): the average's arithmetic, that evaluations and
best.pt use it, that last.pt keeps both, and that a resumed run goes on with it exactly."""

import json

import pytest
import torch
from conftest import repeat_text

from charrnn.config import ModelConfig
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.store import checkpoint
from charrnn.training.averaging import WeightAverage
from training.test_train import make_trainer

TEXT = repeat_text(4000, "to be or not to be, that is the question.\n")


def set_all(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def first_weight(average: WeightAverage) -> float:
    return average.weights[0].flatten()[0].item()


def test_ema_follows_the_weights_with_a_warm_up():
    model = torch.nn.Linear(2, 2)
    average = WeightAverage("ema", model, ema_decay=0.9)
    expected = None
    for n, value in enumerate([1.0, 2.0, 4.0, 8.0, 8.0, 8.0], start=1):
        set_all(model, value)
        average.update(0.0)
        keep = min(0.9, (1 + n) / (10 + n))
        expected = value if expected is None else keep * expected + (1 - keep) * value
        assert first_weight(average) == pytest.approx(expected, rel=1e-6)
    assert average.count == 6 and 2.0 < first_weight(average) < 8.0  # behind the walk, not at its end


def test_swa_is_the_plain_mean_from_its_start():
    model = torch.nn.Linear(2, 2)
    average = WeightAverage("swa", model, swa_start=0.5)
    set_all(model, 100.0)
    average.update(0.2)  # before the start: nothing averaged, nothing to swap in
    assert not average.active
    with average.swapped_in():
        assert model.weight[0, 0].item() == 100.0
    for fraction, value in [(0.5, 1.0), (0.7, 2.0), (0.9, 6.0)]:
        set_all(model, value)
        average.update(fraction)
    assert average.count == 3 and first_weight(average) == pytest.approx(3.0)
    set_all(model, 11.0)
    average.update(0.3)  # a resume with a higher limit: the fraction went back, the average goes on
    assert average.count == 4 and first_weight(average) == pytest.approx(5.0)


def test_the_average_is_swapped_in_and_the_trained_weights_come_back_exactly():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=12, layers=1, hidden=8, embed=8, tie_weights=True))
    average = WeightAverage("ema", model)
    average.update(0.0)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError), average.swapped_in():
        assert all(torch.equal(model.state_dict()[k], trained[k]) for k in trained)  # the average (one step: those)
        raise RuntimeError("even when the block fails")
    assert all(torch.equal(model.state_dict()[k], moved[k]) for k in moved)
    state = average.state()
    assert set(state) == set(trained)  # tied weights under both their names, as a state dict has them
    assert torch.equal(state["head.weight"], state["embed.weight"])


def metrics(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_evaluations_and_best_pt_use_the_average_and_last_pt_keeps_both(tmp_path):
    from charrnn.training.evaluation import validation_sum

    trainer = make_trainer(TEXT, tmp_path, max_steps=30, eval_every=30, save_every=10, average="ema", ema_decay=0.95)
    trainer.fit()  # (one evaluation, at the end: best.pt is written then, beside the last last.pt)
    last = checkpoint.load(tmp_path / "run" / "last.pt")
    assert last.average is not None and last.info.progress.average_count == 30
    assert any(not torch.equal(last.model[k], last.average[k]) for k in last.model)
    assert all(torch.equal(last.model[k], v) for k, v in trainer.model.state_dict().items())  # the trained ones
    best = checkpoint.load(tmp_path / "run" / "best.pt")
    assert best.average is None  # (best.pt is the model to use: the average, once)
    # The loss written for best.pt's step is the loss of best.pt's weights (the average's), not the trained ones'.
    rows = {r["step"]: r["val_loss"] for r in metrics(tmp_path / "run") if r.get("val_loss") is not None}
    model = CharRNN(trainer.model_cfg)
    model.load_state_dict(best.model)
    total, count, _ = validation_sum(
        model, trainer.val_ids, trainer.batch_size, trainer.cfg, "cpu", trainer.dist, None, trainer.clock
    )
    assert total / count == pytest.approx(rows[best.info.progress.step], rel=1e-5)
    assert best.info.progress.step == 30 and all(torch.equal(best.model[k], last.average[k]) for k in last.model)


def test_resume_goes_on_with_the_average_exactly(tmp_path):
    common = dict(max_steps=24, eval_every=5, save_every=7, average="ema", ema_decay=0.9)
    straight = make_trainer(TEXT, tmp_path / "a", **common)
    straight.fit()
    first = make_trainer(TEXT, tmp_path / "b", **common)
    first.fit(until_step=12)
    resumed = make_trainer(
        TEXT, tmp_path / "b", resume_from=checkpoint.load(tmp_path / "b" / "run" / "last.pt"), **common
    )
    assert resumed.average.count == 12
    resumed.fit()
    a, b = straight.average.state(), resumed.average.state()
    assert all(torch.equal(b[key], a[key]) for key in a)  # bit for bit
    va = [r["val_loss"] for r in metrics(tmp_path / "a" / "run") if "val_loss" in r]
    vb = [r["val_loss"] for r in metrics(tmp_path / "b" / "run") if "val_loss" in r]
    assert va == vb


def test_a_damaged_average_is_refused(tmp_path):
    trainer = make_trainer(TEXT, tmp_path, max_steps=5, eval_every=5, save_every=5, average="swa", swa_start=0.0)
    trainer.fit()
    path = tmp_path / "run" / "last.pt"
    ckpt = checkpoint.load(path)
    name = next(iter(ckpt.average))
    ckpt.average[name] = torch.zeros(3)
    checkpoint.save(ckpt, path)
    with pytest.raises(CharRNNError, match=f"damaged model: {name} has shape"):
        checkpoint.load(path)
    ckpt.average[name] = torch.full_like(ckpt.model[name], float("nan"))
    checkpoint.save(ckpt, path)
    with pytest.raises(CharRNNError, match="non-finite"):
        checkpoint.load(path)


def test_bad_average_options_are_refused():
    from charrnn.config import TrainConfig

    with pytest.raises(CharRNNError, match="--average 'mean' is not one of: none, ema, swa"):
        TrainConfig(average="mean").validate()
    with pytest.raises(CharRNNError, match="--ema-decay 1.0 must be in"):
        TrainConfig(ema_decay=1.0).validate()
