"""Checkpoints: everything a run needs to continue exactly where it stopped, written
atomically as RUN/checkpoints/step_N.pt with RUN/checkpoints/latest.pt beside it; and
the signals (SIGTERM, SIGUSR1: what SLURM sends before a time limit) that ask for one."""

from __future__ import annotations

import os
import random
import re
import signal
from pathlib import Path

import numpy as np
import torch

from train.atomic import atomic_open
from train.errors import TrainError

STEP_FILE = re.compile(r"step_(\d+)\.pt$")


def rng_state() -> dict:
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": torch.from_numpy(keys.astype(np.int64)),
             "numpy_position": [int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    pos, has_gauss, gauss = state.get("numpy_position", (624, 0, 0.0))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save(directory: Path, step: int, state: dict, keep: int) -> Path:
    """Write step_N.pt atomically, point latest.pt at it (atomically), and keep only the
    newest `keep` step files (0 = all)."""
    path = directory / f"step_{step}.pt"
    with atomic_open(path) as f:
        torch.save(state, f)
    link = directory / ".latest.pt.tmp"
    link.unlink(missing_ok=True)
    os.link(path, link)
    os.replace(link, directory / "latest.pt")
    if keep:
        for old in sorted(step_files(directory), key=_step_of)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def step_files(directory: Path) -> list[Path]:
    return [p for p in directory.glob("step_*.pt") if STEP_FILE.search(p.name)]


def _step_of(path: Path) -> int:
    return int(STEP_FILE.search(path.name).group(1))


def resume_path(resume: str, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: `auto` = RUN/checkpoints/latest.pt if present,
    `none` = start fresh, else the given path (which must exist)."""
    if resume == "none":
        return None
    if resume == "auto":
        latest = run_dir / "checkpoints" / "latest.pt"
        return latest if latest.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise TrainError(f"{resume}: resume checkpoint not found")
    return path


def load(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
    missing = {"state_dict", "optimizer", "scheduler", "step", "rng", "data"} - set(state)
    if missing:
        raise TrainError(f"{path}: not a resumable checkpoint (missing {', '.join(sorted(missing))})")
    return state


class StopRequest:
    """Set by SIGTERM or SIGUSR1; the train loop checkpoints and stops at the next step."""

    def __init__(self):
        self.signal: str | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name
