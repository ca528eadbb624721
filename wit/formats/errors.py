"""The one exception type for bad input: its message names the file and the problem."""


class WitError(Exception):
    """Bad input or configuration; the commands print the message on one line and exit 1."""
