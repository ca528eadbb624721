"""Running the `wit` command in a subprocess, as a user would, and checking its errors."""

from __future__ import annotations

from tests import cli


def run_wit(*args, timeout: float = 300, **popen):
    """`python -m wit ARGS`: finished (CompletedProcess), or started (Popen) when Popen
    keyword arguments are given."""
    return cli.run_module("wit", *args, timeout=timeout, **popen)


def assert_one_line_error(result, command: str, *fragments) -> None:
    """Exit status 1 and exactly one `wit COMMAND: error: ...` line holding every fragment."""
    cli.assert_one_line_error(result, f"wit {command}", *fragments)
