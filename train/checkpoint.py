"""Checkpoints: everything a run needs to continue exactly where it stopped, written
atomically as RUN/checkpoints/step_N.pt with RUN/checkpoints/latest.pt beside it; and
the signals (SIGTERM, SIGUSR1: what SLURM sends before a time limit) that ask for one.

A checkpoint holds one entry per part of the run, each part's own `state_dict()`; the
`Checkpointer` composes the parts, so new state is one more part."""

from __future__ import annotations

import logging
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
from wit.formats.processes import Interrupted

STEP_FILE = re.compile(r"step_(\d+)\.pt$")
DIVERGED = "diverged"   # RUN/checkpoints/diverged/: step files set aside after a divergence
log = logging.getLogger("train")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


class Checkpointer:
    """Saves and restores the parts of a run, `{entry name: part}`, restored in that order."""

    def __init__(self, directory: Path, keep: int, world: World, parts: dict[str, Stateful]):
        self.directory, self.keep, self.world, self.parts = directory, keep, world, parts

    def save(self, step: int, prune: bool = True) -> None:
        """Every rank calls it (a part may gather from every rank); rank 0 writes; every rank
        waits until it is written (a rank that exits early would have its launcher kill rank 0).
        Without `prune` (during non-finite steps) no older checkpoint is removed: the last
        good one must survive a divergence."""
        state = {name: part.state_dict() for name, part in self.parts.items()}
        if self.world.is_main:
            save(self.directory, step, state, self.keep if prune else 0)
        dist.barrier(self.world)

    def restore(self, path: Path) -> None:
        self.restore_state(load(path, self.parts))

    def restore_state(self, state: dict) -> None:
        """Restore every part from a loaded checkpoint (`newest_valid`), in order."""
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
    link = directory / f".latest.pt.{os.getpid()}.tmp"
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


def candidates(resume: str, directory: Path) -> list[Path]:
    """The checkpoints to try, best first: for `auto`, every step file in `directory`
    newest first (whatever `latest.pt` says, or whether it exists), then `latest.pt` when
    it is not one of them; none for `none` and `restart`; else the given path."""
    if resume in ("none", "restart"):
        return []
    if resume != "auto":
        path = Path(resume)
        if not path.is_file():
            raise WitError(f"{resume}: resume checkpoint not found")
        return [path]
    found = sorted(step_files(directory), key=_step_of, reverse=True)
    latest = directory / "latest.pt"
    if latest.is_file() and not any(os.path.samefile(latest, p) for p in found):
        found.append(latest)
    return found


def start_afresh(resume: str, directory: Path) -> None:
    """Before a run from step 0: refuse to start over existing checkpoints unless `resume`
    is `restart` (which removes them, so that they cannot be mistaken for this run's)."""
    existing = sorted(step_files(directory), key=_step_of) + \
        [p for p in (directory / "latest.pt",) if p.exists()]
    if not existing:
        return
    if resume != "restart":
        raise WitError(f"{directory}: holds checkpoints ({', '.join(p.name for p in existing)}) and resume={resume} "
                       "would start from step 0 over them; use resume=auto to continue from the newest, or "
                       "resume=restart to start again and replace them")
    for path in existing:
        path.unlink()


def newest_valid(paths: list[Path], entries: Iterable[str]) -> tuple[Path, dict] | None:
    """The first of `paths` that loads, holds every one of `entries` and whose weights are
    all finite, with its state; the others are named in a warning. An error when there were
    checkpoints and none is valid (the run must not start from scratch over them)."""
    problems = []
    for path in paths:
        try:
            state = load(path, entries)
            bad = next((k for k, v in state["state_dict"].items()
                        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()),
                       None) if isinstance(state.get("state_dict"), dict) else None
            if bad is not None:
                raise WitError(f"{path}: non-finite weights ({bad})")
        except WitError as e:
            log.warning("skipping checkpoint %s", e)
            problems.append(str(e))
            continue
        return path, state
    if problems:
        raise WitError(f"no valid checkpoint to resume from ({'; '.join(problems)}); remove or replace them, or "
                       "use resume=restart to start again from step 0")
    return None


def set_aside_diverged(directory: Path, first_step: int) -> Path | None:
    """After a divergence: move the step files from `first_step` on (their weights give
    non-finite losses) into `directory/diverged/`, point latest.pt at the newest remaining
    one (or remove it), and return that one, the last good checkpoint."""
    aside = directory / DIVERGED
    for path in step_files(directory):
        if _step_of(path) >= first_step:
            aside.mkdir(parents=True, exist_ok=True)
            os.replace(path, aside / path.name)
    remaining = sorted(step_files(directory), key=_step_of)
    latest = directory / "latest.pt"
    if remaining:
        link = directory / f".latest.pt.{os.getpid()}.tmp"
        link.unlink(missing_ok=True)
        os.link(remaining[-1], link)
        os.replace(link, latest)
        return remaining[-1]
    latest.unlink(missing_ok=True)
    return None


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
    """Set by SIGTERM, SIGUSR1 or SIGINT; the train loop checkpoints and stops at the next
    step. A second SIGINT or SIGTERM does not wait for the checkpoint: it interrupts at once
    (the last checkpoint is kept)."""

    def __init__(self):
        self.signal: str | None = None
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signal is not None and signum != signal.SIGUSR1:
            raise Interrupted(signum)
        self.signal = signal.Signals(signum).name
