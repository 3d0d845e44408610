"""Preparing a corpus: MB/s and peak memory of reading, checking and encoding a generated corpus
(common English words in random order; also the corpus of the load and serve benchmarks)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# The peak RSS is this process' own (VmHWM): ru_maxrss would start from the RSS of the parent
# that forked it (Linux carries it across exec), here a benchmark holding torch and models.
TOKENISE_SCRIPT = """
import resource, sys, time
from charrnn.data.prepare import load_corpus
t = time.perf_counter()
corpus = load_corpus(sys.argv[1])
seconds = time.perf_counter() - t
try:
    kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    rss = kb * 1024
except (OSError, StopIteration):  # not Linux: the best there is
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(seconds, len(corpus.ids), len(corpus.vocab), rss)
"""


def generated_corpus(path: Path, megabytes: float) -> Path:
    """A corpus of common English words in random order (no third-party text), about this big."""
    rng = np.random.default_rng(0)
    words = np.array("the of and to in that is was he for it with as his on be at by I you".split() + ["\n"])
    with path.open("w", encoding="utf-8") as fh:
        block = " ".join(rng.choice(words, size=200_000))
        for _ in range(max(1, int(megabytes * 2**20) // len(block))):
            fh.write(block)
    return path


def bench_tokenising(megabytes: int) -> dict[str, Any]:
    """Read, check, build the vocabulary and encode a generated corpus, in a fresh process so
    that its peak RSS is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        path = generated_corpus(Path(tmp) / "corpus.txt", megabytes)
        size = path.stat().st_size
        out = subprocess.run(
            [sys.executable, "-c", TOKENISE_SCRIPT, str(path)], capture_output=True, text=True, check=True
        )
        seconds, n_chars, vocab, rss = out.stdout.split()
    return {
        "what": f"tokenise a generated {size / 2**20:.0f} MB corpus",
        "mb_per_sec": size / 2**20 / float(seconds),
        "peak_rss_mb": int(rss) / 2**20,
    }
