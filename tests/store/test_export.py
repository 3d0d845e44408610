"""`.npz` exports are checked before they are unpacked: the zip's directory and each array's
.npy header (names, dtypes, shapes, sizes) against the model its metadata describes, so a file
that declares or holds far more than the model needs costs a header read, not the memory; and
weights that are not finite numbers are refused."""

import io
import json
import re
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest
from conftest import invoke
from tiny_run import structured_text, train_tiny_run

from charrnn.errors import CharRNNError
from charrnn.store import export
from charrnn.store.export import export_npz, load_npz


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


def npz_header(shape, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npz_with(path, arrays, name, header, chunks=()):
    """An export of `arrays` whose member `name` is `header` then `chunks` of bytes, streamed
    into a deflated zip (a gigabyte of zeros never sits in memory here)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for key, array in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                if key != name:
                    np.lib.format.write_array(fh, array, allow_pickle=False)
                    continue
                fh.write(header)
                for chunk in chunks:
                    fh.write(chunk)
    return path


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


def test_a_member_declaring_149_gib_is_refused_from_its_header(arrays, tmp_path):
    n = 40_000_000_000  # float32: 149 GiB
    path = npz_with(tmp_path / "huge.npz", arrays, "embed.weight", npz_header((n,)), [bytes(4096)])
    refused(path, rf"embed\.weight has shape \({n},\), expected \(\d+, 8\)")


PEAK = """
import resource, sys
from charrnn.errors import CharRNNError
from charrnn.store.export import load_npz

def peak_mb():  # ru_maxrss: KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)

before = peak_mb()
try:
    load_npz(sys.argv[1])
    print("loaded")
except CharRNNError as exc:
    print(exc)
print(round(peak_mb() - before))
"""


def test_a_real_1_gib_member_is_refused_in_bounded_memory(arrays, tmp_path):
    n = 2**28  # float32: 1 GiB, really there (deflated zeros)
    zeros = bytes(16 << 20)
    path = npz_with(tmp_path / "big.npz", arrays, "embed.weight", npz_header((n,)), [zeros] * (n * 4 // len(zeros)))
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("embed.weight.npy").file_size > 2**30
    done = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300)
    message, grown_mb = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stderr
    assert re.search(rf"embed\.weight has shape \({n},\)", message), message
    assert int(grown_mb) < 300, f"peak RSS grew by {grown_mb} MB"


def test_a_string_typed_weight_is_one_line(arrays, tmp_path):
    np.savez(tmp_path / "str.npz", **{**arrays, "head.bias": np.array(["x"] * len(arrays["head.bias"]))})
    refused(tmp_path / "str.npz", r"head\.bias has dtype <U1, expected floating point")


def test_a_member_longer_than_its_header_says_is_refused(arrays, tmp_path):
    """numpy would read the array and stop, never reaching the extra bytes (nor the CRC-32)."""
    bias = arrays["head.bias"]
    path = npz_with(
        tmp_path / "long.npz", arrays, "head.bias", npz_header(bias.shape), [bias.tobytes(), bytes(1 << 20)]
    )
    refused(path, r"head\.bias holds [\d,]+ bytes, its header says [\d,]+")


def test_members_that_are_not_one_array_each_are_refused(arrays, tmp_path):
    twice = tmp_path / "twice.npz"
    np.savez(twice, **arrays)
    with warnings.catch_warnings(), zipfile.ZipFile(twice, "a") as zf:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name
        zf.writestr("head.bias.npy", b"")
    refused(twice, r"a second member 'head\.bias\.npy'")
    other = tmp_path / "other.npz"
    np.savez(other, **arrays)
    with zipfile.ZipFile(other, "a") as zf:
        zf.writestr("README.txt", b"hello")
    refused(other, r"an unexpected member 'README\.txt'")


def test_a_metadata_member_too_large_is_refused_before_it_is_read(arrays, tmp_path):
    path = npz_with(tmp_path / "meta.npz", arrays, "meta", npz_header((), "<U100000000"), [bytes(4096)])
    refused(path, r"not a charrnn export \(no valid 'meta' entry\)")


def test_a_model_larger_than_the_memory_is_refused_before_it_is_read(arrays, tmp_path, monkeypatch):
    np.savez(tmp_path / "model.npz", **arrays)
    monkeypatch.setattr(export, "physical_memory", lambda: 10_000)
    refused(tmp_path / "model.npz", r"its model needs 0\.0 GiB, more than this machine's 0\.0 GiB of memory")
