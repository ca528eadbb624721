"""Running the `wit` command in a subprocess, as a user would, and checking its errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_wit(*args, timeout: float = 300, **popen):
    """`python -m wit ARGS`: finished (CompletedProcess), or started (Popen) when Popen
    keyword arguments are given."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-m", "wit", *map(str, args)]
    if popen:
        return subprocess.Popen(command, env=env, **popen)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(result, command: str, *fragments) -> None:
    """Exit status 1 and exactly one `wit COMMAND: error: ...` line holding every fragment."""
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"wit {command}: error: "), result.stderr
    for fragment in fragments:
        assert str(fragment) in errors[0], errors[0]
