"""Checkpoint metadata and contents are validated on load. A checkpoint edited by hand, its
SHA-256 recomputed (so the checksum cannot tell), is one line naming the file and what is wrong,
exit 2, in every command that reads it: never a traceback, never a run on garbage."""

import json
import re

import pytest
import torch
from conftest import invoke, run_cli

from charrnn.errors import CharRNNError
from charrnn.store import checkpoint
from store.test_checkpoint import run  # noqa: F401  (the tiny trained run, a fixture)


def recrafted(good, dest, edit):
    """A copy of the checkpoint `good` changed by `edit(meta, data)` (meta: its metadata as a
    dict, data: the dict torch.save wrote) with its SHA-256 recomputed, as a careful forger would."""
    data = torch.load(good, map_location="cpu", weights_only=True)
    meta = json.loads(data["meta"])
    edit(meta, data)
    data["meta"] = json.dumps(meta)
    data["sha256"] = checkpoint.digest(data)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, dest)
    return dest


def _set(mapping, key, value):
    mapping[key] = value


def _nan(data, name):
    data["model"][name] = torch.full_like(data["model"][name], float("nan"))


CASES = {  # what is wrong: (the edit, what the message says)
    "missing config": (lambda m, d: m.pop("config"), r"meta\.config is missing"),
    "missing model": (lambda m, d: m.pop("model"), r"meta\.model is missing"),
    "extra key": (lambda m, d: _set(m, "extra", 1), r"unexpected key meta\.extra"),
    "extra key in a record": (lambda m, d: _set(m["progress"], "bonus", 1), r"unexpected key meta\.progress\.bonus"),
    "wrong-typed key": (lambda m, d: _set(m["model"], "hidden", "32"), r"meta\.model\.hidden is '32', expected int"),
    "a bool for an int": (
        lambda m, d: _set(m["progress"], "step", True),
        r"meta\.progress\.step is True, expected int",
    ),
    "an integer too large for a float": (  # (was an OverflowError traceback in every command)
        lambda m, d: _set(m, "saved_at", 10**400),
        r"meta\.saved_at is 1000000000000000000000000000000000000\.\.\., expected float",
    ),
    "a record that is not one": (lambda m, d: _set(m, "corpus", [1]), r"meta\.corpus is \[1\], expected an object"),
    "out of range": (lambda m, d: _set(m["model"], "layers", 0), r"meta\.model\.layers 0 must be at least 1"),
    "negative evaluation time": (
        lambda m, d: _set(m["progress"], "eval_seconds", -1.0),
        r"meta\.progress\.eval_seconds -1\.0 must be a finite number, 0 or more",
    ),
    "unknown cell": (
        lambda m, d: _set(m["model"], "cell", "transformer"),
        r"meta\.model\.cell 'transformer' is not one of",
    ),
    "bad training config": (
        lambda m, d: _set(m["config"], "lr", -1.0),
        r"meta\.config: --lr -1\.0 must be a positive number",
    ),
    "model and config disagree": (
        lambda m, d: _set(m["config"], "hidden", 64),
        r"meta\.model\.hidden 32 and meta\.config\.hidden 64 disagree",
    ),
    "vocabulary and model disagree": (
        lambda m, d: _set(m["vocab"], "chars", m["vocab"]["chars"][:-1]),
        r"vocabulary of \d+ characters, but meta\.model\.vocab_size is \d+",
    ),
    "vocabulary not sorted": (
        lambda m, d: _set(m["vocab"], "chars", m["vocab"]["chars"][::-1]),
        r"meta\.vocab\.chars must be distinct characters sorted by code point",
    ),
    "weight missing": (lambda m, d: d["model"].pop("head.bias"), r"weight head\.bias is missing"),
    "weight of the wrong shape": (
        lambda m, d: _set(d["model"], "head.bias", torch.zeros(3)),
        r"head\.bias has shape \(3,\)",
    ),
    "integer weight": (
        lambda m, d: _set(d["model"], "head.bias", d["model"]["head.bias"].long()),
        r"head\.bias has dtype torch\.int64",
    ),
    "NaN weight": (lambda m, d: _nan(d, "head.bias"), r"weight head\.bias holds non-finite values"),
    "hidden of the wrong shape": (
        lambda m, d: _set(d, "hidden", [t[:, :3] for t in d["hidden"]]),
        r"hidden state 0 has shape \(1, 3, 32\), expected \(1, 8, 32\)",
    ),
    "hidden, one tensor of two": (
        lambda m, d: _set(d, "hidden", d["hidden"][:1]),
        r"hidden state of 1 tensor, expected 2",
    ),
    "batch size that does not fit the hidden state": (
        lambda m, d: _set(m, "batch_size", 4),
        r"hidden state 0 has shape \(1, 8, 32\), expected \(1, 4, 32\)",
    ),
    "hidden not a list": (
        lambda m, d: _set(d, "hidden", torch.zeros(2, 2)),
        r"hidden state is a Tensor, expected a list",
    ),
    "optimizer that does not fit": (
        lambda m, d: _set(d["optimizer"]["state"][0], "exp_avg", torch.zeros(2)),
        r"optimizer state: exp_avg of embed\.weight has shape \(2,\)",
    ),
    "optimizer for fewer parameters": (
        lambda m, d: d["optimizer"]["param_groups"][0]["params"].pop(),
        r"optimizer state: its parameters are",
    ),
    "optimizer with a wrong-typed setting": (
        lambda m, d: _set(d["optimizer"]["param_groups"][0], "betas", "fast"),
        r"optimizer state: betas is 'fast'",
    ),
    "an extra part": (lambda m, d: _set(d, "extra", torch.zeros(1)), r"part 'extra' is unexpected"),
    "a bool for the format version": (
        lambda m, d: _set(d, "format_version", True),
        r"damaged charrnn checkpoint \(format version True\)",
    ),
    "random state of the wrong size": (
        lambda m, d: _set(d["rng"], "torch", torch.zeros(3, dtype=torch.uint8)),
        r"random state 'torch'",
    ),
}


def commands(path, corpus, tmp_path):
    return {
        "train --resume": [
            "train",
            str(corpus),
            "--resume",
            "--out",
            str(path.parent.parent),
            "--name",
            path.parent.name,
        ],
        "train --init-from": ["train", str(corpus), "--init-from", str(path), "--out", str(tmp_path / "fresh")],
        "info": ["info", str(path)],
        "sample": ["sample", "-c", str(path), "--length", "5"],
        "eval": ["eval", str(path), str(corpus)],
        "export": ["export", str(path)],
    }


@pytest.mark.parametrize("case", list(CASES))
def test_an_edited_checkpoint_is_one_line_in_every_command(run, tmp_path, case):  # noqa: F811
    root, corpus, folder = run
    edit, message = CASES[case]
    path = recrafted(folder / "last.pt", tmp_path / "edited" / "c" / "last.pt", edit)
    with pytest.raises(CharRNNError, match=message):
        checkpoint.load(path)
    for name, args in commands(path, corpus, tmp_path).items():
        result = invoke(*args)
        err = result.stderr.decode()
        assert result.returncode == 2, (name, err)
        assert err.startswith(f"charrnn: error: {path}: ") and err.count("\n") == 1 and re.search(message, err), (
            name,
            err,
        )
    assert not (tmp_path / "fresh").exists() and not path.with_suffix(".npz").exists()


def test_the_crafted_checkpoints_start_from_a_full_one(run):  # noqa: F811
    """The edits above hit real parts: a carried hidden state (LSTM: h and c), an optimizer
    state for every parameter, and a random state."""
    _, _, folder = run
    ckpt = checkpoint.load(folder / "last.pt")
    assert len(ckpt.hidden) == 2 and len(ckpt.optimizer["state"]) == len(ckpt.model) and "torch" in ckpt.rng
    assert ckpt.info.model.hidden == 32 and ckpt.info.progress.step == ckpt.meta["progress"]["step"]


def test_the_message_is_one_line_from_the_real_command_line(run, tmp_path):  # noqa: F811
    _, _, folder = run
    path = recrafted(folder / "last.pt", tmp_path / "c" / "last.pt", CASES["missing config"][0])
    result = run_cli("info", str(path))
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode() == f"charrnn: error: {path}: damaged checkpoint: meta.config is missing\n"


def test_checkpoints_from_older_versions_still_load(run, tmp_path):  # noqa: F811
    """Older charrnn wrote no world_size (one process) and fewer training options (their
    defaults apply): both still load, and resume."""

    def older(meta, data):
        del meta["world_size"]
        del meta["progress"]["eval_seconds"]
        for key in ("sample_every", "sample_chars", "sample_prime", "precision", "compile", "engine", "dropout_mask"):
            del meta["config"][key]

    root, corpus, folder = run
    path = recrafted(folder / "last.pt", tmp_path / "old" / "c" / "last.pt", older)
    info = checkpoint.load(path).info
    assert info.world_size == 1 and info.config.engine == "torch" and info.progress.eval_seconds == 0.0
    assert checkpoint.load(folder / "last.pt").info.config.dropout_mask == "locked"  # (a run of today's)
    assert info.config.dropout_mask == "element"  # a run from before --dropout-mask goes on with its masks
    result = invoke(
        "train", str(corpus), "--resume", "--max-steps", "12", "--out", str(tmp_path / "old"), "--name", "c"
    )
    assert result.returncode == 0, result.stderr.decode()


def test_a_position_past_the_end_of_an_epoch_cannot_resume(run, tmp_path):  # noqa: F811
    """Only the run knows how many chunks an epoch has: resuming checks the saved position."""
    _, corpus, folder = run
    recrafted(folder / "last.pt", tmp_path / "far" / "c" / "last.pt", lambda m, d: _set(m["progress"], "chunk", 10**6))
    result = invoke("train", str(corpus), "--resume", "--out", str(tmp_path / "far"), "--name", "c")
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("\n") == 1, err
    assert "its position, chunk 1,000,000, is past the end of an epoch" in err and "Traceback" not in err
