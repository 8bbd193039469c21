"""One exception type for every mistake a user can make.

The CLI catches :class:`KdflowError` and prints its message as a single sentence
with exit code 2; anything else is a bug in kdflow and keeps its traceback.
"""


class KdflowError(Exception):
    """Bad input: the message names what is wrong and how to fix it."""


def first_line(err: Exception) -> str:
    """The first line of a library's error (at most 200 characters), to quote inside one of ours."""
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
