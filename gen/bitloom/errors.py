"""The one exception type a user is meant to see.

Everything that is the user's mistake (a bad file, an op we do not support, a model that
cannot be mapped exactly) raises :class:`BitloomError`; the CLI prints its message and exits
with status 2. Anything else escaping is a bug in bitloom and keeps its traceback.
"""


class BitloomError(Exception):
    """A user-facing error: the message says what is wrong, where, and what to do."""

    exit_code = 2


class BitloomWarning(UserWarning):
    """Something bitloom accepted but the user should know (e.g. a non-conforming file)."""
