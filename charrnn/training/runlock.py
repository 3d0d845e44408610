"""One writer per run folder: an OS file lock on `RUN/.lock`, held for the whole run.

`charrnn train` takes it before it reads anything in the folder (to resume, or to refuse an
existing run) or writes anything there; a second `train` into the same folder is refused at once
with the first one's PID, whatever its flags. The lock is the kernel's (`flock`), not the file's
existence, so a process that dies, even by `kill -9`, leaves nothing stale: the kernel drops its
lock. Readers (`sample`, `eval`, `info`, `runs`) take no lock.

The holder writes its PID into the file, removes it when it ends, and removes the run folder
again if it made it and nothing was written (a refused corpus leaves no folder behind). A
process that opened the file just before it was removed finds, once it holds the lock, that the
path no longer names what it locked, and starts over. Under `train --nproc` the launching
process holds the lock for its workers: their rank 0 finds it held by that PID (in
`LOCK_HOLDER`) and goes on. Without `fcntl` (Windows) the lock is `msvcrt.locking` on one byte.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from charrnn.errors import CharRNNError, write_error
from charrnn.store.files import make_folder

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
LOCK_HOLDER = "CHARRNN_RUN_LOCK_HOLDER"  # the PID of a process that holds the lock for us (train --nproc)
WINDOWS_LOCK_OFFSET = 1 << 20  # msvcrt locks a byte range, which others cannot read: lock one far from the PID
ATTEMPTS = 20  # the lock file removed under us this many times in a row: give up


class RunLock:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None
        self.made: list[Path] = []  # folders this lock made, the deepest first

    def acquire(self) -> None:
        """Hold the lock, or raise a CharRNNError (exit 2) naming the process that holds it."""
        if self.fd is not None:
            return
        for _ in range(ATTEMPTS):
            fd = self._open()
            if fd is None:  # the folder was removed by a holder that just ended
                continue
            if not _try_lock(fd):
                holder = _read_pid(fd)
                os.close(fd)
                if holder and holder == os.environ.get(LOCK_HOLDER):
                    return  # our launcher (train --nproc) holds it for us
                raise CharRNNError(
                    f"{self.run_dir} is being written by another charrnn train (PID {holder or 'unknown'}): "
                    f"wait for it to end, or train into another --name or --out"
                )
            if _same_file(fd, self.path):
                self.fd = fd
                _write_pid(fd)
                return
            os.close(fd)  # we locked a file its holder removed as it ended: start over
        raise CharRNNError(f"{self.path}: could not take the run folder's lock (it keeps being removed)", exit_code=1)

    def _open(self) -> int | None:
        """The lock file, opened (made with its folder if need be); None if the folder vanished."""
        self.made += [
            f for f in make_folder(self.run_dir, "the run folder", "give another --out") if f not in self.made
        ]
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CharRNNError(
                f"{self.path}: cannot write in the run folder ({write_error(exc)}); give another --out", exit_code=1
            ) from None

    def release(self) -> None:
        """Remove the lock file (and the folders this lock made, if nothing was written in them),
        then let the lock go. Safe to call when it is not held."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):  # (Windows cannot remove an open file: it stays)
            self.path.unlink()
        for folder in self.made:
            try:
                folder.rmdir()  # only if empty: a run that wrote something keeps its folder
            except OSError:
                break
        os.close(self.fd)
        self.fd, self.made = None, []

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def _try_lock(fd: int) -> bool:
    """Take the lock without waiting: False when another process holds it. On a file system that
    cannot lock at all, go on without (True) rather than refuse every run."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            os.lseek(fd, WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:  # (BlockingIOError from flock; PermissionError from msvcrt)
        return exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def _write_pid(fd: int) -> None:
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, without a PID to show
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""
