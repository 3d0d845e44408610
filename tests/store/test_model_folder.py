"""Model folders (`charrnn export --format safetensors`): model.safetensors + config.json, which
plain `safetensors` and `json` open, which charrnn reads back without torch, and which are checked
as strictly as the other model files: a damaged or crafted folder is one clear error."""

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from conftest import invoke, run_cli
from tiny_run import structured_text, train_tiny_run

import charrnn
from charrnn.errors import CharRNNError
from charrnn.sample.engines import open_stepper
from charrnn.store import checkpoint
from charrnn.store.model_file import open_model_file, resolve_checkpoint
from charrnn.store.model_folder import MAX_HEADER_BYTES, load_model_folder, save_model_folder

REPO = Path(charrnn.__file__).resolve().parents[1]
SAMPLE = ["--length", "200", "--seed", "5", "--temp", "1.0", "--top-k", "8", "--prime", "The "]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny trained run (2-layer LSTM, hidden 16) and its model folder, written by the command."""
    root = tmp_path_factory.mktemp("folder")
    train_tiny_run(root / "run", structured_text(3000), max_steps=12)
    result = invoke("export", str(root / "run"), "--format", "safetensors", "--out", str(root / "model"))
    assert result.returncode == 0, result.stderr.decode()
    assert f"sample -c {root / 'model'}" in result.stderr.decode()
    return root / "run" / "best.pt", root / "model"


def sample(*args: str, env: dict | None = None) -> bytes:
    result = run_cli("sample", *args, env_extra=env)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


# ---------------------------------------------------------------------------------- what is written
def test_plain_safetensors_and_json_open_the_folder(exported):
    """No charrnn here: the weights by torch's names and shapes, the vocabulary as characters."""
    ckpt, folder = exported
    script = textwrap.dedent(
        """
        import json, sys
        import safetensors.numpy
        folder = sys.argv[1]
        config = json.load(open(folder + "/config.json", encoding="utf-8"))
        weights = safetensors.numpy.load_file(folder + "/model.safetensors")
        V, E, H, L = config["vocab_size"], config["embed"], config["hidden"], config["layers"]
        assert config["format"] == "charrnn-safetensors" and config["cell"] == "lstm"
        assert len(config["vocab"]) == V and all(len(c) == 1 for c in config["vocab"])
        expected = {"embed.weight": (V, E), "head.weight": (V, H), "head.bias": (V,)}
        for k in range(L):
            expected |= {f"rnn.weight_ih_l{k}": (4 * H, E if k == 0 else H), f"rnn.weight_hh_l{k}": (4 * H, H)}
            expected |= {f"rnn.bias_ih_l{k}": (4 * H,), f"rnn.bias_hh_l{k}": (4 * H,)}
        assert {n: w.shape for n, w in weights.items()} == expected, {n: w.shape for n, w in weights.items()}
        assert all(w.dtype.name == "float32" for w in weights.values())
        print(json.dumps({"vocab": "".join(config["vocab"]), "training": config["training"]}))
        assert not [m for m in sys.modules if m.startswith("charrnn") or m == "torch"], "imported charrnn or torch"
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, cwd="/")
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    source = checkpoint.load(ckpt)
    assert seen["vocab"] == "".join(source.info.vocab.chars)
    assert seen["training"]["step"] == source.info.progress.step
    assert seen["training"]["best_val_loss"] == source.info.progress.best_loss
    with safetensors.safe_open(folder / "model.safetensors", framework="numpy") as fh:
        assert fh.metadata() == {"format": "pt"}  # what Hugging Face's loaders look for
        assert set(fh.keys()) == set(source.model)
        for name, tensor in source.model.items():
            assert np.array_equal(fh.get_tensor(name), tensor.numpy()), name


def test_the_folder_samples_as_its_checkpoint(exported):
    ckpt, folder = exported
    assert resolve_checkpoint(folder) == folder / "model.safetensors"
    assert open_stepper(folder)[2] == "numpy"  # auto: no torch in the loop for an export
    by_folder = sample("-c", str(folder), *SAMPLE)
    assert len(by_folder.decode()) > 200
    assert by_folder == sample("-c", str(ckpt), "--engine", "torch", *SAMPLE)
    assert sample("-c", str(folder / "model.safetensors"), *SAMPLE) == by_folder


def test_the_folder_opens_and_samples_where_torch_cannot_be_imported(exported, tmp_path):
    """`sys.modules['torch'] = None` makes every `import torch` fail, as on a machine without it."""
    ckpt, folder = exported
    script = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None
        from charrnn.store.model_file import open_model_file
        from charrnn.sample.engines import open_stepper
        record = open_model_file(sys.argv[1])
        stepper, vocab, engine = open_stepper(sys.argv[1])
        assert engine == "numpy" and vocab == record.vocab and record.training.step > 0
        try:
            import torch
        except ImportError:
            print("no torch", type(stepper).__name__)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["no", "torch", "FusedStepper"]
    fake = tmp_path / "no_torch"  # the whole command too: a `torch` that fails to import
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is hidden for this test')\n")
    hidden = {"PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])}
    assert sample("-c", str(folder), *SAMPLE, env=hidden) == sample("-c", str(ckpt), "--engine", "torch", *SAMPLE)
    info = run_cli("info", str(folder), "--json", env_extra=hidden)
    assert info.returncode == 0, info.stderr.decode()
    assert json.loads(info.stdout)["training"]["step"] == checkpoint.load(ckpt).info.progress.step


def test_info_describes_a_model_folder(exported):
    ckpt, folder = exported
    table = invoke("info", str(folder))
    assert table.returncode == 0, table.stderr.decode()
    text = table.stdout.decode()
    assert "LSTM 2×16" in text and "charrnn-safetensors, version 1" in text and "best loss" in text
    meta = json.loads(invoke("info", str(folder), "--json").stdout)
    assert meta["model"] == json.loads(invoke("info", str(ckpt), "--json").stdout)["model"]
    assert meta["path"].endswith("model.safetensors") and meta["format"] == "charrnn-safetensors"


def test_save_writes_what_open_reads(exported, tmp_path):
    ckpt, _ = exported
    record = open_model_file(ckpt)
    again = open_model_file(save_model_folder(record, tmp_path / "a"))
    assert (again.vocab, again.model, again.training, again.info) == (record.vocab, record.model, record.training, None)
    assert all(np.array_equal(again.weights[name], record.weights[name]) for name in record.weights)
    resaved = open_model_file(save_model_folder(again, tmp_path / "a"))  # a model folder is replaced
    assert resaved.training == record.training
    config = json.loads((tmp_path / "a" / "config.json").read_text(encoding="utf-8"))
    assert config["weights_sha256"] == hashlib.sha256((tmp_path / "a" / "model.safetensors").read_bytes()).hexdigest()


def test_serve_loads_a_model_folder_by_its_name(exported):
    from charrnn.serve.models import load_models

    ckpt, folder = exported
    models = load_models([folder, ckpt])
    assert list(models) == ["model", "run"]
    served, source = models["model"].info, models["run"].info
    assert served["format"] == "charrnn-safetensors" and source["format"] == "charrnn-checkpoint"
    assert served["config"] is None and served["file"] == "model.safetensors"
    same = ("cell", "layers", "hidden", "parameters", "vocabulary", "steps", "chars_seen", "best_bpc", "train_chars")
    assert {k: served[k] for k in same} == {k: source[k] for k in same}


# ---------------------------------------------------------------------------------- refusing to write
def test_save_refuses_to_replace_what_is_not_a_model_folder(exported, tmp_path):
    ckpt, _ = exported
    record = open_model_file(ckpt)
    with pytest.raises(CharRNNError, match=r"a run folder \(it holds last\.pt, best\.pt"):
        save_model_folder(record, ckpt.parent)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(CharRNNError, match="not a charrnn model's config; refusing to overwrite it"):
        save_model_folder(record, tmp_path / "other")
    assert (tmp_path / "other" / "config.json").read_text() == '{"model_type": "gpt2"}'
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"theirs")
    with pytest.raises(CharRNNError, match="weights with no charrnn config.json beside them"):
        save_model_folder(record, tmp_path / "weights")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CharRNNError, match="a file, not a folder"):
        save_model_folder(record, tmp_path / "file")
    refused = invoke("export", str(ckpt), "-f", "safetensors", "-o", str(ckpt.parent))
    assert refused.returncode == 2 and "a run folder" in refused.stderr.decode()
    unknown = invoke("export", str(ckpt), "-f", "onnx")
    assert unknown.returncode == 2 and "is not one of: npz, safetensors" in unknown.stderr.decode()


# ---------------------------------------------------------------------------------- refusing to read
def parts(folder: Path) -> tuple[dict, dict]:
    with safetensors.safe_open(folder / "model.safetensors", framework="numpy") as fh:
        weights = {name: fh.get_tensor(name) for name in fh.keys()}
    return weights, json.loads((folder / "config.json").read_text(encoding="utf-8"))


def write(folder: Path, weights: dict | None, config: dict, data: bytes | None = None, digest: bool = True) -> Path:
    """A model folder of `weights` (or the raw `data`) and `config`, its digest made to match."""
    folder.mkdir(parents=True, exist_ok=True)
    data = safetensors.numpy.save(weights) if data is None else data
    (folder / "model.safetensors").write_bytes(data)
    if digest:
        config = {**config, "weights_sha256": hashlib.sha256(data).hexdigest()}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def refused(folder: Path, message: str) -> None:
    """open_model_file and `charrnn sample` both refuse `folder` with `message`, in one line."""
    with pytest.raises(CharRNNError, match=message):
        open_model_file(folder)
    result = invoke("sample", "-c", str(folder), "--length", "5")
    err = result.stderr.decode()
    assert result.returncode == 2 and err.startswith("charrnn: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def raw(header: dict, body: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + body


def test_a_copy_of_the_folder_reads(exported, tmp_path):
    weights, config = parts(exported[1])
    loaded, vocab, cfg, training = load_model_folder(write(tmp_path / "m", weights, config))
    assert cfg.hidden == 16 and len(vocab) == cfg.vocab_size and training.step > 0
    assert all(np.array_equal(loaded[name], weights[name]) for name in weights)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(hidden="16"), r"damaged model config: config\.hidden is '16', expected int"),
        (lambda c: c.update(hidden=17), r"damaged model: head\.weight has shape \(25, 16\), expected \(25, 17\)"),
        (lambda c: c.update(colour="blue"), r"damaged model config: unexpected key 'colour'"),
        (
            lambda c: c.update(vocab=c["vocab"][:-1]),
            r"a vocabulary of 24 characters, but meta\.model\.vocab_size is 25",
        ),
        (lambda c: c.update(vocab=c["vocab"][::-1]), r"vocab: vocabulary characters must be distinct and sorted"),
        (lambda c: c.update(vocab=["ab"] + c["vocab"][1:]), r"vocab must be a list of characters"),
        (lambda c: c.update(cell="transformer"), r"config\.cell 'transformer' is not one of"),
        (lambda c: c.update(format_version=2), r"model format version 2 is newer than this charrnn reads \(1\)"),
        (lambda c: c.update(format="other"), r"not a charrnn model's config"),
        (lambda c: c["training"].update(step=-1), r"training\.step -1 must be 0 or more"),
        (lambda c: c["training"].update(corpus=3), r"training\.corpus is 3, expected str \| None"),
        (lambda c: c.update(weights_sha256="00"), r"weights_sha256 must be 64 lowercase hexadecimal digits"),
    ],
)
def test_a_config_that_does_not_fit_is_refused(exported, tmp_path, change, message):
    folder = write(tmp_path / "m", *parts(exported[1]))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))  # its digest fits the weights
    change(config)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    refused(folder, message)


def test_a_config_that_is_not_json_or_too_big_is_refused(exported, tmp_path, monkeypatch):
    weights, config = parts(exported[1])
    folder = write(tmp_path / "m", weights, config)
    (folder / "config.json").write_text('{"format": "charrnn-safetensors", ', encoding="utf-8")
    refused(folder, r"config\.json: not valid JSON")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    refused(folder, r"config\.json: not valid JSON")
    (folder / "config.json").unlink()
    refused(folder, r"config\.json: no such file")
    from charrnn.store import model_folder

    write(folder, weights, config)
    monkeypatch.setattr(model_folder, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(CharRNNError, match=r"config\.json: over 0 MiB, far more than a model's config"):
        open_model_file(folder)


def test_weights_that_do_not_fit_the_config_are_refused(exported, tmp_path):
    weights, config = parts(exported[1])
    missing = {k: v for k, v in weights.items() if k != "head.bias"}
    refused(write(tmp_path / "a", missing, config), r"damaged model: weight head\.bias is missing")
    refused(write(tmp_path / "b", {**weights, "extra": np.zeros(3, np.float32)}, config), r"unexpected weight extra")
    ints = {**weights, "head.bias": weights["head.bias"].astype(np.int32)}
    refused(write(tmp_path / "c", ints, config), r"head\.bias has dtype I32, expected one of F32, F16, F64")
    nan = {**weights, "head.bias": np.full_like(weights["head.bias"], np.nan)}
    refused(write(tmp_path / "d", nan, config), r"weight head\.bias holds non-finite values")
    halves = {name: w.astype(np.float16) for name, w in weights.items()}  # another tool's choice: read as float32
    loaded, _, _, _ = load_model_folder(write(tmp_path / "e", halves, config))
    assert loaded["head.bias"].dtype == np.float32


def test_damaged_or_mismatched_weights_are_refused(exported, tmp_path):
    weights, config = parts(exported[1])
    data = bytearray((exported[1] / "model.safetensors").read_bytes())
    data[-3] ^= 0x10  # one bit of the last weight
    folder = write(tmp_path / "a", None, config, data=bytes(data), digest=False)
    refused(folder, r"its contents do not match the weights_sha256 of config\.json")
    other = {name: w + 1 for name, w in weights.items()}  # the weights of another save, the config of this one
    (folder / "model.safetensors").write_bytes(safetensors.numpy.save(other))
    refused(folder, r"damaged on disk, or the two files come from different saves")
    del config["weights_sha256"]  # a folder written by another tool may have no digest: then none is checked
    assert load_model_folder(write(tmp_path / "b", other, config, digest=False))[2].hidden == 16


def test_a_crafted_header_is_refused_before_anything_is_read(exported, tmp_path, monkeypatch):
    weights, config = parts(exported[1])
    folder = write(tmp_path / "m", weights, config)
    from charrnn.store import model_folder

    with monkeypatch.context() as patch:  # a whole file whose header is over the limit
        patch.setattr(model_folder, "MAX_HEADER_BYTES", 64)
        with pytest.raises(CharRNNError, match=r"its header claims [0-9,]+ bytes, over the limit of 64"):
            open_model_file(folder)
    cases = [
        (b"", r"shorter than its 8-byte header length"),
        (struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", r"its header claims 16,777,217 bytes, over the limit"),
        (struct.pack("<Q", 1 << 62), r"over the limit"),
        (raw({}, length=500), r"more than the file holds"),
        (struct.pack("<Q", 4) + b"nope", r"its header is not JSON"),
        (raw([1, 2]), r"its header is not a JSON object"),
        (raw({"__metadata__": {"a": 1}}), r"__metadata__ must map names to strings"),
        (raw({"head.bias": {"dtype": "F32", "shape": [25]}}), r"damaged safetensors header \(entry 'head\.bias'\)"),
    ]
    for data, message in cases:
        (folder / "model.safetensors").write_bytes(data)
        refused(folder, message)
    data = safetensors.numpy.save(weights)
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    header["head.bias"]["data_offsets"][1] += 4  # claims one float more than its shape holds
    (folder / "model.safetensors").write_bytes(raw(header, b"\0" * 20000))
    refused(folder, r"the bytes of head\.bias are not where they should be")


def test_tied_weights_must_be_one_matrix(tmp_path):
    from charrnn.config import ModelConfig
    from charrnn.data.vocab import Vocab
    from charrnn.store.model_file import ModelFile

    cfg = ModelConfig(vocab_size=3, cell="gru", layers=1, hidden=4, embed=4, tie_weights=True)
    from charrnn.cells import weight_shapes

    rng = np.random.default_rng(0)
    weights = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in weight_shapes(cfg).items()}
    weights["head.weight"] = weights["embed.weight"]
    record = ModelFile(Path("made"), weights, Vocab(("a", "b", "c")), cfg)
    assert open_model_file(save_model_folder(record, tmp_path / "tied")).model.tie_weights
    _, config = parts(tmp_path / "tied")
    refused(write(tmp_path / "untied", {**weights, "head.weight": weights["head.weight"] + 1}, config), "tie_weights")
