"""The benchmarks (tests/bench/README.md), and the environment their child processes run in."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench_env() -> dict[str, str]:
    """This process's environment for a child (a trainer, a tool, a benchmark): the repo
    first on PYTHONPATH, before what was there (e.g. carried wheels on a GPU machine), no
    albumentations update check, no progress bars."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}
