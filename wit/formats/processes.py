"""How every command ends on SIGINT or SIGTERM: within seconds, with a non-zero status
(128 + the signal: 130, 143), one line saying what was interrupted and that the same
command resumes, and no child process left behind.

`lead(command, body)` runs a command's body as the leader of its processes:
- SIGINT and SIGTERM raise `Interrupted` in the main thread. Before it is raised, every
  descendant (pool workers, img2dataset's processes, the forkserver) is sent SIGTERM, so
  that no pool waits for work that will never finish; after the body has unwound, any that
  is still alive is killed. The resource tracker is left to exit with the leader, as it
  does (it reads until the leader's end of its pipe closes).
- SIGINT reaches the leader only, even when it is sent to the whole group (`_forward_sigint`).
- Whatever handler a library installs (img2dataset's SIGINT handler exits with status 0),
  the signal is also seen through the interpreter's wakeup fd, which every Python-level
  handler writes to: a body that ends "successfully" after such a signal still ends as
  interrupted, so a third-party handler never decides the exit status.
- A body may handle the signals itself (the trainer checkpoints and exits 75): a non-zero
  status it returns is kept.
- The unwinding is bounded. A `multiprocessing.Pool` whose worker was stopped while it held
  the task queue's read lock (an idle worker waiting for a task holds it) never gets it back,
  and `Pool.terminate()` (img2dataset's pool, leaving its `with`) would wait for it forever:
  after a stop signal, that wait gives up after `LOCK_SECONDS`. Whatever else a library's
  cleanup waits for, if the body has not unwound `UNWIND_SECONDS` after the signal, the
  leader stops its descendants, prints its line and exits with 128 + the signal.
"""

from __future__ import annotations

import _thread
import multiprocessing
import multiprocessing.pool
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 3.0
LOCK_SECONDS = 0.5     # a pool's queue lock, after a stop signal
UNWIND_SECONDS = 5.0   # the body's unwinding, after a stop signal
_leading: dict = {}    # the command `lead` runs: its name, whether it resumes, the unwinding's watchdog
QUIET_TRACKER = "ignore:resource_tracker:UserWarning"


class Interrupted(BaseException):
    """A stop signal arrived (a BaseException, so `except Exception` does not swallow it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def lead(command: str, body: Callable[[], int], resumes: bool = True) -> int:
    """Run `body` (which returns the exit status) as described in the module docstring."""
    if QUIET_TRACKER not in sys.warnoptions:   # its leak report, after an interrupt (passed to the tracker it spawns)
        sys.warnoptions.append(QUIET_TRACKER)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    done = threading.Event()
    watcher = threading.Thread(target=_forward_sigint, args=(done,), name="sigint", daemon=True)
    watcher.start()
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    previous_fd = signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    _leading.update(command=command, resumes=resumes, watchdog=None)
    status, signum = 1, None
    try:
        status = body()
    except Interrupted as e:
        signum = e.signum
    except KeyboardInterrupt:   # a library that put Python's default SIGINT handler back
        signum = signal.SIGINT
    except SystemExit as e:   # a library's handler or its sys.exit
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        if _leading.get("watchdog") is not None:   # the body has unwound
            _leading["watchdog"].cancel()
        for sig in STOP_SIGNALS:   # a second signal while cleaning up must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        received = _received(wakeup_r)
        signal.set_wakeup_fd(previous_fd)
        os.close(wakeup_r)
        os.close(wakeup_w)
        if signum is None and status == 0 and received:
            signum = received[0]
        if signum is not None or received:
            stop_descendants()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        done.set()
        signal.pthread_kill(watcher.ident, signal.SIGINT)
        watcher.join(1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if signum is None:
        return status
    _say_interrupted(command, signum, resumes)
    return 128 + signum


def _say_interrupted(command: str, signum: int, resumes: bool) -> None:
    then = "; run the same command again to resume" if resumes else ""
    print(f"{command}: interrupted by {signal.Signals(signum).name}{then}", file=sys.stderr, flush=True)


def _forward_sigint(done: threading.Event) -> None:
    """SIGINT is blocked in the leader, and so in every process it starts (the mask is
    inherited through fork and exec): Ctrl-C, which reaches the whole process group, is
    taken here and handed to the leader's main thread as if it had arrived there; its
    workers never see it (no traceback from each), and are stopped by the leader."""
    while True:
        signal.sigwait({signal.SIGINT})
        if done.is_set():
            return
        _thread.interrupt_main(signal.SIGINT)


def _interrupt(signum, frame) -> None:
    for sig in STOP_SIGNALS:   # once: the unwinding is not interrupted again
        signal.signal(sig, signal.SIG_IGN)
    multiprocessing.pool.Pool._help_stuff_finish = staticmethod(_help_stuff_finish)
    if _leading.get("command") and _leading.get("watchdog") is None:
        watchdog = threading.Timer(UNWIND_SECONDS, _give_up, args=(signum,))
        watchdog.daemon = True
        watchdog.start()
        _leading["watchdog"] = watchdog
    _signal_descendants(signal.SIGTERM)
    raise Interrupted(signum)


def _help_stuff_finish(inqueue, task_handler, size) -> None:
    """`multiprocessing.pool.Pool._help_stuff_finish` (drain the task queue so that the task
    handler is not left blocked on it), but giving up on the queue's read lock after
    LOCK_SECONDS: a worker stopped while it held the lock never releases it."""
    if not inqueue._rlock.acquire(timeout=LOCK_SECONDS):
        return
    while task_handler.is_alive() and inqueue._reader.poll():
        inqueue._reader.recv()
        time.sleep(0)


def _give_up(signum: int) -> None:
    """The body has not unwound UNWIND_SECONDS after a stop signal (a library's cleanup
    waits for something that a stopped process will never do): stop every descendant, say
    so, and end the process now."""
    stop_descendants(grace=1.0)
    _say_interrupted(_leading["command"], signum, _leading["resumes"])
    os._exit(128 + signum)


def _received(fd: int) -> list[int]:
    """The stop signals written to the wakeup fd, in order."""
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
    except BlockingIOError:
        pass
    return [s for s in data if s in STOP_SIGNALS]


def _signal_descendants(sig: int) -> list[psutil.Process]:
    """Send `sig` to every descendant but the resource tracker, which exits by itself when
    the leader does (and unlinks what the others leaked; killed, it would be relaunched)."""
    try:
        children = [c for c in psutil.Process().children(recursive=True) if not _is_resource_tracker(c)]
    except psutil.Error:
        return []
    for child in children:
        try:
            child.send_signal(sig)
        except psutil.Error:
            pass
    return children


def stop_descendants(grace: float = GRACE_SECONDS) -> None:
    """SIGTERM to every descendant, then SIGKILL to those that ignore it (the resource
    tracker, dataloader workers) or are alive after `grace` seconds; repeated while new ones
    appear (a pool replaces its dead workers until it is shut down)."""
    for _ in range(5):
        children = _signal_descendants(signal.SIGTERM)
        if not children:
            return
        deaf = [c for c in children if _ignores(c, signal.SIGTERM)]
        _kill(deaf)
        _, alive = psutil.wait_procs(children, timeout=grace)
        _kill(alive)
        psutil.wait_procs(alive, timeout=grace)


def _is_resource_tracker(process: psutil.Process) -> bool:
    try:
        return any("multiprocessing.resource_tracker" in part for part in process.cmdline())
    except psutil.Error:
        return False


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass


def _ignores(process: psutil.Process, sig: int) -> bool:
    """Whether `process` ignores `sig` (the SigIgn mask of /proc/PID/status)."""
    try:
        with open(f"/proc/{process.pid}/status", encoding="ascii") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(mask >> (sig - 1) & 1)


def worker_pool(workers: int, preload: str, initializer: Callable | None = None,
                initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """A pool of `workers` processes forked from a server that has imported `preload` once
    (fork-safe, no per-worker imports). The workers leave SIGINT to their leader: Ctrl-C
    reaches the whole process group, and the leader stops them (`lead`)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                               initargs=(initializer, initargs))


def _start_worker(initializer: Callable | None, initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
