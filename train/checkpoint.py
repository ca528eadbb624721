"""Checkpoints: everything a run needs to continue exactly where it stopped, written
atomically as RUN/checkpoints/step_N.pt with RUN/checkpoints/latest.pt beside it; and
the signals (SIGTERM, SIGUSR1: what SLURM sends before a time limit) that ask for one.

A checkpoint holds one entry per part of the run, each part's own `state_dict()`; the
`Checkpointer` composes the parts, so new state is one more part."""

from __future__ import annotations

import os
import random
import re
import signal
from pathlib import Path
from typing import Any, Iterable, Protocol

import numpy as np
import torch

from train import dist
from train.dist import World
from wit.formats.atomic import atomic_open
from wit.formats.errors import WitError

STEP_FILE = re.compile(r"step_(\d+)\.pt$")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


class Checkpointer:
    """Saves and restores the parts of a run, `{entry name: part}`, restored in that order."""

    def __init__(self, directory: Path, keep: int, world: World, parts: dict[str, Stateful]):
        self.directory, self.keep, self.world, self.parts = directory, keep, world, parts

    def save(self, step: int) -> None:
        """Every rank calls it (a part may gather from every rank); rank 0 writes; every rank
        waits until it is written (a rank that exits early would have its launcher kill rank 0)."""
        state = {name: part.state_dict() for name, part in self.parts.items()}
        if self.world.is_main:
            save(self.directory, step, state, self.keep)
        dist.barrier(self.world)

    def restore(self, path: Path) -> None:
        state = load(path, self.parts)
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


class Rng:
    """The RNG states of torch (CPU and CUDA), Python and NumPy, as a checkpoint part."""

    def state_dict(self) -> dict:
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "python": random.getstate(),
                 "numpy": torch.from_numpy(keys.astype(np.int64)),
                 "numpy_position": [int(pos), int(has_gauss), float(gauss)]}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(_tuples(state["python"]))
        pos, has_gauss, gauss = state["numpy_position"]
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss),
                             float(gauss)))
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
        raise WitError(f"{resume}: resume checkpoint not found")
    return path


def load(path: Path, entries: Iterable[str]) -> dict:
    """A checkpoint (loaded with weights_only=True) that holds every one of `entries`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WitError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
    missing = set(entries) - set(state) if isinstance(state, dict) else set(entries)
    if missing:
        raise WitError(f"{path}: not a resumable checkpoint (missing {', '.join(sorted(missing))})")
    return state


class StopRequest:
    """Set by SIGTERM or SIGUSR1; the train loop checkpoints and stops at the next step."""

    def __init__(self):
        self.signal: str | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name
