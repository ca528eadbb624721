"""Faults for the data stages' tests: a full disk, and kill -9 during an `--overwrite` rerun."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support.witcli import run_wit


@contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` bytes (e.g. "200k") mounted at `path`: writing past it fails with
    ENOSPC. Unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a full disk) needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def kill_during_overwrite(args_old: list, args_new: list, out: Path, snapshot: Callable[[Path], object],
                          fractions=(0.1, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0)) -> None:
    """Build `out` with `args_old`, then rerun with `args_new --overwrite` and kill its
    process group after each fraction of a straight run's time: `out` must always hold the
    complete old or the complete new output (by `snapshot`), and a rerun finishes the new."""
    reference = out.with_name(out.name + "-new")
    started = time.monotonic()
    assert run_wit(*args_new, "--out", reference).returncode == 0
    seconds = time.monotonic() - started
    new = snapshot(reference)
    assert run_wit(*args_old, "--out", out).returncode == 0
    old = snapshot(out)
    assert old != new
    seen = set()
    for fraction in fractions:
        proc = run_wit(*args_new, "--out", out, "--overwrite", start_new_session=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(seconds * fraction)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        now = snapshot(out)
        assert now in (old, new), f"killed after {fraction:.0%}: a mix of the old and the new output"
        seen.add("old" if now == old else "new")
        if now == new:   # back to the old output for the next kill
            shutil.rmtree(out)
            assert run_wit(*args_old, "--out", out).returncode == 0
    assert "old" in seen
    result = run_wit(*args_new, "--out", out, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert snapshot(out) == new
    leftovers = sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))
    assert leftovers == []
