"""Checkpoints: everything a run needs to continue exactly where it stopped, written
atomically as RUN/checkpoints/step_N.pt with RUN/checkpoints/latest.pt beside it (or, for
a sharded model, as a directory RUN/checkpoints/step_N/ with RUN/checkpoints/latest
linking to it); and the signals (SIGTERM, SIGUSR1: what SLURM sends before a time limit)
that ask for one.

A checkpoint holds one entry per part of the run, each part's own `state_dict()`; the
`Checkpointer` composes the parts, so new state is one more part."""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from torch.distributed.tensor import DTensor

from train import dist
from train.dist import World
from wit.formats.atomic import atomic_open, sync_path
from wit.formats.errors import WitError
from wit.formats.processes import Interrupted

STEP_NAME = re.compile(r"step_(\d+)(\.pt)?")   # step_N.pt (one file) or step_N (a directory of shards)
DIVERGED = "diverged"   # RUN/checkpoints/diverged/: step files set aside after a divergence
LATEST = ("latest.pt", "latest")   # a hard link to the newest step file; a symbolic link to the newest step dir
STATE_FILE = "state.pt"   # in a step dir: every part but its DTensors (rank 0's)
WEIGHTS_FILE = "model.pt"   # in a step dir: the whole model's weights, with the config and position
SHARDED = "<sharded: see the .distcp files>"   # in STATE_FILE: where a DTensor was
FOREIGN = "foreign"   # in a loaded state: a checkpoint of the other layout, what it is
log = logging.getLogger("train")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


class Checkpointer:
    """Saves and restores the parts of a run, `{entry name: part}`, restored in that order:
    one file per checkpoint, step_N.pt, written by rank 0."""

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

    def load(self, path: Path) -> dict:
        """The state of the checkpoint at `path`, with all the parts and finite weights, or a
        WitError. A step dir (an fsdp run's) gives its plain parts only, marked FOREIGN."""
        if path.is_dir():
            return {**load(path / STATE_FILE, self.parts),
                    FOREIGN: f"{path}: a checkpoint of sharded weights (parallel=fsdp), not one file"}
        state = load(path, self.parts)
        _check_finite(path, state.get("state_dict"))
        return state

    def newest_valid(self, paths: list[Path]) -> tuple[Path, dict] | None:
        """The first of `paths` that loads, holds every part and whose weights are all finite,
        with its state; the others are named in a warning. An error when there were
        checkpoints and none is valid (the run must not start from scratch over them)."""
        problems = []
        for path in paths:
            try:
                state = self.load(path)
            except WitError as e:
                log.warning("skipping checkpoint %s", e)
                problems.append(str(e))
                continue
            return path, state
        if problems:
            raise WitError(f"no valid checkpoint to resume from ({'; '.join(problems)}); remove or replace them, "
                           "or use resume=restart to start again from step 0")
        return None

    def restore(self, path: Path) -> None:
        self.restore_state(self.load(path))

    def restore_state(self, state: dict) -> None:
        """Restore every part from a loaded checkpoint (`newest_valid`), in order. Of a
        checkpoint of the other layout only the first part, the config, is restored: it
        refuses the change of `parallel` in one line."""
        for i, (name, part) in enumerate(self.parts.items()):
            if i and FOREIGN in state:
                raise WitError(f"{state[FOREIGN]}: resume it with the parallel it was written with")
            part.load_state_dict(state[name])


class ShardedCheckpointer(Checkpointer):
    """A run whose parts hold DTensors (parallel=fsdp): a checkpoint is a directory,
    step_N/, where every rank writes its shards of the DTensors (torch.distributed.checkpoint,
    DCP: `.metadata` and a `.distcp` file per rank), rank 0 everything else (state.pt, as
    one-file checkpoints hold it) and the whole model's weights (model.pt: `state_dict`,
    `config` and `position`, what the weights loaders and OpenCLIP read). It is written under
    a temporary name and renamed whole; `latest` links to the newest. DCP reshards on load,
    so a run may resume on another number of ranks."""

    def __init__(self, directory: Path, keep: int, world: World, parts: dict[str, Stateful],
                 weights: Callable[[], dict]):
        super().__init__(directory, keep, world, parts)
        self.weights = weights   # every rank calls it; rank 0 gets the whole model's weights

    def save(self, step: int, prune: bool = True) -> None:
        """As `Checkpointer.save`, every rank writing its own shards."""
        import torch.distributed.checkpoint as dcp

        state = {name: part.state_dict() for name, part in self.parts.items()}
        plain, shards = _split(state)
        weights = self.weights()
        tmp = self.directory / f".step_{step}.tmp"
        if self.world.is_main:
            for stale in self.directory.glob(".step_*.tmp"):   # left by a killed run
                shutil.rmtree(stale)
            tmp.mkdir(parents=True)
        dist.barrier(self.world)
        dcp.save(shards, checkpoint_id=str(tmp))   # every rank its shards, then rank 0 the metadata
        if self.world.is_main:
            with atomic_open(tmp / STATE_FILE) as f:
                torch.save(plain, f)
            with atomic_open(tmp / WEIGHTS_FILE) as f:
                torch.save({"state_dict": weights, **{k: plain[k] for k in ("config", "position") if k in plain}}, f)
            _publish(tmp, self.directory / f"step_{step}")
            if prune:
                keep_newest(self.directory, self.keep)
        dist.barrier(self.world)

    def load(self, path: Path) -> dict:
        """The state of the step dir at `path`: its DTensors loaded into the run's own (every
        rank must call it, with the same paths; a problem on any rank is a WitError on every
        rank). A one-file checkpoint (a ddp run's) gives its state, marked FOREIGN."""
        if not path.is_dir():
            return {**load(path, self.parts), FOREIGN: f"{path}: a one-file checkpoint (parallel=ddp), not "
                                                       "sharded weights"}
        plain = self._agreed(path, lambda: load(path / STATE_FILE, self.parts))
        state = self._agreed(path, lambda: self._load_shards(path, plain))
        self._agreed(path, lambda: _check_finite(path, state.get("state_dict")))
        return state

    def _load_shards(self, path: Path, plain: dict) -> dict:
        """`plain` (a step dir's state.pt) with its DTensors: the run's own, loaded in place."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.api import CheckpointException

        wanted = set(_sharded_paths(plain))
        _, targets = _split({name: part.state_dict() for name, part in self.parts.items()
                             if next(_sharded_paths(plain[name]), None) is not None})
        if wanted != set(targets):
            raise WitError(f"{path}: its sharded tensors are not this run's model and optimizer's "
                           f"({len(wanted ^ set(targets))} differ)")
        try:
            dcp.load(targets, checkpoint_id=str(path))
        except (Exception, CheckpointException) as e:
            raise WitError(f"{path}: its shards are not readable ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:160]})") from None
        return _join(plain, targets)

    def _agreed(self, path: Path, action: Callable[[], Any]) -> Any:
        """`action`'s result; its WitError, or another rank's, raised on every rank."""
        error, result = None, None
        try:
            result = action()
        except WitError as e:
            error = e
        if dist.any_rank(self.world, error is not None)[0]:
            raise error or WitError(f"{path}: not usable on another rank (see its log)")
        return result


def _check_finite(path: Path, weights: Any) -> None:
    """A WitError when a floating weight is not finite (a DTensor: this rank's shard)."""
    if not isinstance(weights, dict):
        return
    for key, value in weights.items():
        value = value.to_local() if isinstance(value, DTensor) else value
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            raise WitError(f"{path}: non-finite weights ({key})")


def _split(tree: Any, path: str = "") -> tuple[Any, dict[str, DTensor]]:
    """`tree` with each DTensor replaced by SHARDED, and the DTensors by their path."""
    if isinstance(tree, DTensor):
        return SHARDED, {path: tree}
    if isinstance(tree, dict):
        items = [(k, *_split(v, f"{path}/{k}")) for k, v in tree.items()]
        return {k: v for k, v, _ in items}, {p: t for _, _, found in items for p, t in found.items()}
    if isinstance(tree, (list, tuple)):
        items = [_split(v, f"{path}/{i}") for i, v in enumerate(tree)]
        return type(tree)(v for v, _ in items), {p: t for _, found in items for p, t in found.items()}
    return tree, {}


def _sharded_paths(tree: Any, path: str = "") -> Iterable[str]:
    if isinstance(tree, str) and tree == SHARDED:
        yield path
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _sharded_paths(v, f"{path}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _sharded_paths(v, f"{path}/{i}")


def _join(tree: Any, tensors: dict[str, DTensor], path: str = "") -> Any:
    """Inverse of `_split`."""
    if isinstance(tree, str) and tree == SHARDED:
        return tensors[path]
    if isinstance(tree, dict):
        return {k: _join(v, tensors, f"{path}/{k}") for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_join(v, tensors, f"{path}/{i}") for i, v in enumerate(tree))
    return tree


def _publish(tmp: Path, final: Path) -> None:
    """Rename the written step dir `tmp` to `final` (replacing one of that step) and point
    `latest` at it, each step atomic and on disk."""
    sync_path(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old.tmp")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _point_latest(final)


def _point_latest(target: Path) -> None:
    """`latest.pt` (hard link) or `latest` (symbolic link) in target's dir names `target`;
    the other is removed."""
    directory = target.parent
    name = "latest" if target.is_dir() else "latest.pt"
    link = directory / f".{name}.{os.getpid()}.tmp"
    link.unlink(missing_ok=True)
    if target.is_dir():
        os.symlink(target.name, link)
    else:
        os.link(target, link)
    os.replace(link, directory / name)
    for other in LATEST:
        if other != name:
            _remove(directory / other)
    sync_path(directory)


def _remove(path: Path) -> None:
    """A step file, step dir or link, gone."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


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
    _point_latest(path)
    keep_newest(directory, keep)
    return path


def keep_newest(directory: Path, keep: int) -> None:
    """Remove all but the newest `keep` step files or dirs (0: keep all)."""
    if keep:
        for old in sorted(step_files(directory), key=_step_of)[:-keep]:
            _remove(old)


def step_files(directory: Path) -> list[Path]:
    """The step files (step_N.pt) and step dirs (step_N/) in `directory`."""
    return [p for p in directory.glob("step_*")
            if STEP_NAME.fullmatch(p.name) and (p.is_file() if p.suffix == ".pt" else p.is_dir())]


def _step_of(path: Path) -> int:
    return int(STEP_NAME.fullmatch(path.name).group(1))


def candidates(resume: str, directory: Path) -> list[Path]:
    """The checkpoints to try, best first: for `auto`, every step file or dir in `directory`
    newest first (whatever `latest.pt` says, or whether it exists), then `latest.pt` when
    it is not one of them; none for `none` and `restart`; else the given path."""
    if resume in ("none", "restart"):
        return []
    if resume != "auto":
        path = Path(resume)
        if not path.exists():
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
        [directory / name for name in LATEST if os.path.lexists(directory / name)]
    if not existing:
        return
    if resume != "restart":
        raise WitError(f"{directory}: holds checkpoints ({', '.join(p.name for p in existing)}) and resume={resume} "
                       "would start from step 0 over them; use resume=auto to continue from the newest, or "
                       "resume=restart to start again and replace them")
    for path in existing:
        _remove(path)


def set_aside_diverged(directory: Path, first_step: int) -> Path | None:
    """After a divergence: move the step files (or dirs) from `first_step` on (their weights
    give non-finite losses) into `directory/diverged/`, point latest at the newest remaining
    one (or remove it), and return that one, the last good checkpoint."""
    aside = directory / DIVERGED
    for path in step_files(directory):
        if _step_of(path) >= first_step:
            aside.mkdir(parents=True, exist_ok=True)
            _remove(aside / path.name)
            os.replace(path, aside / path.name)
    remaining = sorted(step_files(directory), key=_step_of)
    if remaining:
        _point_latest(remaining[-1])
        return remaining[-1]
    for name in LATEST:
        _remove(directory / name)
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
