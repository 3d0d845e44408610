import numpy as np
import pytest
import torch

from charrnn.config import ModelConfig, SampleConfig
from charrnn.data.vocab import Vocab
from charrnn.model import CharRNN, numpy_weights
from charrnn.sample.engines import numpy_stepper
from charrnn.sample.generate import generate_text
from charrnn.sample.torch_engine import TorchStepper


def fused_stepper(model):
    return numpy_stepper(numpy_weights(model.state_dict()), model.cfg)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers, batch", [(1, 1), (3, 4)])
def test_fused_step_matches_torch(cell, layers, batch):
    torch.manual_seed(1)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden=20, embed=6)).eval()
    fused, reference = fused_stepper(model), TorchStepper(model)
    prime = [3, 1, 4, 1, 5]
    np.testing.assert_allclose(fused.prime(prime, batch), reference.prime(prime, batch), rtol=1e-4, atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(30):
        ids = rng.integers(0, 11, size=batch)
        np.testing.assert_allclose(fused.step(ids), reference.step(ids), rtol=1e-4, atol=1e-5)


def test_fused_and_torch_engines_write_the_same_text():
    torch.manual_seed(2)
    vocab = Vocab.from_text("abcdefgh \n")
    model = CharRNN(ModelConfig(vocab_size=len(vocab), cell="lstm", layers=2, hidden=16, embed=4)).eval()
    cfg = SampleConfig(length=300, temp=1.0, seed=5, prime="ab", num_samples=2).validate()
    assert generate_text(fused_stepper(model), vocab, cfg) == generate_text(TorchStepper(model), vocab, cfg)
