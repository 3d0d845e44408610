"""What `checkpoint.load` says about each way a file can be wrong: the whole message, which is
all a user sees (test_metadata.py checks that every command shows it, in one line)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_run import structured_text, train_tiny_run

from charrnn.errors import CharRNNError
from charrnn.store import checkpoint
from store.test_metadata import recrafted


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real last.pt of a tiny LSTM run (2 layers of 16, 4 streams): weights, AdamW's state, the
    carried state and the random state."""
    folder = tmp_path_factory.mktemp("good") / "run"
    train_tiny_run(folder, structured_text(3000), max_steps=3, eval_every=3, save_every=3)
    return folder / "last.pt"


def message(path) -> str:
    with pytest.raises(CharRNNError) as info:
        checkpoint.load(path)
    return str(info.value)


def damaged(good, tmp_path, edit) -> tuple:
    path = recrafted(good, tmp_path / "edited.pt", edit)
    return path, message(path)


def test_a_good_checkpoint_loads_whole(good):
    ckpt = checkpoint.load(good)
    assert ckpt.format_version == checkpoint.FORMAT_VERSION and ckpt.info.progress.step == 3
    assert len(ckpt.hidden) == 2 and set(ckpt.rng) == {"torch"} and len(ckpt.optimizer["state"]) == len(ckpt.model)


def test_files_that_are_no_checkpoint(good, tmp_path):
    assert message(tmp_path / "nope.pt") == f"{tmp_path / 'nope.pt'}: no such checkpoint"
    assert message(tmp_path) == f"{tmp_path}: is a directory; give a .pt file (e.g. {tmp_path}/best.pt)"
    export = tmp_path / "m.npz"
    np.savez(export, w=np.zeros(3))
    assert (
        message(export) == f"{export}: an .npz export holds only weights and vocabulary for `charrnn sample`; "
        "give the .pt checkpoint it came from"
    )
    for name, content, why in [
        ("empty.pt", b"", "the file is empty"),
        ("array.pt", None, "a NumPy array file"),
        ("text.pt", b"hello\n", "not a file torch.save writes"),
    ]:
        path = tmp_path / name
        if content is None:
            with open(path, "wb") as fh:
                np.save(fh, np.zeros(3))
        else:
            path.write_bytes(content)
        assert message(path) == f"{path}: not a readable charrnn checkpoint: {why}"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    assert (
        message(truncated)
        == f"{truncated}: not a readable charrnn checkpoint: truncated or damaged (its zip archive is incomplete)"
    )


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_a_file_that_asks_for_python_objects_is_refused_with_that_reason(tmp_path):
    for path, save in (
        (tmp_path / "zip.pt", lambda p: torch.save({"x": Evil()}, p)),
        (tmp_path / "raw.pt", lambda p: p.write_bytes(__import__("pickle").dumps({"x": Evil()}))),
    ):
        save(path)
        assert (
            message(path)
            == f"{path}: not a readable charrnn checkpoint: it asks to load Python objects, which charrnn never does "
            "(refused, nothing run)"
        )


@pytest.mark.parametrize(
    "raised, reason",
    [
        (RuntimeError("first line\nsecond line"), "first line"),
        (RuntimeError(""), "RuntimeError"),
        (ValueError("x" * 500), "x" * 300),
    ],
)
def test_what_torch_load_says_is_cut_to_its_first_line(tmp_path, monkeypatch, raised, reason):
    path = tmp_path / "odd.pt"
    path.write_bytes(b"\x80\x02odd")  # (a pickle, by its first byte)

    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(torch, "load", failing)
    assert message(path) == f"{path}: not a readable charrnn checkpoint: {reason}"


@pytest.mark.parametrize("version", [True, 0, -1, "1", 1.0, None])
def test_a_format_version_that_is_not_a_positive_int(good, tmp_path, version):
    path, said = damaged(good, tmp_path, lambda m, d: d.update(format_version=version))
    assert said == f"{path}: damaged charrnn checkpoint (format version {version!r})"


def test_parts_missing_or_unexpected(good, tmp_path):
    path, said = damaged(good, tmp_path, lambda m, d: d.pop("rng"))
    assert said == f"{path}: damaged checkpoint: part 'rng' is missing"
    path, said = damaged(good, tmp_path, lambda m, d: (d.update({3: "x"}), d.pop("rng")))
    assert said == f"{path}: damaged checkpoint: part 3 is unexpected"  # (the first of them, by name)


def test_meta_that_is_not_json(good, tmp_path):
    def edit(meta, data):
        data["meta"] = "{not json"
        data["sha256"] = checkpoint.digest(data)

    path = tmp_path / "edited.pt"
    data = torch.load(good, map_location="cpu", weights_only=True)
    edit(None, data)
    torch.save(data, path)
    assert message(path) == f"{path}: damaged checkpoint: meta is not JSON"


@pytest.mark.parametrize(
    "edit, said",
    [
        (lambda m, d: d.update(model=[1, 2]), "the weights are not a dict of named tensors"),
        (lambda m, d: d["model"].update({7: torch.zeros(1)}), "the weights are not a dict of named tensors"),
        (lambda m, d: d["model"].update({"head.bias": [0.0] * 3}), "weight head.bias is a list, expected a tensor"),
        (lambda m, d: d.update(optimizer=[]), "optimizer state is not an AdamW state"),
        (lambda m, d: d["optimizer"].pop("state"), "optimizer state is not an AdamW state"),
        (
            lambda m, d: d["optimizer"].update(param_groups=d["optimizer"]["param_groups"] * 2),
            "optimizer state: expected one group of parameters",
        ),
        (
            lambda m, d: d["optimizer"].update(param_groups=d["optimizer"]["param_groups"][0]),
            "optimizer state: expected one group of parameters",
        ),
        (
            lambda m, d: d["optimizer"].update(param_groups=["params"]),
            "optimizer state: expected one group of parameters",
        ),
        (lambda m, d: d["optimizer"].update(state=[]), "optimizer state: expected one group of parameters"),
        (
            lambda m, d: d["optimizer"]["param_groups"][0].update(params=list(range(100, 160))),
            "optimizer state: its parameters are [100, 101, 102, 103, 104, 105, 106, 107,, expected the model's 11",
        ),
        (
            lambda m, d: d["optimizer"]["param_groups"][0].update(lr=float("inf")),
            "optimizer state: lr is inf, expected one like 0.001",
        ),
        (
            lambda m, d: d["optimizer"]["param_groups"][0].update(lr=True),
            "optimizer state: lr is True, expected one like 0.001",
        ),
        (
            lambda m, d: d["optimizer"]["param_groups"][0].update(betas=(0.9,)),
            "optimizer state: betas is (0.9,), expected one like (0.9, 0.999)",
        ),
        (
            lambda m, d: d["optimizer"]["param_groups"][0].update(betas=[0.9, "0.99"]),
            "optimizer state: betas is [0.9, '0.99'], expected one like (0.9, 0.999)",
        ),
        (
            lambda m, d: d["optimizer"]["param_groups"][0].update(eps="z" * 60),
            f"optimizer state: eps is {repr('z' * 60)[:40]}, expected one like 1e-08",
        ),
        (
            lambda m, d: d["optimizer"]["param_groups"][0].update(foreach=1),
            "optimizer state: foreach is 1, expected one like None",
        ),
        (
            lambda m, d: d["optimizer"]["state"].update({99: {}}),
            "optimizer state: an entry for parameter 99, which the model does not have",
        ),
        (
            lambda m, d: d["optimizer"].update(state={True: d["optimizer"]["state"][1]}),
            "optimizer state: an entry for parameter True, which the model does not have",
        ),
        (
            lambda m, d: d["optimizer"]["state"].update({0: [1]}),
            "optimizer state: an entry for parameter 0, which the model does not have",
        ),
        (
            lambda m, d: d["optimizer"]["param_groups"][0].update(amsgrad=True),
            "optimizer state: max_exp_avg_sq of embed.weight is a NoneType, expected a tensor",
        ),
        (
            lambda m, d: d["optimizer"]["state"][0].update(step=torch.zeros(1)),
            "optimizer state: step of embed.weight has shape (1,), expected ()",
        ),
        (
            lambda m, d: d["optimizer"]["state"][0].update(step=3),
            "optimizer state: step of embed.weight is a int, expected a tensor",
        ),
        (lambda m, d: d.update(rng=[1]), "random state is a list, expected a dict"),
        (lambda m, d: d["rng"].update({5: torch.zeros(3, dtype=torch.uint8)}), "unexpected random state 5"),
        (lambda m, d: d["rng"].update(numpy=torch.zeros(3, dtype=torch.uint8)), "unexpected random state 'numpy'"),
        (
            lambda m, d: d["rng"].update({"torch.1": d["rng"]["torch"]}),
            "unexpected random state 'torch.1'",
        ),  # one process: no second
        (lambda m, d: d["rng"].update(cuda=[1, 2]), "random state 'cuda' is not one torch can restore"),
        (
            lambda m, d: d["rng"].update(cuda=torch.zeros(2, 3, dtype=torch.uint8)),
            "random state 'cuda' is not one torch can restore",
        ),
        (
            lambda m, d: d["rng"].update(torch=torch.zeros(5000, dtype=torch.int64)),
            "random state 'torch' is not one torch can restore",
        ),
    ],
)
def test_what_is_wrong_inside_is_named(good, tmp_path, edit, said):
    path, got = damaged(good, tmp_path, edit)
    assert got == f"{path}: damaged checkpoint: {said}"


def test_random_states_of_every_process_and_device_are_accepted(good, tmp_path):
    """A run of two processes keeps 'torch' and 'torch.1' (and 'cuda', 'cuda.1' of any size)."""

    def two(meta, data):
        meta["world_size"] = 2  # (and the state of the other process' streams)
        data["hidden"] = [torch.cat([h, h], dim=1) for h in data["hidden"]]
        data["rng"].update(
            {
                "torch.1": data["rng"]["torch"],
                "cuda": torch.zeros(16, dtype=torch.uint8),
                "cuda.1": torch.zeros(16, dtype=torch.uint8),
            }
        )

    path = recrafted(good, tmp_path / "two.pt", two)
    assert set(checkpoint.load(path).rng) == {"torch", "torch.1", "cuda", "cuda.1"}
    path, said = damaged(good, tmp_path, lambda m, d: (two(m, d), d["rng"].update({"torch.2": d["rng"]["torch"]})))
    assert said == f"{path}: damaged checkpoint: unexpected random state 'torch.2'"


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["model"]["head.bias"].add_(1e-3),
        lambda d: d["model"].update({"head.bias2": d["model"].pop("head.bias")}),
        lambda d: d.update(meta=d["meta"].replace('"step": 3', '"step": 2')),
        lambda d: d["optimizer"]["state"][0]["exp_avg"].mul_(2),
        lambda d: d["optimizer"]["param_groups"][0].update(lr=0.5),
        lambda d: d["hidden"][1].add_(1.0),
        lambda d: d.update(hidden=d["hidden"][:1]),
        lambda d: d["rng"]["torch"].__setitem__(0, (int(d["rng"]["torch"][0]) + 1) % 256),
        lambda d: d["model"].update({"head.bias": d["model"]["head.bias"].double()}),
    ],
    ids=[
        "a weight",
        "a weight's name",
        "the metadata",
        "a moment",
        "a setting",
        "the carried state",
        "a part of the state",
        "the random state",
        "a dtype",
    ],
)
def test_any_change_to_any_part_is_caught_by_the_checksum(good, tmp_path, change):
    """A file changed after it was written (a flipped bit, an edit that does not recompute the
    SHA-256) is refused before anything else looks at it."""
    data = torch.load(good, map_location="cpu", weights_only=True)
    change(data)
    path = tmp_path / "changed.pt"
    torch.save(data, path)
    assert message(path) == f"{path}: damaged charrnn checkpoint (its contents do not match their checksum)"


def test_a_save_that_fails_says_so_and_keeps_the_previous_file(good, tmp_path, monkeypatch):
    import errno

    ckpt = checkpoint.load(good)
    path = tmp_path / "run" / "last.pt"
    checkpoint.save(ckpt, path)
    before = path.read_bytes()
    for code, said in (
        (errno.EACCES, f"{path}: could not write checkpoint (Permission denied)"),
        (errno.ENOSPC, f"disk full while writing {path} (No space left on device)"),
    ):

        def failing(obj, fh, code=code):
            fh.write(b"partial")
            raise OSError(code, __import__("os").strerror(code))

        monkeypatch.setattr(torch, "save", failing)
        with pytest.raises(CharRNNError) as info:
            checkpoint.save(ckpt, path)
        assert str(info.value) == said + ". The previous last.pt is untouched"
        assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
        with pytest.raises(CharRNNError) as info:
            checkpoint.save(ckpt, tmp_path / "run" / "best.pt")  # no previous one
        assert str(info.value) == said.replace("last.pt", "best.pt")
    blocked = tmp_path / "file"
    blocked.write_text("x")
    monkeypatch.undo()
    with pytest.raises(CharRNNError) as info:
        checkpoint.save(ckpt, blocked / "last.pt")
    assert str(info.value) == f"{blocked / 'last.pt'}: could not write checkpoint ({blocked} is a file, not a folder)"


def test_the_temporaries_a_killed_save_leaves_are_removed_and_nothing_else(good, tmp_path):
    import tempfile

    folder = tmp_path / "run"
    folder.mkdir()
    stale = []
    for name in ("last.pt", "best.pt"):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)  # as files.atomic_write names them
        __import__("os").close(fd)
        stale.append(tmp)
    kept = ["last.pt", "notes.tmp", ".hidden.tmp", ".last.pt.x", "metrics.jsonl"]
    for name in kept:
        (folder / name).write_text("x")
    checkpoint.remove_stale_temporaries(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(kept)
