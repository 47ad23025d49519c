"""User-facing errors.

A `LaionetError` is a mistake in the user's input (a missing file, a bad column, a bad model spec).
The CLI prints its message as one line and exits non-zero; it never shows a traceback for these.
"""


class LaionetError(Exception):
    """An error caused by the user's input, reported as a single line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
