"""Preparing a corpus: text of any size -> ids in an .npy on disk, cached, memory-mapped.

Two passes over the text, each in chunks, so memory does not grow with the corpus:

1. count the characters (and hash the raw bytes): the vocabulary, the length, the content hash;
2. encode chunk by chunk, appending to an .npy of the smallest unsigned dtype that holds the
   vocabulary (written to a temporary name, fsynced, renamed: never a torn file).

The result lives in a cache folder (`.charrnn-cache/` by default, `--cache-dir` or
$CHARRNN_CACHE elsewhere), one entry per corpus and read options:

    .charrnn-cache/<name>-<key>/
        source.json       files (path, size, mtime, ctime, inode), options, content hash, length, vocabulary
        ids.npy, vocab.json          the corpus encoded with its own vocabulary (and the ids' SHA-256)
        ids.<v>.npy, vocab.<v>.json  ... with another vocabulary (--init-from a checkpoint)

(their records: `charrnn.data.cache_entry`; the two passes: `charrnn.data.two_passes`). A file
whose size, mtime, ctime and inode are as recorded is trusted (unless it was modified within a
moment of being read, when a same-size rewrite could keep its mtime); otherwise pass 1 runs again,
and if the content hash is unchanged the ids are reused. An ids file counts only if its vocab JSON
names the current content hash, so a crash at any point leaves nothing that is taken as valid; and
only once its SHA-256 and the range of its ids are checked, so a damaged or edited entry is made
again (with a warning), never trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from charrnn.data.cache_entry import (
    CACHE_FORMAT,
    Damaged,
    IdsRecord,
    SourceRecord,
    read_record,
    verified_ids,
    write_record,
)
from charrnn.data.corpus import CHUNK_BYTES, DEFAULT_SEPARATOR, Corpus, corpus_files
from charrnn.data.decoding import check_encoding, check_errors
from charrnn.data.two_passes import CorpusChanged, Progress, TwoPasses
from charrnn.data.vocab import Vocab, codepoints, describe_chars, surrogates
from charrnn.errors import CharRNNError, plural, write_error
from charrnn.signals import removed_if_interrupted

DEFAULT_CACHE = ".charrnn-cache"
RACY_NS = 2_000_000_000  # a file modified this close before it was read is re-checked next time


def default_cache_dir() -> Path:
    return Path(os.environ.get("CHARRNN_CACHE") or DEFAULT_CACHE)


def _python_warning(message: str) -> None:
    warnings.warn(message, stacklevel=3)  # (at the caller of prepare_corpus)


def prepare_corpus(
    paths: list[str | Path],
    vocab: Vocab | None = None,
    encoding: str = "utf-8",
    errors: str = "strict",
    keep_newlines: bool = False,
    separator: str = DEFAULT_SEPARATOR,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    warn: Callable[[str], None] = _python_warning,
) -> Corpus:
    """Encode the corpus at `paths` (files and directories) to memory-mapped ids.

    With `vocab`, the ids are those of that vocabulary, and characters outside it are an error
    naming them. Without `cache_dir` nothing is kept: the ids go to a temporary file that is
    deleted as soon as it is mapped. `warn` is told, in one line, of a damaged cache file: the
    entry is then made again.
    """
    files = corpus_files(paths)
    check_encoding(encoding)
    check_errors(errors)
    options = {"encoding": encoding, "errors": errors, "keep_newlines": keep_newlines, "separator": separator}
    reader = TwoPasses(files, options, chunk_bytes, progress)
    display_name = " ".join(str(p) for p in paths)
    info = {"files": len(files), "bytes": reader.total_bytes, "counted_s": None, "encoded_s": None}

    if cache_dir is None:
        return _prepare_uncached(reader, vocab, display_name, options, info)
    entry = Path(cache_dir) / _entry_name(files, options)
    try:
        found = _look_up(entry, reader, vocab, display_name, trust=True)
    except Damaged as exc:  # something in the entry is not what was written: nothing of it is believed
        warn(f"{exc}; preparing the corpus again")
        found = _look_up(entry, reader, vocab, display_name, trust=False)
    ids = _complete_entry(entry, reader, found, info)
    cached = info["counted_s"] is None and info["encoded_s"] is None
    return Corpus(
        display_name,
        found.target,
        ids,
        _digest(found.source, options, found.target),
        {**info, "cached": cached, "entry": str(found.ids_path)},
    )


def _prepare_uncached(reader: TwoPasses, vocab: Vocab | None, display_name: str, options: dict, info: dict) -> Corpus:
    """Both passes into a temporary folder, deleted as soon as the ids are mapped."""
    source, info["counted_s"] = reader.count()
    target = _target_vocab(source, vocab, display_name)
    with tempfile.TemporaryDirectory(prefix="charrnn-") as tmp, removed_if_interrupted(tmp):
        path = Path(tmp) / "ids.npy"
        info["encoded_s"], _ = reader.encode(target, source, path)
        ids = np.load(path, mmap_mode="r")  # stays valid after the file is deleted
    return Corpus(display_name, target, ids, _digest(source, options, target), {**info, "cached": False})


def _complete_entry(entry: Path, reader: TwoPasses, found: _Found, info: dict) -> np.ndarray:
    """Write what the cache entry lacks (the ids, a new count) and return the ids, mapped."""
    source, target, ids = found.source, found.target, found.ids
    info["counted_s"] = found.counted_s
    try:
        entry.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(entry)
        if ids is None:
            try:
                info["encoded_s"], ids_sha256 = reader.encode(target, source, found.ids_path)
            except CorpusChanged:
                (entry / "source.json").unlink(missing_ok=True)  # the next run reads it afresh
                raise
            write_record(found.vocab_path, IdsRecord("".join(target.chars), source.content, source.n_chars, ids_sha256))
            ids = np.load(found.ids_path, mmap_mode="r")
        if info["counted_s"] is not None:
            write_record(entry / "source.json", source)
    except OSError as exc:
        raise CharRNNError(
            f"{entry}: cannot write the prepared corpus ({write_error(exc)}); --cache-dir can put it elsewhere",
            exit_code=1,
        ) from None
    return ids


class _Found(NamedTuple):
    """What a cache entry holds for a corpus, once checked."""

    source: SourceRecord
    counted_s: float | None  # None: the recorded count was trusted
    target: Vocab  # the vocabulary of the ids
    ids_path: Path
    vocab_path: Path
    ids: np.ndarray | None  # None: to be made


def _look_up(entry: Path, reader: TwoPasses, vocab: Vocab | None, name: str, trust: bool) -> _Found:
    """The cached count and ids of the corpus; Damaged if a file of the entry is not what was
    written. With `trust` False, the corpus is counted afresh and only ids that this count
    proves (their record names its content and characters, their SHA-256 is right) are kept."""
    source = read_record(entry / "source.json", SourceRecord) if trust else None
    counted_s = None
    if not _trusted(source, reader.stats):
        source, counted_s = reader.count()
    target = _target_vocab(source, vocab, name)
    key = "" if target.chars == tuple(source.chars) else f".{_vocab_key(target)}"
    ids_path, vocab_path = entry / f"ids{key}.npy", entry / f"vocab{key}.json"
    try:
        ids = _cached_ids(ids_path, vocab_path, target, source)
    except Damaged:
        if trust:
            raise
        ids = None
    return _Found(source, counted_s, target, ids_path, vocab_path, ids)


def _target_vocab(source: SourceRecord, vocab: Vocab | None, name: str) -> Vocab:
    odd = surrogates(codepoints(source.chars))
    if len(odd):  # only a codec can make them here (check_errors refuses the handlers that do)
        raise CharRNNError(
            f"{name}: --encoding {source.options['encoding']} reads lone surrogates, which are not characters "
            f"({describe_chars([chr(p) for p in odd])}): pass another --encoding"
        )
    own = Vocab(tuple(source.chars))
    if vocab is None:
        return own
    missing = [c for c in own.chars if c not in vocab]
    if missing:
        raise CharRNNError(
            f"{name}: {plural(len(missing), 'character')} not in the checkpoint's vocabulary: {describe_chars(missing)}"
        )
    return vocab


def _trusted(source: SourceRecord | None, stats: list[dict]) -> bool:
    """Whether a recorded pass 1 still describes the files, by their size, mtime, ctime and inode."""
    if source is None or source.format != CACHE_FORMAT or source.files != stats:
        return False
    return all(s["mtime_ns"] < source.read_at_ns - RACY_NS for s in stats)


def _cached_ids(ids_path: Path, vocab_path: Path, vocab: Vocab, source: SourceRecord) -> np.ndarray | None:
    """The cached ids of this content in this vocabulary, checked; None if there are none yet."""
    record = read_record(vocab_path, IdsRecord)
    if record is None or record.content != source.content:
        return None  # not made yet, or made from other text (the corpus changed): made now
    if (record.chars, record.n_chars) != ("".join(vocab.chars), source.n_chars):
        raise Damaged(vocab_path, "disagrees with source.json on the characters of the same text")
    return verified_ids(ids_path, record)


def forget(corpus: Corpus) -> None:
    """Remove the cache entry of a corpus that training refused (too short for one chunk): a
    refused corpus leaves nothing behind. (Always safe: an entry is only ever a cache.)"""
    entry = (corpus.info or {}).get("entry")
    if entry:
        shutil.rmtree(Path(entry).parent, ignore_errors=True)


def _entry_name(files: list[Path], options: dict) -> str:
    key = json.dumps(
        {"format": CACHE_FORMAT, "files": [str(f.resolve()) for f in files], "options": options}, sort_keys=True
    )
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in files[0].stem)[:40] or "corpus"
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def _vocab_key(vocab: Vocab) -> str:
    return hashlib.sha1("".join(vocab.chars).encode("utf-32-le", "surrogatepass")).hexdigest()[:12]


def _digest(source: dict, options: dict, vocab: Vocab) -> str:
    """What a checkpoint records of its corpus: the text (by content hash), options and vocabulary."""
    key = json.dumps([source.content, options, _vocab_key(vocab)], sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()


def _remove_dead_temporaries(entry: Path) -> None:
    """Delete temporaries left by a preparation of this machine that was killed."""
    host = socket.gethostname()
    for tmp in entry.glob(f".*.{host}.*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            continue


def load_corpus(path, vocab: Vocab | None = None, **options) -> Corpus:
    """Read and encode a corpus (a file, a directory, or a list of them) into a memory-mapped id
    array; with `vocab`, characters outside it are an error naming them. Options: those of
    `prepare_corpus` (read options, separator, cache_dir, progress)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return prepare_corpus(paths, vocab=vocab, **options)
