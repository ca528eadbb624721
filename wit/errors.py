"""The one exception type for bad input: its message names the file and the problem."""


class WitError(Exception):
    """Bad input or configuration; the CLI prints the message on one line and exits 1."""
