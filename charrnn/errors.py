"""The one error type for a user's mistakes: bad input, bad options, bad files.

Library code raises `CharRNNError` with a message meant for a person; only the command line
catches it, prints the message as one line on stderr and exits with `exit_code`. `plural`
writes the counts in messages ("1 character", "2 characters"); `write_error` says why a write
failed (the system's reason, and "is the disk full?" when that may be it).
"""

from __future__ import annotations

import errno

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, a quota, a file-size limit


class CharRNNError(Exception):
    """A problem the user can fix (a file, an option, a checkpoint). Exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2, elsewhere: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        # In distributed training: the same error is reported by another process (rank 0, or
        # the one where it happened), so this one ends with the exit code and prints nothing.
        self.elsewhere = elsewhere


class WriteError(CharRNNError):
    """A file could not be written (a full disk, a folder that refuses): exit code 1. The command
    line then says how to go on from what is left."""

    def __init__(self, message: str, elsewhere: bool = False):
        super().__init__(message, exit_code=1, elsewhere=elsewhere)


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 step', '2 steps', '1,000 steps' (or `many` for an irregular plural)."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def write_error(exc: BaseException) -> str:
    """Why a write failed, for a message: the system's reason, and 'is the disk full?' only
    when that may be it (no space, a quota, a file-size limit, or torch's unexplained failure)."""
    system = system_error(exc)
    if system is not None and system.strerror:
        reason = system.strerror
    else:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    full = system is None or system.errno in DISK_FULL
    return f"{reason}; is the disk full?" if full else reason


def system_error(exc: BaseException | None) -> OSError | None:
    """The OSError behind `exc`: itself, or the one it was raised from or while handling (torch's
    zip writer turns a failed write into a RuntimeError whose context is the OSError)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None
