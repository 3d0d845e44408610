"""The one error type for a user's mistakes: bad input, bad options, bad files.

Library code raises `CharRNNError` with a message meant for a person; only the command line
catches it, prints the message as one line on stderr and exits with `exit_code`.
"""


class CharRNNError(Exception):
    """A problem the user can fix (a file, an option, a checkpoint). Exit code 2 by default."""

    def __init__(self, message: str, exit_code: int = 2, elsewhere: bool = False):
        super().__init__(message)
        self.exit_code = exit_code
        # In distributed training: the same error is reported by another process (rank 0, or
        # the one where it happened), so this one ends with the exit code and prints nothing.
        self.elsewhere = elsewhere
