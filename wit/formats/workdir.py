"""How every data stage claims its output dir, records finished units of work and resumes.

A stage builds its output in `.NAME.partial` beside the output dir NAME and moves it into
place when it is complete, in one step (a rename, or an exchange with the old output under
`overwrite`, which is then deleted; `.NAME.swap` records which side is new while they
are exchanged). So the output dir holds a complete output or none: a kill, a full disk
or bad input never leave a mix, and the next run finishes an interrupted move. The build
dir holds, besides the
stage's files, `.wit/`:
- `claim.json`: the stage and the fingerprint of the settings that decide the output;
- `units/UNIT.json`: written last for each finished unit of work: its counters and the
  files it wrote (a unit whose files are all present is not done again);
- `scratch/`: intermediate files, removed when the stage completes;
- `complete.json`: the stage's summary.
One run at a time builds an output: `claim` takes the lock `.NAME.lock` beside it
(`wit.formats.locks`) first, so a second run on the same output is refused at once, naming
the process that holds it; a lock left by a dead process is taken over, and that run resumes.
A rerun with the same settings resumes the build dir, or finds the output complete and
does nothing (with `overwrite` too: it would be the same); a complete output made with
other settings is refused, naming the settings that differ, unless `overwrite`; a non-empty
dir that is not this stage's output is refused.
Bad input removes the build dir; any other failure keeps its finished units for a rerun.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from wit import __version__
from wit.formats.atomic import exchange_dirs, read_json, remove_temporaries, write_json
from wit.formats.errors import Unfinished, WitError
from wit.formats.locks import OutputLock

log = logging.getLogger("wit.work")
STATE = ".wit"


@dataclass(frozen=True)
class Unit:
    """A unit of work: its marker's name, the task's arguments (or a function giving them,
    called only when the unit must run), the files it writes (relative to the output dir)
    and its weight on the progress bar."""
    name: str
    args: tuple | Callable[[], tuple]
    files: tuple[str, ...] | list[str] = ()
    size: float = 1


@dataclass(frozen=True)
class Ran:
    """What `WorkDir.run_units` did: every unit's counters by name (in the order of the
    units) and how many units an earlier run had finished."""
    counters: dict[str, Any]
    resumed: int


class WorkDir:
    """A stage's claim on its output dir. Write to `path(...)`, not to the dir the user
    named: the output is built beside it."""

    def __init__(self, out: str, root: str, stage: str, fingerprint: dict) -> None:
        self.out, self.root, self.stage, self.fingerprint = out, root, stage, fingerprint

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def scratch(self, *parts: str) -> str:
        return os.path.join(self.root, STATE, "scratch", *parts)

    def _unit(self, unit: str) -> str:
        return os.path.join(self.root, STATE, "units", f"{unit}.json")

    def done(self, unit: str) -> Any | None:
        """The counters of a finished unit, or None if it must be done (again)."""
        marker = self._unit(unit)
        if not os.path.exists(marker):
            return None
        record = read_json(marker)
        if not all(os.path.exists(self.path(f)) for f in record["files"]):
            return None
        return record["counters"]

    def mark_done(self, unit: str, counters: Any, files: tuple[str, ...] | list[str] = ()) -> None:
        """Record a unit as finished (after its files are written), with the files it wrote
        (relative to the output dir) and its counters."""
        write_json(self._unit(unit), {"counters": counters, "files": list(files)})

    def run_units(self, units: Iterable[Unit], task: Callable, pool: Executor | None = None, *, desc: str,
                  what: str, finish: Callable[[Unit, Any], Any] | None = None, in_flight: int = 0,
                  unit: str = "unit", total: float | None = None,
                  rate: Callable[[dict], str] | None = None) -> Ran:
        """Every unit's counters: those finished before read back, the others computed as `task(*unit.args)` in `pool` (here when None) and marked
        done as each finishes (after `finish(unit, result)`, which may write files here and
        returns the counters; default: the result). At most `in_flight` tasks wait in the
        pool when given (`units` is then read lazily). A progress bar shows the units (by
        `size`, out of `total` or all of them) with `rate(per_second)` after it: the sums of
        this run's counters per second. The log says how many `what` were done before (e.g.
        "partitions matched")."""
        results: dict[str, Any] = {}
        pending: dict[Future, Unit] = {}
        totals: dict = {}
        order: list[str] = []
        resumed = 0
        started = time.time()
        bar = tqdm(desc=desc, unit=unit, mininterval=1.0, dynamic_ncols=True, total=None,
                   unit_scale=unit == "B")

        def record(u: Unit, counters: Any, fresh: bool) -> None:
            results[u.name] = counters
            bar.update(u.size)
            if rate is not None and fresh and isinstance(counters, dict):
                for key, value in counters.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        totals[key] = totals.get(key, 0) + value
                elapsed = max(time.time() - started, 1e-9)
                bar.set_postfix_str(rate({k: v / elapsed for k, v in totals.items()}), refresh=False)

        def collect(keep: int) -> None:
            while len(pending) > keep:
                finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in finished:
                    u = pending.pop(future)
                    counters = finish(u, future.result()) if finish else future.result()
                    self.mark_done(u.name, counters, u.files)
                    record(u, counters, True)

        units = list(units) if not in_flight else units
        bar.total = total if total is not None else sum(u.size for u in units) if isinstance(units, list) else None
        try:
            for u in units:
                order.append(u.name)
                counters = self.done(u.name)
                if counters is not None:
                    resumed += 1
                    record(u, counters, False)
                    continue
                args = u.args() if callable(u.args) else u.args
                if pool is None:
                    result = task(*args)
                    counters = finish(u, result) if finish else result
                    self.mark_done(u.name, counters, u.files)
                    record(u, counters, True)
                    continue
                if in_flight:
                    collect(in_flight - 1)
                pending[pool.submit(task, *args)] = u
            collect(0)
        except Exception:
            # queued tasks are dropped on an error; not on a signal: the leader is stopping the
            # workers, and a pool whose workers died fails every future itself (Python 3.11's
            # raises InvalidStateError in its manager thread on one already cancelled, and hangs)
            for future in pending:
                future.cancel()
            raise
        finally:
            bar.close()
        if resumed:
            log.info("%d of %d %s before", resumed, len(order), what)
        return Ran({name: results[name] for name in order}, resumed)

    def units(self) -> list[str]:
        directory = os.path.join(self.root, STATE, "units")
        return sorted(n[:-5] for n in os.listdir(directory) if n.endswith(".json")) \
            if os.path.isdir(directory) else []

    def complete(self) -> dict | None:
        """The summary of a finished run of this claim, or None."""
        marker = os.path.join(self.root, STATE, "complete.json")
        return read_json(marker) if os.path.exists(marker) else None

    def finish(self, summary: dict) -> None:
        """Mark the output complete, drop the scratch files and move the output into place
        (swapping out and deleting an old one)."""
        write_json(os.path.join(self.root, STATE, "complete.json"), summary)
        shutil.rmtree(self.scratch(), ignore_errors=True)
        if self.root == self.out:
            return
        if _claim_of(self.out) is None:          # missing or empty
            os.replace(self.root, self.out)
        else:
            swap = _beside(self.out, "swap")     # says which side is new, should a kill come now
            write_json(swap, read_json(os.path.join(self.root, STATE, "claim.json")))
            exchange_dirs(self.root, self.out)   # the old output is now at self.root
            replaced = _beside(self.out, "replaced")
            os.replace(self.root, replaced)
            os.unlink(swap)
            shutil.rmtree(replaced)
        self.root = self.out

    def abandon(self, bad_input: bool) -> None:
        """After a failure: remove the build dir on bad input or when nothing was finished
        in it yet; otherwise keep its finished units for a rerun."""
        if self.root != self.out and (bad_input or not self.units()) and os.path.isdir(self.root):
            shutil.rmtree(self.root)


def sum_counters(values: list) -> Any:
    """Counters of several units added up: numbers summed, dicts key by key, lists joined."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: sum_counters([v.get(k) for v in present]) for k in keys}
    if present and all(isinstance(v, list) for v in present):
        return [x for v in present for x in v]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return sum(present)
    return present[0] if present else None


@contextmanager
def claim(out: str, stage: str, fingerprint: dict, overwrite: bool = False,
          inputs: tuple[str, ...] = (), revise: bool = False, lock: bool = True) -> Iterator[WorkDir]:
    """Claim `out` for `stage` (see the module docstring); on an error inside the block the
    claim is abandoned (`WorkDir.abandon`). `revise` changes a complete output made with
    these settings: the build dir starts as a copy of it (hard links, so a file must be
    replaced, never written in place) without its `complete.json`, and is moved into place
    like any other. `lock: False` is for the other processes of a run whose leader holds
    the lock (the ranks of `wit embed` under torchrun)."""
    out = os.path.normpath(out)
    if os.path.ismount(out):
        raise WitError(f"{out}: is a mount point, and the output is built beside it and moved into place; "
                       f"give a directory inside it (e.g. {os.path.join(out, 'NAME')})")
    with OutputLock(_beside(out, "lock"), out) if lock else nullcontext():
        yield from _claimed(out, stage, fingerprint, overwrite, inputs, revise)


def _claimed(out: str, stage: str, fingerprint: dict, overwrite: bool, inputs: tuple[str, ...],
             revise: bool) -> Iterator[WorkDir]:
    identity = json.loads(json.dumps({"stage": stage, "fingerprint": fingerprint, "version": __version__}))
    _refuse_overlap(out, inputs)
    _recover_swap(out)
    previous = _claim_of(out)
    if previous is not None and previous.get("stage") != stage:
        raise WitError(f"{out}: holds the output of `wit {previous.get('stage')}`, not of `wit {stage}`; "
                       "use another --out")
    if revise and previous != identity:
        raise WitError(f"{out}: holds no complete `wit {stage}` output made with these settings to revise")
    if previous == identity and revise:
        _link_copy(out, _beside(out, "partial"), identity)
    elif previous == identity:   # the same settings and inputs give the same output
        log.info("%s is complete: nothing to do", out)
        yield WorkDir(out, out, stage, identity["fingerprint"])
        return
    elif previous is not None and not overwrite:
        before, now = previous.get("fingerprint") or {}, identity["fingerprint"]
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        changed += ["version"] if previous.get("version") != identity["version"] else []
        raise WitError(f"{out}: holds a `wit {stage}` output made with other settings or inputs "
                       f"({', '.join(changed)}); use another --out, or --overwrite to replace it")
    work = _open(out, _beside(out, "partial"), identity)
    if work.complete() is not None:          # built before, killed before it was moved into place
        work.finish(work.complete())
    try:
        yield work
    except BaseException as e:
        work.abandon(isinstance(e, WitError) and not isinstance(e, Unfinished))
        raise


def _recover_swap(out: str) -> None:
    """Finish what a kill interrupted in `finish`: after the exchange, the build dir holds
    the old output (removed); before it, the build dir is the complete new output (kept,
    so a run with its settings moves it into place)."""
    swap = _beside(out, "swap")
    if os.path.exists(swap):
        if _claim_of(out) == read_json(swap):
            _remove_if_exists(_beside(out, "partial"))
        os.unlink(swap)
    _remove_if_exists(_beside(out, "replaced"))
    _remove_if_exists(_beside(out, "linking"))


def _link_copy(out: str, root: str, identity: dict) -> None:
    """Start the build dir of a revision as a hard-link copy of `out` (unless a killed
    revision left one with this claim)."""
    if _claim_of(root, ours=True) == identity:
        return
    _remove_if_exists(root)
    linking = _beside(out, "linking")
    _remove_if_exists(linking)
    shutil.copytree(out, linking, copy_function=os.link)
    os.unlink(os.path.join(linking, STATE, "complete.json"))
    os.replace(linking, root)


def _open(out: str, root: str, identity: dict) -> WorkDir:
    """The build dir: resumed when it holds the same claim, else started afresh."""
    claimed = _claim_of(root, ours=True)
    if claimed is not None and claimed != identity:
        log.warning("%s: left by an unfinished run with other settings; starting afresh", root)
        shutil.rmtree(root)
        claimed = None
    if claimed is not None:
        remove_temporaries_below(root)
        log.info("resuming in %s", root)
    else:
        os.makedirs(os.path.join(root, STATE), exist_ok=True)
        write_json(os.path.join(root, STATE, "claim.json"), identity)
    return WorkDir(out, root, identity["stage"], identity["fingerprint"])


def _claim_of(directory: str, ours: bool = False) -> dict | None:
    """The claim of an output dir of some stage, None for a missing or empty dir (or, `ours`,
    a build dir without a claim); an error for anything else (a file, a dir of other files)."""
    if not os.path.lexists(directory):
        return None
    if not os.path.isdir(directory) or os.path.islink(directory):
        raise WitError(f"{directory}: exists and is not a directory")
    claim_file = os.path.join(directory, STATE, "claim.json")
    if not os.path.exists(claim_file):
        if ours:
            shutil.rmtree(directory)   # a build dir killed before its claim was written
            return None
        if os.listdir(directory):
            raise WitError(f"{directory}: not empty and not an output of this toolkit; use an empty or new "
                           "--out (nothing in it is touched)")
        return None
    try:
        value = read_json(claim_file)
    except (OSError, ValueError) as e:
        raise WitError(f"{claim_file}: unreadable claim ({e}); use another --out") from None
    if not isinstance(value, dict):
        raise WitError(f"{claim_file}: unreadable claim (not an object); use another --out")
    return value


def _beside(out: str, what: str) -> str:
    parent, name = os.path.split(os.path.abspath(out))
    return os.path.join(parent, f".{name}.{what}")


def _remove_if_exists(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)


def _refuse_overlap(out: str, inputs: tuple[str, ...]) -> None:
    """--out must not be, contain or lie inside an input dir."""
    target = os.path.realpath(out)
    for given in inputs:
        source = os.path.realpath(given)
        if target == source or target.startswith(source + os.sep) or source.startswith(target + os.sep):
            raise WitError(f"{out}: --out must not be, contain or lie inside the input {given}")


def remove_temporaries_below(root: str) -> None:
    """The temporary files killed writers left anywhere in an output dir."""
    for directory, _, _ in os.walk(root):
        remove_temporaries(directory)
