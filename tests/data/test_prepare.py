"""Preparing a corpus in chunks: the same ids as decoding it whole, a cache that is reused and
redone when it should be, corpora of several files, the smallest dtype, and memory that does not
grow with the corpus."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, invoke, words_text

from charrnn.data.corpus import CHUNK_BYTES
from charrnn.data.decoding import decode
from charrnn.data.prepare import prepare_corpus
from charrnn.data.vocab import Vocab
from charrnn.errors import CharRNNError

AWKWARD = (
    "\ufeff"  # a byte-order mark, dropped
    + "héllo wörld\r\nnaïve café\r\n"  # two-byte characters and Windows line endings
    + "世界 😀🎉 e\u0301\rold mac\r"  # three- and four-byte characters, a combining mark, bare CRs
    + "\r\n\r\r\n" * 3  # CR and CRLF mixed
    + words_text(300)
    + " 👩\u200d👩\u200d👧 end\r\n"
)


def in_memory(data: bytes, **options):
    text = decode(data, "x", **options)
    vocab = Vocab.from_text(text)
    return vocab, vocab.encode(text)


def set_mtime(path, seconds_ago: float) -> None:
    """Pretend the file was last written a while ago (a freshly written file is re-checked)."""
    t = time.time_ns() - int(seconds_ago * 1e9)
    os.utime(path, ns=(t, t))


@pytest.mark.parametrize("keep_newlines", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_chunked_prepare_gives_the_ids_of_a_whole_decode(tmp_path, chunk_bytes, keep_newlines):
    data = AWKWARD.encode("utf-8")
    path = tmp_path / "awkward.txt"
    path.write_bytes(data)
    vocab, ids = in_memory(data, keep_newlines=keep_newlines)
    assert ("\r" in vocab.chars) == keep_newlines and "\ufeff" not in vocab.chars  # the text is awkward
    for cache_dir in (None, tmp_path / "cache"):
        corpus = prepare_corpus([path], keep_newlines=keep_newlines, cache_dir=cache_dir, chunk_bytes=chunk_bytes)
        assert corpus.vocab == vocab
        assert corpus.ids.dtype == ids.dtype
        np.testing.assert_array_equal(corpus.ids, ids)


def test_a_bad_byte_is_reported_at_its_offset_whatever_the_chunks(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes("ok é".encode() + b"\xff" + b" more" * 100)
    for chunk_bytes in (1, 3, 1 << 20):
        with pytest.raises(CharRNNError, match="byte offset 5 .byte 0xff"):
            prepare_corpus([path], chunk_bytes=chunk_bytes)


def test_a_utf16_file_is_named_whatever_the_chunks(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_bytes(words_text(2000).encode("utf-16-le"))
    for chunk_bytes in (1, 3, 1 << 20):
        with pytest.raises(
            CharRNNError,
            match="looks like UTF-16-LE text .NUL bytes where UTF-16-LE puts them., "
            "not utf-8; pass --encoding utf-16-le",
        ):
            prepare_corpus([path], chunk_bytes=chunk_bytes)


def test_the_cache_is_reused_and_redone_when_the_corpus_changes(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(words_text(5000, seed=1), encoding="utf-8")
    set_mtime(path, 60)
    cache = tmp_path / "cache"
    first = prepare_corpus([path], cache_dir=cache)
    ids_file = Path(first.info["entry"])
    written = ids_file.stat()
    assert not first.info["cached"]

    phases = []
    again = prepare_corpus([path], cache_dir=cache, progress=lambda phase, done, total: phases.append(phase))
    assert again.info["cached"] and phases == []  # nothing read
    assert (ids_file.stat().st_ino, ids_file.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    np.testing.assert_array_equal(again.ids, first.ids)

    set_mtime(path, 30)  # touched, not changed: read again to be sure, but the ids are kept
    touched = prepare_corpus([path], cache_dir=cache)
    assert touched.info["counted_s"] is not None and touched.info["encoded_s"] is None
    assert ids_file.stat().st_ino == written.st_ino and touched.digest == first.digest

    text = words_text(5000, seed=2)  # the same size, other content, another mtime
    assert len(text.encode()) == path.stat().st_size
    path.write_text(text, encoding="utf-8")
    set_mtime(path, 20)
    changed = prepare_corpus([path], cache_dir=cache)
    assert not changed.info["cached"] and changed.info["encoded_s"] is not None
    assert changed.digest != first.digest
    _, expected = in_memory(text.encode())
    np.testing.assert_array_equal(changed.ids, expected)

    other = prepare_corpus([path], cache_dir=cache, keep_newlines=True)  # other read options: another entry
    assert not other.info["cached"] and other.info["entry"] != changed.info["entry"]


def rewrite_keeping_size_and_mtime(path, text: str) -> None:
    """An edit in place that restores the mtime (as `touch -r` does): only the ctime moves."""
    stat = path.stat()
    time.sleep(0.01)  # past the ctime's tick, on file systems with coarse timestamps
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_ino == stat.st_ino


def test_an_edit_that_keeps_size_and_mtime_is_read_again(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("abcd" * 1000, encoding="utf-8")
    set_mtime(path, 60)
    cache = tmp_path / "cache"
    assert prepare_corpus([path], cache_dir=cache).vocab.decode(range(4)) == "abcd"
    rewrite_keeping_size_and_mtime(path, "dcbe" * 1000)
    again = prepare_corpus([path], cache_dir=cache)
    assert not again.info["cached"] and again.vocab.decode(again.ids[:8]) == "dcbedcbe"


def test_a_change_the_file_system_cannot_show_is_caught_when_the_ids_are_made_again(tmp_path, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("abcd" * 1000, encoding="utf-8")
    set_mtime(path, 60)
    cache = tmp_path / "cache"
    first = prepare_corpus([path], cache_dir=cache)
    for name in (
        "ids.npy",
        "vocab.json",
    ):  # the ids are gone (never made, as for another vocabulary), the recorded pass 1 is not
        (Path(first.info["entry"]).parent / name).unlink()
    rewrite_keeping_size_and_mtime(path, "dcba" * 1000)
    with monkeypatch.context() as m:
        m.setattr("charrnn.data.prepare._trusted", lambda source, stats: True)  # as if its ctime had not moved either
        with pytest.raises(CharRNNError, match="changed while it was being prepared"):
            prepare_corpus([path], cache_dir=cache)
    again = prepare_corpus([path], cache_dir=cache)  # read afresh
    assert again.vocab.decode(again.ids[:8]) == "dcbadcba"


def prepared_entry(tmp_path, text: str = "the cat sat on the mat\n" * 200) -> tuple[Path, Path, np.ndarray]:
    """A corpus prepared in a cache: its path, its cache entry and its right ids."""
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    set_mtime(path, 60)
    corpus = prepare_corpus([path], cache_dir=tmp_path / "cache")
    return path, Path(corpus.info["entry"]).parent, np.array(corpus.ids)


def reprepare(path, cache) -> tuple[object, list[str]]:
    warned = []
    corpus = prepare_corpus([path], cache_dir=cache, warn=warned.append)
    return corpus, warned


def edit_json(path: Path, change, checksum: bool = False) -> None:
    """Change a cache record's JSON; with `checksum`, as a careful forger would (its checksum made to match)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    if checksum:
        data.pop("sha256", None)
        data["sha256"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    path.write_text(json.dumps(data), encoding="utf-8")


def flip_id(entry: Path, at: int, new_id: int) -> None:
    ids = np.load(entry / "ids.npy", mmap_mode="r+")
    ids[at] = new_id
    ids.flush()


def forge_ids_hash(entry: Path) -> None:
    ids = np.load(entry / "ids.npy")
    edit_json(
        entry / "vocab.json", lambda d: d.update(ids_sha256=hashlib.sha256(ids.tobytes()).hexdigest()), checksum=True
    )


TAMPERING = {
    "ids-changed-in-range": (lambda e: flip_id(e, 3, 0), "ids.npy: its ids are not those that were written"),
    "ids-out-of-range": (lambda e: flip_id(e, 3, 200), "ids.npy: its ids are not those that were written"),
    "ids-out-of-range-hash-forged": (
        lambda e: (flip_id(e, 3, 200), forge_ids_hash(e)),
        "ids.npy: holds id 200, outside the vocabulary",
    ),
    "ids-truncated": (lambda e: os.truncate(e / "ids.npy", 200), "ids.npy: cannot be read"),
    "ids-deleted": (lambda e: (e / "ids.npy").unlink(), "ids.npy: is missing"),
    "ids-of-another-dtype": (
        lambda e: np.save(e / "ids.npy", np.load(e / "ids.npy").astype(np.uint16)),
        "ids.npy: holds",
    ),
    "ids-not-npy": (lambda e: (e / "ids.npy").write_bytes(b"PK\x03\x04 not an array"), "ids.npy: cannot be read"),
    "vocab-chars-edited": (
        lambda e: edit_json(e / "vocab.json", lambda d: d.update(chars=d["chars"].replace("a", "q"))),
        "vocab.json: is not what was written",
    ),
    "vocab-chars-a-list": (
        lambda e: edit_json(e / "vocab.json", lambda d: d.update(chars=list(d["chars"])), checksum=True),
        "vocab.json: does not have the fields",
    ),
    "vocab-chars-repeated": (
        lambda e: edit_json(e / "vocab.json", lambda d: d.update(chars="aab"), checksum=True),
        "vocab.json: vocabulary characters must be distinct",
    ),
    "vocab-field-missing": (
        lambda e: edit_json(e / "vocab.json", lambda d: d.pop("content"), checksum=True),
        "vocab.json: does not have the fields",
    ),
    "vocab-length-forged": (
        lambda e: edit_json(e / "vocab.json", lambda d: d.update(n_chars=5), checksum=True),
        "vocab.json: disagrees with source.json",
    ),
    "vocab-not-json": (lambda e: (e / "vocab.json").write_text("{chars"), "vocab.json: cannot be read"),
    "vocab-a-list": (lambda e: (e / "vocab.json").write_text("[]"), "vocab.json: is not what was written"),
    "source-chars-edited": (
        lambda e: edit_json(e / "source.json", lambda d: d.update(chars=d["chars"].replace("a", "q"))),
        "source.json: is not what was written",
    ),
    "source-chars-forged": (
        lambda e: edit_json(e / "source.json", lambda d: d.update(chars=d["chars"][:-1] + "z"), checksum=True),
        "vocab.json: disagrees with source.json",
    ),
    "source-counts-forged": (
        lambda e: edit_json(e / "source.json", lambda d: d.update(counts=d["counts"][1:]), checksum=True),
        "source.json: its character counts",
    ),
    "source-surrogate-forged": (
        lambda e: edit_json(e / "source.json", lambda d: d.update(chars="\ud800" * len(d["chars"])), checksum=True),
        "source.json: vocabulary characters",
    ),
    "source-wrong-types": (
        lambda e: edit_json(e / "source.json", lambda d: d.update(n_chars="4600", read_at_ns=None), checksum=True),
        "source.json: does not have the fields",
    ),
    "source-not-utf8": (lambda e: (e / "source.json").write_bytes(b"\xff\xfe{}"), "source.json: cannot be read"),
}


@pytest.mark.parametrize("case", TAMPERING, ids=list(TAMPERING))
def test_a_damaged_cache_entry_is_made_again_with_one_warning(tmp_path, case):
    tamper, warning = TAMPERING[case]
    path, entry, right = prepared_entry(tmp_path)
    tamper(entry)
    again, warned = reprepare(path, tmp_path / "cache")
    assert len(warned) == 1 and warning in warned[0] and str(entry) in warned[0] and "\n" not in warned[0], warned
    assert again.vocab.chars == tuple(sorted(set(path.read_text()))) and not again.info["cached"]
    np.testing.assert_array_equal(again.ids, right)
    healed, warned = reprepare(path, tmp_path / "cache")  # made again: trusted again, in silence
    assert healed.info["cached"] and warned == []
    np.testing.assert_array_equal(healed.ids, right)


def test_a_damaged_cache_entry_is_one_warning_line_from_the_command_line(tmp_path):
    path, entry, _ = prepared_entry(tmp_path)
    flip_id(entry, 3, 200)  # an IndexError traceback in training before
    result = invoke(
        "train",
        str(path),
        *TINY,
        "--max-steps",
        "2",
        "--out",
        str(tmp_path / "ck"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    err = result.stderr.decode()
    assert result.returncode == 0 and "Traceback" not in err, err
    warnings = [
        line for line in err.splitlines() if line.startswith("warning:") and "did not learn" not in line
    ]  # (2 steps: it did not)
    assert len(warnings) == 1 and f"{entry / 'ids.npy'}: its ids are not those that were written" in warnings[0], err


def test_a_stale_record_is_no_damage(tmp_path):
    """The corpus changed since it was prepared: made again, without a warning."""
    path, entry, _ = prepared_entry(tmp_path)
    path.write_text("another text\n" * 300, encoding="utf-8")
    again, warned = reprepare(path, tmp_path / "cache")
    assert warned == [] and again.vocab.decode(again.ids[:8]) == "another "


def test_a_file_written_just_before_it_was_read_is_checked_again(tmp_path, monkeypatch):
    """A file modified less than RACY_NS before it was read could be rewritten, same size, in
    the same tick of its mtime: the next run hashes the content again. (The window is widened to
    an hour here, so that the first read falls in it however long the machine takes to get there;
    a file an hour old is trusted: test_prepare_command_reports_on_stderr_and_json_on_stdout.)"""
    import charrnn.data.prepare

    monkeypatch.setattr(charrnn.data.prepare, "RACY_NS", 3600 * 10**9)
    path = tmp_path / "fresh.txt"
    path.write_text("abcabc" * 100, encoding="utf-8")
    cache = tmp_path / "cache"
    prepare_corpus([path], cache_dir=cache)
    again = prepare_corpus([path], cache_dir=cache)
    assert again.info["counted_s"] is not None and again.info["encoded_s"] is None
    set_mtime(path, 2 * 3600)  # (a change of the file's stat: pass 1 again, then trusted)
    prepare_corpus([path], cache_dir=cache)
    trusted = prepare_corpus([path], cache_dir=cache)
    assert trusted.info["cached"] and trusted.info["counted_s"] is None


def test_directories_and_several_files_are_joined_with_the_separator_in_a_stable_order(tmp_path):
    folder = tmp_path / "poems"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bravo", encoding="utf-8")
    (folder / "a.txt").write_text("alpha\r\n", encoding="utf-8")
    (folder / "sub" / "c.txt").write_text("charlie", encoding="utf-8")
    (folder / "empty.txt").write_text("", encoding="utf-8")  # no separator for it
    (folder / ".hidden").write_text("secret", encoding="utf-8")  # skipped, like .git/
    corpus = prepare_corpus([folder], separator="|", cache_dir=tmp_path / "cache")
    assert corpus.vocab.decode(corpus.ids) == "alpha\n|bravo|charlie"
    assert corpus.info["files"] == 4

    given = prepare_corpus([folder / "b.txt", folder / "a.txt"], cache_dir=tmp_path / "cache")  # as given
    assert given.vocab.decode(given.ids) == "bravo\n\nalpha\n"
    with pytest.raises(CharRNNError, match="no files in it"):
        (tmp_path / "void").mkdir()
        prepare_corpus([tmp_path / "void"])


def test_ids_use_the_smallest_dtype(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("".join(chr(0x100 + i) for i in range(256)) * 2, encoding="utf-8")  # 256 distinct
    large = tmp_path / "large.txt"
    large.write_text("".join(chr(0x4E00 + i) for i in range(257)) * 2, encoding="utf-8")  # 257 distinct
    assert prepare_corpus([small], cache_dir=tmp_path / "cache").ids.dtype == np.uint8
    assert prepare_corpus([large], cache_dir=tmp_path / "cache").ids.dtype == np.uint16


def test_prepare_command_reports_on_stderr_and_json_on_stdout(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(words_text(4000) + "é", encoding="utf-8")
    set_mtime(path, 60)
    cache = tmp_path / "cache"
    first = invoke("prepare", str(path), "--cache-dir", str(cache), "--json")
    assert first.returncode == 0, first.stderr.decode()
    result = json.loads(first.stdout)
    expected_vocab, _ = in_memory(path.read_bytes())
    assert (result["chars"], result["distinct"], result["dtype"], result["cached"]) == (
        4001,
        len(expected_vocab),
        "uint8",
        False,
    )
    assert result["entry"].startswith(str(cache))
    err = first.stderr.decode()
    assert "4,001 characters" in err and "uint8" in err and "MB/s" in err and result["entry"] in err
    second = invoke("prepare", str(path), "--cache-dir", str(cache))
    assert second.stdout == b"" and "already prepared" in second.stderr.decode()

    missing = invoke("prepare", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "no such file" in missing.stderr.decode()
    assert missing.stderr.decode().strip().count("\n") == 0
    bad = invoke("prepare", str(path), "--errors", "sloppy")
    assert bad.returncode == 2 and "--errors 'sloppy'" in bad.stderr.decode()
    (tmp_path / "a-file").write_text("x")
    unwritable = invoke("prepare", str(path), "--cache-dir", str(tmp_path / "a-file" / "cache"))
    err = unwritable.stderr.decode()
    assert unwritable.returncode == 1 and "Not a directory" in err and "--cache-dir" in err
    assert "disk full" not in err and err.strip().count("\n") == 0  # only said when space may be the cause


MEASURE = """
import json, resource, sys
from pathlib import Path
from charrnn.data.prepare import prepare_corpus

def peak_kb():
    # VmHWM: this process' own peak RSS. (ru_maxrss would start at the RSS of the parent that
    # forked it, pytest with torch loaded, which hides any growth below that.)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

small, big, cache, chunk = *map(Path, sys.argv[1:4]), int(sys.argv[4])
prepare_corpus([small], cache_dir=cache, chunk_bytes=chunk)  # every code path and buffer once
before = peak_kb()
corpus = prepare_corpus([big], cache_dir=cache, chunk_bytes=chunk)
after = peak_kb()
print(json.dumps({"before_kb": before, "after_kb": after, "chars": len(corpus.ids), "cached": corpus.info["cached"]}))
"""


def measure_prepare(tmp_path, big, chunk_bytes):
    small = tmp_path / "small.txt"  # a few chunks: the baseline holds the working set of one
    with open(big, "rb") as fh:
        small.write_bytes(fh.read(4 << 20))
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(small), str(big), str(tmp_path / "cache"), str(chunk_bytes)],
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_preparing_does_not_hold_the_corpus_in_memory(tmp_path):
    block = (words_text(1 << 20, seed=3)[: (1 << 20) - 40] + " café 世界 😀\n").encode("utf-8")
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        for _ in range(48):
            fh.write(block)
    size = big.stat().st_size
    set_mtime(big, 60)  # (not just written: the second run trusts it)
    measured = measure_prepare(tmp_path, big, CHUNK_BYTES)
    assert not measured["cached"] and measured["chars"] > size * 0.99
    grown = (measured["after_kb"] - measured["before_kb"]) * 1024
    # Memory holds a chunk at a time, whatever the corpus' size; decoding it whole would take
    # several times its size (bytes, str, UTF-32 code points).
    assert grown < size / 4, f"peak RSS grew by {grown / 1e6:.1f} MB preparing {size / 1e6:.1f} MB"
    cached = measure_prepare(tmp_path, big, CHUNK_BYTES)  # the ids are checked (SHA-256, range), a buffer at a time
    assert cached["cached"] and cached["chars"] == measured["chars"]
    grown = (cached["after_kb"] - cached["before_kb"]) * 1024
    assert grown < size / 4, f"peak RSS grew by {grown / 1e6:.1f} MB checking the ids of {size / 1e6:.1f} MB"
    big.unlink()
