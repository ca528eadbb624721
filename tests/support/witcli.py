"""Running the `wit` command in a subprocess, as a user would, and checking its errors."""

from __future__ import annotations

import subprocess

from tests import cli


def run_wit(*args, timeout: float = 300, **popen):
    """`python -m wit ARGS`: finished (CompletedProcess), or started (Popen) when Popen
    keyword arguments are given."""
    return cli.run_module("wit", *args, timeout=timeout, **popen)


def assert_one_line_error(result, command: str, *fragments) -> None:
    """Exit status 1 and exactly one `wit COMMAND: error: ...` line holding every fragment."""
    cli.assert_one_line_error(result, f"wit {command}", *fragments)


def wit_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """`wit ARGS` run by `wit.cli.main` in this process (no interpreter start-up): what it
    printed, as `run_wit` returns it. For checks of errors; `run_wit` for the command a user runs."""
    from wit.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["wit", *map(str, args)], code, captured.out, captured.err)
