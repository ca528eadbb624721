"""How a command's leader ends on a stop signal when a library's cleanup would wait forever
(wit.formats.processes): a `multiprocessing.Pool` whose idle worker was stopped while it
held the task queue's lock (what made a signalled `wit crawl` hang in img2dataset's pool),
and a cleanup that never ends. Real processes, each signalling itself mid-way."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.cli import REPO

POOL = """
import multiprocessing, os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from wit.formats.processes import lead

def work(x):
    time.sleep(0.3)
    return x

def body():
    with multiprocessing.get_context("spawn").Pool(2) as pool:   # img2dataset's pool
        results = pool.imap_unordered(work, range(3))
        next(results)
        time.sleep(0.5)   # the queue is empty: an idle worker waits for a task, holding its lock
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
    return 0

if __name__ == "__main__":
    sys.exit(lead("wit test", body))
"""

STUCK = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
from wit.formats.processes import lead

def body():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
    finally:
        time.sleep(60)   # a cleanup that waits for what will never come
    return 0

sys.exit(lead("wit test", body))
"""


def run(script: str, path: Path) -> tuple[subprocess.CompletedProcess, float]:
    """The script run as a file (a spawned pool worker imports it), with the repository first on its path."""
    path.write_text(script)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(path), str(REPO)], capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


def test_a_pool_whose_idle_worker_was_stopped_does_not_hold_the_command(tmp_path):
    done, seconds = run(POOL, tmp_path / "pool.py")
    assert done.returncode == 143, done.stderr
    assert done.stderr.rstrip().splitlines()[-1] == ("wit test: interrupted by SIGTERM; run the same command again "
                                                     "to resume")
    assert seconds < 10


def test_a_cleanup_that_never_ends_is_cut_short_with_the_same_line_and_status(tmp_path):
    done, seconds = run(STUCK, tmp_path / "stuck.py")
    assert done.returncode == 143, done.stderr
    assert done.stderr.rstrip().splitlines()[-1] == ("wit test: interrupted by SIGTERM; run the same command again "
                                                     "to resume")
    assert 4 < seconds < 15
