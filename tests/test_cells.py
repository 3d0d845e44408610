"""cells.py: the shapes and counts of a CharRNN's weights, against the real model."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from charrnn.cells import parameter_count, parameter_shapes, weight_shapes, weights_per_char
from charrnn.config import ModelConfig
from charrnn.model import CharRNN


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 3])
def test_the_shapes_and_counts_are_those_of_the_model(cell, layers):
    cfg = ModelConfig(vocab_size=11, cell=cell, layers=layers, hidden=6, embed=4)
    model = CharRNN(cfg)
    assert weight_shapes(cfg) == {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert parameter_shapes(cfg) == {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert parameter_count(cfg) == sum(p.numel() for p in model.parameters())
    matrices = [p for name, p in model.named_parameters() if name.startswith("rnn.weight_") or name == "head.weight"]
    assert weights_per_char(cell, layers, 6, 4, 11) == sum(p.numel() for p in matrices)  # one multiply-add each


def test_tied_weights_are_counted_once_and_a_config_without_the_option_is_untied():
    tied = ModelConfig(vocab_size=11, layers=1, hidden=8, embed=8, tie_weights=True)
    assert "head.weight" in weight_shapes(tied) and "head.weight" not in parameter_shapes(tied)
    assert parameter_count(tied) == sum(p.numel() for p in CharRNN(tied).parameters())
    older = SimpleNamespace(
        vocab_size=11, cell="gru", layers=1, hidden=8, embed=8
    )  # (a config from before tied weights)
    assert parameter_shapes(older) == weight_shapes(older) and "head.weight" in parameter_shapes(older)
