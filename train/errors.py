"""The one exception type for bad input or configuration of the trainer."""


class TrainError(Exception):
    """Bad input or configuration: printed on one line by the entry points, exit status 1."""
