"""The one exception type a user is meant to read.

A ``DrbenchError`` carries a message that names the problem and the fix; the
command line prints it without a traceback (``--debug`` shows one).
"""


class DrbenchError(Exception):
    """A user-facing error: bad input, missing data, an invalid configuration."""
