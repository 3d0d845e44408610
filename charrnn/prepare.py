"""Preparing a corpus: text of any size -> ids in an .npy on disk, cached, memory-mapped.

Two passes over the text, each in chunks, so memory does not grow with the corpus:

1. count the characters (and hash the raw bytes): the vocabulary, the length, the content hash;
2. encode chunk by chunk, appending to an .npy of the smallest unsigned dtype that holds the
   vocabulary (written to a temporary name, fsynced, renamed: never a torn file).

The result lives in a cache folder (`.charrnn-cache/` by default, `--cache-dir` or
$CHARRNN_CACHE elsewhere), one entry per corpus and read options:

    .charrnn-cache/<name>-<key>/
        source.json       files (path, size, mtime), options, content hash, length, vocabulary
        ids.npy, vocab.json          the corpus encoded with its own vocabulary
        ids.<v>.npy, vocab.<v>.json  ... with another vocabulary (--init-from a checkpoint)

A file whose size and mtime are as recorded is trusted (unless it was modified within a moment
of being read, when a same-size rewrite could keep its mtime); otherwise pass 1 runs again, and
if the content hash is unchanged the ids are reused. An ids file counts only if its vocab JSON
names the current content hash, so a crash at any point leaves nothing that is taken as valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from charrnn.corpus import CHUNK_BYTES, DEFAULT_SEPARATOR, Corpus, check_encoding, check_errors, corpus_files, iter_corpus_text
from charrnn.errors import CharRNNError, plural
from charrnn.files import write_error
from charrnn.vocab import Vocab, codepoints, describe_chars, id_dtype

CACHE_FORMAT = 1
DEFAULT_CACHE = ".charrnn-cache"
RACY_NS = 2_000_000_000  # a file modified this close before it was read is re-checked next time

class CorpusChanged(CharRNNError):
    """The text read by the encoding pass is not the text the counting pass saw."""


Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes total)


def default_cache_dir() -> Path:
    return Path(os.environ.get("CHARRNN_CACHE") or DEFAULT_CACHE)


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
) -> Corpus:
    """Encode the corpus at `paths` (files and directories) to memory-mapped ids.

    With `vocab`, the ids are those of that vocabulary, and characters outside it are an error
    naming them. Without `cache_dir` nothing is kept: the ids go to a temporary file that is
    deleted as soon as it is mapped.
    """
    files = corpus_files(paths)
    check_encoding(encoding)
    check_errors(errors)
    options = {"encoding": encoding, "errors": errors, "keep_newlines": keep_newlines, "separator": separator}
    reader = _Reader(files, options, chunk_bytes, progress)
    display_name = " ".join(str(p) for p in paths)
    info = {"files": len(files), "bytes": reader.total_bytes, "counted_s": None, "encoded_s": None}

    if cache_dir is None:
        source = reader.count()
        info["counted_s"] = source["seconds"]
        target = _target_vocab(source, vocab, display_name)
        with tempfile.TemporaryDirectory(prefix="charrnn-") as tmp:
            path = Path(tmp) / "ids.npy"
            info["encoded_s"] = reader.encode(target, source, path)
            ids = np.load(path, mmap_mode="r")  # stays valid after the file is deleted
        return Corpus(display_name, target, ids, _digest(source, options, target), {**info, "cached": False})

    entry = Path(cache_dir) / _entry_name(files, options)
    source = _read_json(entry / "source.json")
    if not _trusted(source, reader.stats):
        source = reader.count()
        info["counted_s"] = source["seconds"]
    target = _target_vocab(source, vocab, display_name)
    own = target.chars == tuple(source["chars"])
    ids_name, vocab_name = ("ids.npy", "vocab.json") if own else (f"ids.{_vocab_key(target)}.npy", f"vocab.{_vocab_key(target)}.json")
    ids = _valid_ids(entry / ids_name, entry / vocab_name, target, source)
    try:
        entry.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(entry)
        if ids is None:
            try:
                info["encoded_s"] = reader.encode(target, source, entry / ids_name)
            except CorpusChanged:
                (entry / "source.json").unlink(missing_ok=True)  # the next run reads it afresh
                raise
            _write_json(entry / vocab_name, {**target.to_json(), "content": source["content"], "n_chars": source["n_chars"]})
            ids = np.load(entry / ids_name, mmap_mode="r")
        if info["counted_s"] is not None:
            _write_json(entry / "source.json", {k: v for k, v in source.items() if k != "seconds"})
    except OSError as exc:
        raise CharRNNError(f"{entry}: cannot write the prepared corpus ({write_error(exc)}); --cache-dir can put it elsewhere", exit_code=1) from None
    cached = info["counted_s"] is None and info["encoded_s"] is None
    return Corpus(display_name, target, ids, _digest(source, options, target), {**info, "cached": cached, "entry": str(entry / ids_name)})


class _Reader:
    """The two passes over a corpus' files."""

    def __init__(self, files: list[Path], options: dict, chunk_bytes: int, progress: Progress | None):
        self.files, self.options, self.chunk_bytes = files, options, chunk_bytes
        self.progress = progress or (lambda phase, done, total: None)
        self.stats = []
        for f in files:
            st = f.stat()
            self.stats.append({"path": str(f.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        self.total_bytes = sum(s["size"] for s in self.stats)

    def _pieces(self, phase: str, hasher) -> iter:
        done = 0

        def on_bytes(chunk: bytes) -> None:
            nonlocal done
            hasher.update(chunk)
            if not chunk.startswith(b"\x00end of file"):
                done += len(chunk)
                self.progress(phase, done, self.total_bytes)

        self.progress(phase, 0, self.total_bytes)
        return iter_corpus_text(self.files, chunk_bytes=self.chunk_bytes, on_bytes=on_bytes, **self.options)

    def count(self) -> dict:
        """Pass 1: the character counts, length and content hash of the corpus."""
        started_ns, t0 = time.time_ns(), time.perf_counter()
        hasher = hashlib.sha256()
        counts = np.zeros(0, dtype=np.int64)
        for piece in self._pieces("counting characters", hasher):
            c = np.bincount(codepoints(piece))
            if len(c) > len(counts):
                counts = np.concatenate([counts, np.zeros(len(c) - len(counts), dtype=np.int64)])
            counts[: len(c)] += c
        present = np.flatnonzero(counts)
        return {
            "format": CACHE_FORMAT,
            "files": self.stats,
            "options": self.options,
            "read_at_ns": started_ns,
            "content": hasher.hexdigest(),
            "n_chars": int(counts.sum()),
            "chars": "".join(map(chr, present)),
            "counts": counts[present].tolist(),
            "seconds": time.perf_counter() - t0,
        }

    def encode(self, vocab: Vocab, source: dict, path: Path) -> float:
        """Pass 2: write the ids to `path` (.npy) atomically; returns the seconds it took."""
        t0 = time.perf_counter()
        dtype, n = id_dtype(len(vocab)), source["n_chars"]
        points = np.array([ord(c) for c in vocab.chars], dtype=np.int64)
        table = np.zeros(int(points.max()) + 1, dtype=dtype)  # code point -> id
        table[points] = np.arange(len(points))
        hasher = hashlib.sha256()
        tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
        written = 0
        try:
            with open(tmp, "wb") as fh:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
                np.lib.format.write_array_header_1_0(fh, header)
                for piece in self._pieces("encoding", hasher):
                    ids = np.take(table, codepoints(piece), mode="clip")  # every character is known: pass 1
                    written += len(ids)
                    if written > n:
                        break
                    fh.write(ids.tobytes())
                if written != n or hasher.hexdigest() != source["content"]:
                    raise CorpusChanged(f"{self.files[0]}: the corpus changed while it was being prepared; run again")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return time.perf_counter() - t0


def _target_vocab(source: dict, vocab: Vocab | None, name: str) -> Vocab:
    own = Vocab(tuple(source["chars"]))
    if vocab is None:
        return own
    missing = [c for c in own.chars if c not in vocab]
    if missing:
        raise CharRNNError(f"{name}: {plural(len(missing), 'character')} not in the checkpoint's vocabulary: {describe_chars(missing)}")
    return vocab


def _trusted(source: dict | None, stats: list[dict]) -> bool:
    """Whether a recorded pass 1 still describes the files, by their size and mtime."""
    if not source or source.get("format") != CACHE_FORMAT or source.get("files") != stats:
        return False
    return all(s["mtime_ns"] < source["read_at_ns"] - RACY_NS for s in stats)


def _valid_ids(ids_path: Path, vocab_path: Path, vocab: Vocab, source: dict) -> np.ndarray | None:
    """The cached ids, if they were made from this content with this vocabulary."""
    meta = _read_json(vocab_path)
    if not meta or meta.get("content") != source["content"] or meta.get("chars") != "".join(vocab.chars):
        return None
    try:
        ids = np.load(ids_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if ids.shape != (source["n_chars"],) or ids.dtype != id_dtype(len(vocab)):
        return None
    return ids


def _entry_name(files: list[Path], options: dict) -> str:
    key = json.dumps({"format": CACHE_FORMAT, "files": [str(f.resolve()) for f in files], "options": options}, sort_keys=True)
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in files[0].stem)[:40] or "corpus"
    return f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"


def _vocab_key(vocab: Vocab) -> str:
    return hashlib.sha1("".join(vocab.chars).encode("utf-32-le", "surrogatepass")).hexdigest()[:12]


def _digest(source: dict, options: dict, vocab: Vocab) -> str:
    """What a checkpoint records of its corpus: the text (by content hash), options and vocabulary."""
    key = json.dumps([source["content"], options, _vocab_key(vocab)], sort_keys=True)
    return hashlib.sha1(key.encode()).hexdigest()


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


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
