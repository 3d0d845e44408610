"""A checkpoint may cost no more memory or time than its size: crafted `.pt` files that would
unpack gigabytes, or build a huge or endless tree from a small pickle, are refused first.

`checkpoint.load` checks the zip archive's directory before torch unpacks a byte of it
(`check_archive`), then what torch built before anything walks it (`check_contents`). Each case
below says what the loader did before these checks.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import zipfile

import pytest
import torch
from conftest import invoke
from tiny_run import structured_text, train_tiny_run

from charrnn.errors import CharRNNError
from charrnn.store import checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real last.pt of a tiny LSTM run: weights, AdamW's state, random and hidden states."""
    folder = tmp_path_factory.mktemp("bombs") / "run"
    train_tiny_run(folder, structured_text(3000), max_steps=3, eval_every=3, save_every=3)
    return folder / "last.pt"


def message(path) -> str:
    with pytest.raises(CharRNNError) as info:
        checkpoint.load(path)
    return str(info.value)


def largest_storage(path) -> str:
    with zipfile.ZipFile(path) as zf:
        return max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size).filename


def rezipped(good, dest, name, padding: int = 0, compress: bool = True, rename: str | None = None):
    """A copy of `good` with its member `name` rewritten: DEFLATE-compressed and followed by
    `padding` zero bytes (a zip bomb: zeros deflate about 1000 to 1), or renamed."""
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename != name:
                zout.writestr(info, data, compress_type=zipfile.ZIP_STORED)
                continue
            member = zipfile.ZipInfo(rename or name, info.date_time)
            member.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
            with zout.open(member, "w") as fh:
                fh.write(data)
                zeros = bytes(1 << 20)
                for _ in range(padding // len(zeros)):
                    fh.write(zeros)
    return dest


PEAK = """
import resource, sys
from charrnn.errors import CharRNNError
from charrnn.store import checkpoint

try:
    checkpoint.load(sys.argv[1])
    print("loaded")
except CharRNNError as exc:
    print(exc)
# ru_maxrss: the process's peak resident memory (KiB on Linux, bytes on macOS)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024))
"""


def load_in_child(path) -> tuple[str, int]:
    """What loading `path` says, and the peak memory (bytes) of a fresh process that did it."""
    done = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    said, peak = done.stdout.strip().splitlines()
    return said, int(peak)


def test_a_zip_bomb_is_refused_before_it_is_unpacked_in_bounded_memory(good, tmp_path):
    # Before: torch.load inflated the member whole (a 4.4 MB file took 4.4 GB), then refused it.
    name = largest_storage(good)
    bomb = rezipped(good, tmp_path / "bomb.pt", name, padding=384 << 20)
    assert bomb.stat().st_size < 2 << 20  # under 2 MB on disk for 384 MB unpacked
    said, peak = load_in_child(bomb)
    assert said == (
        f"{bomb}: not a readable charrnn checkpoint: its member {name.partition('/')[2]!r} is compressed or "
        "encrypted, which torch.save never does (refused before reading it)"
    )
    # The interpreter's base (torch imported, an honest load done), measured here, not assumed.
    honest, base = load_in_child(good)
    assert honest == "loaded"
    allowed = base + 10 * good.stat().st_size + (16 << 20)  # (16 MB: what two processes differ by)
    assert peak < allowed, f"peak {peak >> 20} MB, the honest load's {base >> 20} MB"


def test_the_command_line_says_it_in_one_line(good, tmp_path):
    bomb = rezipped(good, tmp_path / "bomb.pt", largest_storage(good), padding=8 << 20)
    result = invoke("info", str(bomb))
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "is compressed or encrypted, which torch.save never does" in lines[0], lines


def test_a_compressed_member_without_padding_is_refused_too(good, tmp_path):
    # Torch reads it happily; it is refused because no torch.save writes one.
    path = rezipped(good, tmp_path / "deflated.pt", largest_storage(good))
    assert "is compressed or encrypted" in message(path)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_members_torch_never_writes_are_refused(good, tmp_path):
    name = largest_storage(good)
    top = name.partition("/")[0]
    path = rezipped(good, tmp_path / "extra.pt", name, compress=False, rename=f"{top}/payload.bin")
    assert message(path) == (
        f"{path}: not a readable charrnn checkpoint: an unexpected member 'payload.bin' (refused before reading it)"
    )
    path = rezipped(good, tmp_path / "twice.pt", name, compress=False, rename=f"{top}/data.pkl")
    assert message(path).endswith("its zip archive is not one torch.save writes (refused before reading it)")
    path = rezipped(good, tmp_path / "tops.pt", name, compress=False, rename="elsewhere/data/0")
    assert message(path).endswith("its zip archive is not one torch.save writes (refused before reading it)")


def test_a_member_declaring_more_than_the_file_holds_is_refused(good, tmp_path):
    # The central directory's sizes of one stored member, raised past the file's end.
    raw = bytearray(good.read_bytes())
    name = largest_storage(good).encode()
    entry = raw.rfind(b"PK\x01\x02", 0, raw.rfind(name))
    big = len(raw) * 3
    struct.pack_into("<II", raw, entry + 20, big, big)  # compressed size, uncompressed size
    path = tmp_path / "overlong.pt"
    path.write_bytes(bytes(raw))
    assert re.fullmatch(
        rf"{re.escape(str(path))}: not a readable charrnn checkpoint: its members declare [\d,]+ bytes, "
        rf"more than the file's {len(raw):,} \(refused before reading it\)",
        message(path),
    )


def test_an_honest_checkpoint_passes_both_checks(good):
    checkpoint.check_archive(good)
    checkpoint.check_contents(torch.load(good, weights_only=True), good)


def test_tied_weights_one_tensor_under_two_names_load(tmp_path):
    """The embedding is also the read-out: one storage in the file, two tensors in the weights
    (with a model this size, counting the tensors against the file's size alone refused it)."""
    folder = tmp_path / "tied"
    train_tiny_run(
        folder,
        structured_text(3000),
        max_steps=2,
        eval_every=2,
        save_every=2,
        tie_weights=True,
        embed=256,
        hidden=256,
        layers=1,
    )
    ckpt = checkpoint.load(folder / "last.pt")
    assert ckpt.model["embed.weight"].data_ptr() == ckpt.model["head.weight"].data_ptr()


def saved(good, dest, edit):
    """`good` as torch built it, changed by `edit(data)` and saved again (its checksum now wrong:
    these are refused before the checksum is even computed)."""
    data = torch.load(good, map_location="cpu", weights_only=True)
    edit(data)
    torch.save(data, dest)
    return dest


def _cycle(data):
    loop = []
    loop.append(loop)
    data["hidden"] = loop


def _tree(data):
    node = [0]
    for _ in range(20):  # 20 levels of shared references: a million leaves in a few hundred bytes
        node = [node, node]
    data["hidden"] = node


CONTENTS = {
    # Before: the checksum copied the view whole (a 73 KB file took 2.3 GB for 2**28 elements).
    "stride-0 view": (
        lambda d: d["hidden"].__setitem__(0, torch.zeros(1).as_strided((2**24,), (0,))),
        "a tensor of 67,108,864 bytes views only 4",
    ),
    # Before: the checksum hashed every reference (a 1.2 MB file: 16 s; it grows with the square).
    "one tensor many times": (
        lambda d: d.__setitem__("hidden", [torch.zeros(2**16)] * 200),
        "its tensors hold more than twice the file's",
    ),
    # Before: RecursionError, a traceback.
    "a list holding itself": (_cycle, "more than 200,000 objects, or nested deeper than 32"),
    # Before: the checksum walked 2**20 leaves; at 40 levels, forever.
    "shared references": (_tree, "more than 200,000 objects, or nested deeper than 32"),
    # Before: "can't allocate memory" as a RuntimeError traceback (4 TiB; 8 GiB would be taken).
    "meta tensor": (
        lambda d: d["hidden"].__setitem__(0, torch.empty(2**40, device="meta")),
        "a torch.strided tensor on meta, not a plain one",
    ),
    # Before: RuntimeError traceback from the checksum.
    "sparse tensor": (
        lambda d: d["hidden"].__setitem__(
            0, torch.sparse_coo_tensor(torch.zeros(1, 1, dtype=torch.long), torch.ones(1), (2**40,))
        ),
        "a torch.sparse_coo tensor on cpu, not a plain one",
    ),
}


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("case", CONTENTS)
def test_contents_larger_than_the_file_are_refused_before_they_are_walked(good, tmp_path, case):
    edit, said = CONTENTS[case]
    path = saved(good, tmp_path / "crafted.pt", edit)
    assert message(path).startswith(f"{path}: damaged charrnn checkpoint ({said}")
