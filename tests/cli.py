"""Running the project's commands in subprocesses, as a user would, and checking errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *args, nproc: int = 1, timeout: float = 300, env: dict | None = None, **popen):
    """`python -m MODULE ARGS` (under torchrun with `nproc` processes when > 1): finished
    (CompletedProcess), or started (Popen) when Popen keyword arguments are given."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1",
           "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", module, *map(str, args)]
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                   "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *command[1:]]
    if popen:
        return subprocess.Popen(command, env=env, **popen)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_line_error(result, prefix: str, *fragments) -> None:
    """Exit status 1 and exactly one `PREFIX: error: ...` line holding every fragment."""
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if f"{prefix}: error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{prefix}: error: "), result.stderr
    for fragment in fragments:
        assert str(fragment) in errors[0], errors[0]
