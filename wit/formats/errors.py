"""The exception types the commands print on one line (exit 1): bad input, and work that
stopped short but keeps what it finished."""


class WitError(Exception):
    """Bad input or configuration: its message names the file and the problem."""


class Unfinished(WitError):
    """Part of the work failed (e.g. a download shard); the finished units are kept, and the
    same command run again does the rest."""
