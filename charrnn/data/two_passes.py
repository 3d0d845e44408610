"""The two passes over a corpus' files, each in chunks so that memory does not grow with the
corpus: counting (the vocabulary, the length, the content hash of the text) and encoding (the
ids, appended to an .npy of the smallest dtype that holds the vocabulary, written to a temporary
name, fsynced and renamed). `charrnn.data.prepare` decides when each runs and keeps the result."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from charrnn.data.cache_entry import CACHE_FORMAT, SourceRecord
from charrnn.data.corpus import iter_corpus_text
from charrnn.data.vocab import Vocab, codepoints, id_dtype
from charrnn.errors import CharRNNError
from charrnn.signals import removed_if_interrupted

Progress = Callable[[str, int, int], None]  # (phase, bytes done, bytes total)


class CorpusChanged(CharRNNError):
    """The text read by the encoding pass is not the text the counting pass saw."""


class TwoPasses:
    """The two passes over a corpus' files."""

    def __init__(self, files: list[Path], options: dict, chunk_bytes: int, progress: Progress | None):
        self.files, self.options, self.chunk_bytes = files, options, chunk_bytes
        self.progress = progress or (lambda phase, done, total: None)
        self.stats = []
        for f in files:
            st = f.stat()
            # ctime and inode too: an edit that keeps the size and restores the mtime (touch -r)
            # still moves the ctime, which no one can set back
            self.stats.append(
                {
                    "path": str(f.resolve()),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "ctime_ns": st.st_ctime_ns,
                    "ino": st.st_ino,
                }
            )
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

    def count(self) -> tuple[SourceRecord, float]:
        """Pass 1: the character counts, length and content hash of the corpus; the seconds it took."""
        started_ns, t0 = time.time_ns(), time.perf_counter()
        hasher = hashlib.sha256()
        counts = np.zeros(0, dtype=np.int64)
        for piece in self._pieces("counting characters", hasher):
            c = np.bincount(codepoints(piece))
            if len(c) > len(counts):
                counts = np.concatenate([counts, np.zeros(len(c) - len(counts), dtype=np.int64)])
            counts[: len(c)] += c
        present = np.flatnonzero(counts)
        chars = "".join(map(chr, present))
        source = SourceRecord(
            CACHE_FORMAT,
            self.stats,
            self.options,
            started_ns,
            hasher.hexdigest(),
            int(counts.sum()),
            chars,
            counts[present].tolist(),
        )
        return source, time.perf_counter() - t0

    def encode(self, vocab: Vocab, source: SourceRecord, path: Path) -> tuple[float, str]:
        """Pass 2: write the ids to `path` (.npy) atomically; the seconds it took and the SHA-256
        of the ids (after the header)."""
        t0 = time.perf_counter()
        dtype, n = id_dtype(len(vocab)), source.n_chars
        points = np.array([ord(c) for c in vocab.chars], dtype=np.int64)
        table = np.zeros(int(points.max()) + 1, dtype=dtype)  # code point -> id
        table[points] = np.arange(len(points))
        hasher, ids_hasher = hashlib.sha256(), hashlib.sha256()
        tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
        written = 0
        try:
            with removed_if_interrupted(tmp), open(tmp, "wb") as fh:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
                np.lib.format.write_array_header_1_0(fh, header)
                for piece in self._pieces("encoding", hasher):
                    ids = np.take(table, codepoints(piece), mode="clip")  # every character is known: pass 1
                    written += len(ids)
                    if written > n:
                        break
                    fh.write(ids.tobytes())
                    ids_hasher.update(ids)
                if written != n or hasher.hexdigest() != source.content:
                    raise CorpusChanged(f"{self.files[0]}: the corpus changed while it was being prepared; run again")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return time.perf_counter() - t0, ids_hasher.hexdigest()
