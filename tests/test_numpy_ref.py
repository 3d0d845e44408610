"""numpy_ref, the equations by hand, against finite differences and against torch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import words_text

from charrnn import numpy_ref
from charrnn.config import ModelConfig, TrainConfig
from charrnn.data.vocab import Vocab
from charrnn.model import CharRNN
from charrnn.store import checkpoint
from charrnn.store.model_file import build_model, open_model_file
from charrnn.training.trainer import Trainer

CELLS = ["rnn", "lstm", "gru"]


def tiny_case(cell: str, seed: int = 0):
    """A 2-layer float64 model with torch's initialisation, its weights as NumPy arrays, a chunk
    of ids and targets, and a random carried state (so the state's own gradient is checked too)."""
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=7, cell=cell, layers=2, hidden=5, embed=4)).double()
    params = {name: p.detach().numpy().copy() for name, p in model.named_parameters()}
    rng = np.random.default_rng(seed)
    ids, targets = rng.integers(0, 7, size=(3, 6)), rng.integers(0, 7, size=(3, 6))
    state = tuple(rng.normal(size=(2, 3, 5)) for _ in numpy_ref.CELLS[cell].state)
    return model, params, ids, targets, state


def loss_and_grads(params, cell, ids, targets, state):
    logits, _, tape = numpy_ref.forward(params, cell, ids, state)
    loss, d_logits = numpy_ref.cross_entropy(logits, targets)
    grads, d_state = numpy_ref.backward(params, tape, d_logits)
    return loss, grads, d_state


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_agree_with_finite_differences(cell):
    """Every entry of every parameter and of the initial state: (L(w+e) - L(w-e)) / 2e."""
    _, params, ids, targets, state = tiny_case(cell)
    _, grads, d_state = loss_and_grads(params, cell, ids, targets, state)
    loss_at = lambda: numpy_ref.cross_entropy(numpy_ref.forward(params, cell, ids, state)[0], targets)[0]  # noqa: E731
    eps = 1e-6
    for analytic, array in [(grads[n], params[n]) for n in params] + list(zip(d_state, state)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            kept = array[index]
            array[index] = kept + eps
            plus = loss_at()
            array[index] = kept - eps
            minus = loss_at()
            array[index] = kept
            numeric[index] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("cell", CELLS)
def test_forward_and_gradients_agree_with_torch_autograd(cell):
    """Same weights, inputs and carried state: logits, final state, loss, every parameter's
    gradient and the initial state's gradient agree with torch to float64 precision."""
    model, params, ids, targets, state = tiny_case(cell, seed=1)
    logits, final, tape = numpy_ref.forward(params, cell, ids, state)
    loss, d_logits = numpy_ref.cross_entropy(logits, targets)
    grads, d_state = numpy_ref.backward(params, tape, d_logits)

    state_t = [torch.tensor(part, requires_grad=True) for part in state]
    logits_t, final_t = model(torch.tensor(ids), tuple(state_t) if cell == "lstm" else state_t[0])
    loss_t = F.cross_entropy(logits_t.flatten(0, 1), torch.tensor(targets).flatten())
    loss_t.backward()

    close = dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), **close)
    for mine, theirs in zip(final, final_t if cell == "lstm" else (final_t,)):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), **close)
    assert loss == pytest.approx(loss_t.item(), rel=1e-12)
    assert set(grads) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), **close, err_msg=name)
    for mine, theirs in zip(d_state, state_t):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), **close)


@pytest.mark.parametrize("cell", CELLS)
def test_forward_logits_agree_with_torch_for_a_trained_checkpoint(cell, tmp_path):
    """Weights from a real (briefly trained, float32) checkpoint load unchanged: two chunks in a
    row, the state carried between them, give torch's logits."""
    text = words_text(4000)
    vocab = Vocab.from_text(text)
    cfg = TrainConfig(
        cell=cell,
        layers=2,
        hidden=24,
        embed=8,
        seq_len=16,
        batch_size=4,
        max_steps=25,
        eval_every=25,
        save_every=25,
        threads=1,
        device="cpu",
        warmup=0,
    ).validate()
    ids = vocab.encode(text)
    Trainer(cfg, vocab, ids[:3600], ids[3600:], tmp_path / "run").fit()
    ckpt = checkpoint.load(tmp_path / "run" / "best.pt")
    model = build_model(open_model_file(tmp_path / "run" / "best.pt"))
    params = {name: tensor.numpy() for name, tensor in ckpt.model.items()}
    assert params["rnn.weight_hh_l1"].dtype == np.float32

    chunk = ids[:64].astype(np.int64).reshape(2, 32)
    state, hidden = None, None
    for x in (chunk[:, :16], chunk[:, 16:]):
        logits, state, _ = numpy_ref.forward(params, cell, x, state)
        with torch.no_grad():
            logits_t, hidden = model(torch.from_numpy(x), hidden)
        np.testing.assert_allclose(logits, logits_t.numpy(), rtol=1e-4, atol=1e-5)


def test_cross_entropy_and_clipping_match_torch():
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(2, 5, 9)) * 4, rng.integers(0, 9, size=(2, 5))
    loss, d_logits = numpy_ref.cross_entropy(logits, targets)
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = F.cross_entropy(logits_t.flatten(0, 1), torch.tensor(targets).flatten())
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), rel=1e-12)
    np.testing.assert_allclose(d_logits, logits_t.grad.numpy(), rtol=1e-10, atol=1e-14)

    for max_norm in (0.5, 1e6):  # clipped, and left alone
        grads = {"a": rng.normal(size=(3, 4)), "b": rng.normal(size=7)}
        tensors = [torch.tensor(g.copy(), requires_grad=True) for g in grads.values()]
        for t, g in zip(tensors, grads.values()):
            t.grad = torch.tensor(g.copy())
        norm_t = torch.nn.utils.clip_grad_norm_(tensors, max_norm)
        norm = numpy_ref.clip_grad_norm(grads, max_norm)
        assert norm == pytest.approx(norm_t.item(), rel=1e-12)
        for g, t in zip(grads.values(), tensors):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
