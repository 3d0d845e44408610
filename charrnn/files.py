"""Small helpers for the files charrnn writes (checkpoints, exports, the corpus cache)."""

import errno
import os


def write_error(exc: BaseException) -> str:
    """Why a write failed, for a message: the system's reason, and 'is the disk full?' only
    when that may be it (no space, a quota, a file-size limit, or torch's unexplained failure)."""
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    full = not isinstance(exc, OSError) or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return f"{reason}; is the disk full?" if full else reason


def readable_by_others(fd: int) -> None:
    """Give a file made by `tempfile.mkstemp` (always mode 0600) the mode an ordinary
    `open` would: 0666 less the umask, so checkpoints can be shared as the user's other files."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
    except OSError:  # a filesystem without modes: leave it
        pass
