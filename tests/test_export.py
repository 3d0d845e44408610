"""`.npz` exports: their metadata is read into the checkpoint's typed records; weights that are
not finite numbers are refused."""

import json
import re

import numpy as np
import pytest

from charrnn.errors import CharRNNError
from charrnn.export import export_npz, load_npz

from conftest import invoke
from tiny_run import structured_text, train_tiny_run


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    """The arrays (and 'meta') of the export of a tiny trained LSTM (2 layers, hidden 16)."""
    folder = tmp_path_factory.mktemp("export")
    train_tiny_run(folder / "run", structured_text(3000), max_steps=5)
    npz = export_npz(folder / "run" / "last.pt", folder / "model.npz")
    with np.load(npz, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def refused(path, message):
    """load_npz and `charrnn sample` both refuse `path` with `message`, in one line."""
    with pytest.raises(CharRNNError, match=message):
        load_npz(path)
    result = invoke("sample", "-c", str(path), "--length", "5")
    err = result.stderr.decode()
    assert result.returncode == 2 and err.startswith(f"charrnn: error: {path}: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_an_export_loads_whole(arrays, tmp_path):
    np.savez(tmp_path / "same.npz", **arrays)
    weights, vocab, cfg = load_npz(tmp_path / "same.npz")
    assert set(weights) == set(arrays) - {"meta"} and len(vocab) == cfg.vocab_size
    assert all(np.array_equal(weights[name], arrays[name]) for name in weights)


def test_export_metadata_is_read_into_typed_records(arrays, tmp_path):
    meta = json.loads(str(arrays["meta"]))
    meta["model"]["hidden"] = "16"
    np.savez(tmp_path / "typed.npz", **{**arrays, "meta": np.array(json.dumps(meta))})
    refused(tmp_path / "typed.npz", r"damaged export: meta\.model\.hidden is '16', expected int")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused(arrays, tmp_path, value):
    bias = arrays["head.bias"].copy()
    bias[3] = value
    np.savez(tmp_path / "nan.npz", **{**arrays, "head.bias": bias})
    refused(tmp_path / "nan.npz", r"weight head\.bias holds non-finite values")
