"""Writing checkpoints and exports safely, telling what a file is by its first bytes, and
saying why a write failed (also for the corpus cache and metrics)."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import DISK_FULL, CharRNNError, WriteError, system_error, write_error


@contextlib.contextmanager
def atomic_write(path: Path, what: str, after: str = "") -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temporary file in the same folder, fsynced and
    renamed over `path` only when the block ends without error, so a crash at any moment leaves
    the old file or the new one, never a torn one. Any failure to write (the folder, the disk)
    is a one-line WriteError naming `what` (+ `after`), and the temporary file is removed."""
    path = Path(path)
    tmp = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # (what mkdir says when the folder's name is taken by a file)
            raise WriteError(f"{path}: could not write {what} ({path.parent} is a file, not a folder){after}") from None
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        readable_by_others(fd)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, (OSError, RuntimeError)):  # torch reports a failed write as RuntimeError
            raise write_failure(path, exc, what, after) from None
        raise
    fsync_dir(path.parent)


def file_kind(path: Path) -> str:
    """What a file's first bytes say it is: 'empty', 'zip' (torch.save, .npz), 'npy' (one NumPy
    array), 'pickle' (protocol 2 or later: torch's legacy format, or any pickle) or 'other'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise CharRNNError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not head:
        return "empty"
    if head[:2] == b"PK":
        return "zip"
    if head == b"\x93NUMPY":
        return "npy"
    return "pickle" if head[0] == 0x80 else "other"


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_failure(path: Path, exc: BaseException, what: str, after: str = "") -> WriteError:
    """The error for a failed write of `path`: 'disk full while writing PATH' when the system
    says so (not the internals of torch's writer, which only wraps the system's error), else the
    system's reason."""
    system = system_error(exc)
    if system is not None and system.errno in DISK_FULL:
        return WriteError(f"disk full while writing {path} ({system.strerror}){after}")
    return WriteError(f"{path}: could not write {what} ({write_error(exc)}){after}")


def make_folder(folder: Path, what: str, advice: str) -> list[Path]:
    """Make `folder` and its missing parents; returns the folders made, the deepest first. A
    one-line error (exit 1) naming `what`, with `advice`, when the system refuses."""
    folder = Path(folder)
    missing = list(itertools.takewhile(lambda p: not p.exists(), [folder, *folder.parents]))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharRNNError(f"{folder}: cannot make {what} ({write_error(exc)}); {advice}", exit_code=1) from None
    return missing


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it: done once, at import
    os.umask(umask)
    return umask


UMASK = _read_umask()


def readable_by_others(fd: int) -> None:
    """Give a file made by `tempfile.mkstemp` (always mode 0600) the mode an ordinary
    `open` would: 0666 less the umask, so checkpoints can be shared as the user's other files."""
    try:
        os.fchmod(fd, 0o666 & ~UMASK)
    except (OSError, AttributeError):  # a filesystem without modes, or no fchmod (Windows)
        pass
