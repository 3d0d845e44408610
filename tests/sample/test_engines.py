"""Sampling engines (`sample --engine`) and the torch-free .npz export (`charrnn export`)."""

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import invoke, run_cli, words_text

import charrnn
from charrnn.errors import CharRNNError
from charrnn.sample.engines import choose_engine, open_stepper
from charrnn.store import checkpoint
from charrnn.store.export import load_npz

REPO = Path(charrnn.__file__).resolve().parents[1]
SAMPLE = ["--length", "300", "--seed", "5", "--temp", "1.0", "--top-k", "8", "--prime", "The "]


@pytest.fixture(scope="module", params=["lstm", "gru", "rnn"])
def run(request, tmp_path_factory):
    """A small 2-layer model of each cell, trained through the CLI, and its .npz export."""
    root = tmp_path_factory.mktemp(request.param)
    corpus = root / "words.txt"
    corpus.write_text(words_text(8000), encoding="utf-8")
    flags = [
        "--cell",
        request.param,
        "--layers",
        "2",
        "--hidden",
        "32",
        "--embed",
        "16",
        "--seq-len",
        "16",
        "--batch-size",
        "8",
        "--threads",
        "1",
    ]
    assert (
        invoke("train", str(corpus), *flags, "--max-steps", "30", "--eval-every", "30", "--out", str(root)).returncode
        == 0
    )
    ckpt = root / "words" / "best.pt"
    exported = invoke("export", str(ckpt))
    assert exported.returncode == 0 and "best.npz" in exported.stderr.decode()
    return ckpt, ckpt.with_suffix(".npz")


def sample(*args: str) -> bytes:
    result = invoke("sample", *args)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_numpy_engine_writes_the_same_text_as_torch(run):
    """Same checkpoint, seed and options (temperature, top-k, a prime, 3 samples at once)."""
    ckpt, _ = run
    engines = ("torch", "numpy", "packed", "auto")
    assert [type(open_stepper(ckpt, engine)[0]).__name__ for engine in engines] == [
        "TorchStepper",
        "FusedStepper",
        "PackedStepper",
        "PackedStepper",
    ]
    torch_text = sample("-c", str(ckpt), "--engine", "torch", *SAMPLE, "--num-samples", "3")
    assert len(torch_text.decode()) > 3 * 300
    assert sample("-c", str(ckpt), "--engine", "numpy", *SAMPLE, "--num-samples", "3") == torch_text
    assert sample("-c", str(ckpt), "--engine", "packed", *SAMPLE, "--num-samples", "3") == torch_text
    assert sample("-c", str(ckpt), *SAMPLE, "--num-samples", "3") == torch_text  # auto (packed on the CPU)


def test_export_is_plain_arrays_and_json_with_the_checkpoints_weights(run):
    ckpt, npz = run
    source = checkpoint.load(ckpt)
    with np.load(npz, allow_pickle=False) as data:  # no pickle anywhere in it
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    assert (
        meta["format"] == "charrnn-npz"
        and meta["vocab"] == source.meta["vocab"]
        and meta["model"] == source.meta["model"]
    )
    assert set(arrays) == set(source.model)
    for name, tensor in source.model.items():
        assert arrays[name].dtype == np.float32 and np.array_equal(arrays[name], tensor.numpy()), name
    assert sample("-c", str(npz), *SAMPLE) == sample("-c", str(ckpt), "--engine", "torch", *SAMPLE)


def test_npz_samples_where_torch_cannot_be_imported(run, tmp_path):
    """A fake `torch` package first on the path makes `import torch` fail, as on a machine
    without it: sampling from the export still works and writes the torch engine's text."""
    ckpt, npz = run
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is hidden for this test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, **env}, capture_output=True)
    assert probe.returncode != 0 and b"torch is hidden" in probe.stderr
    result = run_cli("sample", "-c", str(npz), *SAMPLE, env_extra=env)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == sample("-c", str(ckpt), "--engine", "torch", *SAMPLE)
    refused = run_cli("sample", "-c", str(ckpt), "--length", "5", env_extra=env)
    assert refused.returncode == 2 and b"charrnn export" in refused.stderr
    work = tmp_path / "work"  # without -c: finding the newest best.pt needs no torch either
    (work / "checkpoints" / "run").mkdir(parents=True)
    (work / "checkpoints" / "run" / "best.pt").write_bytes(ckpt.read_bytes())
    newest = run_cli("sample", "--length", "5", env_extra=env, cwd=work)
    err = newest.stderr.decode()
    assert newest.returncode == 2 and "charrnn export" in err and "Traceback" not in err, err


def test_engine_choice():
    from charrnn.sample.packed_engine import packed_available

    assert packed_available()  # torch's CPU wheel has oneDNN: the packed engine runs here
    assert choose_engine("auto", "cpu", Path("m.pt")) == "packed"
    assert choose_engine("packed", "cpu", Path("m.npz")) == "packed"
    assert choose_engine("auto", "cpu", Path("m.npz")) == "numpy"  # (cuda: tests/api/test_model.py)
    assert choose_engine("torch", "cpu", Path("m.npz")) == "torch"
    for engine in ("numpy", "packed"):
        with pytest.raises(CharRNNError, match="CPU only"):
            choose_engine(engine, "cuda", Path("m.pt"))
    with pytest.raises(CharRNNError, match="not one of"):
        choose_engine("jax", "cpu", Path("m.pt"))


def test_damaged_or_foreign_npz_files_are_refused(run, tmp_path):
    _, npz = run
    with np.load(npz, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    cases = {
        "missing.npz": {k: v for k, v in arrays.items() if k != "head.bias"},
        "shape.npz": {**arrays, "head.bias": arrays["head.bias"][:-1]},
        "no_meta.npz": {k: v for k, v in arrays.items() if k != "meta"},
        "pickled.npz": {**arrays, "meta": np.array([{"format": "charrnn-npz"}], dtype=object)},
    }
    for name, content in cases.items():
        np.savez(tmp_path / name, **content)
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "text.npz").write_text("a text file, not an export\n")
    np.save(tmp_path / "one.npy", arrays["head.bias"])
    (tmp_path / "one.npz").write_bytes((tmp_path / "one.npy").read_bytes())
    (tmp_path / "raw-pickle.npz").write_bytes(pickle.dumps({"meta": "x"}))
    for name, message in [
        ("missing.npz", "head.bias is missing"),
        ("shape.npz", "head.bias has shape"),
        ("no_meta.npz", "not a charrnn export"),
        ("pickled.npz", "allow_pickle=False"),
        ("garbage.npz", "not a readable .npz"),
        ("text.npz", "not a zip archive"),
        ("one.npz", "a single .npy array"),
        ("raw-pickle.npz", "a pickle, which charrnn never loads"),
    ]:
        with pytest.raises(CharRNNError, match=message):
            load_npz(tmp_path / name)
    flipped = tmp_path / "flipped.npz"  # one byte of a weight changed: the zip's CRC-32 catches it
    data = bytearray(npz.read_bytes())
    with zipfile.ZipFile(npz) as zf:
        info = zf.getinfo("head.weight.npy")
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + 200] ^= 0xFF  # inside the array's bytes
    flipped.write_bytes(bytes(data))
    with pytest.raises(CharRNNError, match="not a readable .npz"):
        load_npz(flipped)


def test_export_needs_a_checkpoint_and_info_describes_an_export(run):
    ckpt, npz = run
    result = invoke("export", str(npz))
    err = result.stderr.decode()
    assert result.returncode == 2 and "an .npz export" in err and "give the .pt checkpoint" in err, err
    described = invoke("info", str(npz))
    assert described.returncode == 0 and "not recorded in this file" in described.stdout.decode()
    meta = json.loads(invoke("info", str(npz), "--json").stdout)
    assert meta["format"] == "charrnn-npz" and meta["training"] is None
    assert meta["model"] == json.loads(invoke("info", str(ckpt), "--json").stdout)["model"]
