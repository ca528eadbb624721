"""One writer per output: an exclusive lock that a second run on the same output is refused
with, naming the process that holds it.

The lock is a POSIX record lock (`fcntl.lockf`) on a small file beside the output
(`.NAME.lock`), holding the owner's pid, host and start time for the message. Why this
mechanism:
- the kernel drops the lock when its process dies, however it dies (kill -9 included), so
  a stale lock never needs cleaning up: the next run simply takes it and resumes;
- POSIX locks are what NFS implements across machines (NLM for v3, part of the protocol in
  v4), so it also holds where SLURM jobs on several nodes write to one shared file system;
  when a node is lost, the server frees its locks once the client's lease expires
  (NFSv4: 90 s by default). `flock` is emulated with the same locks on Linux NFS, and
  O_EXCL lock files or pid files need a liveness check that cannot see across machines;
- it is not inherited by child processes, so workers never keep a dead leader's lock.
A lock file is removed by its owner when the run ends; a run that opens a file that was
just removed (and so locks a file nobody else can see) notices and tries again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time

from wit.formats.errors import WitError


class Busy(WitError):
    """The output is being written by another live run."""


class OutputLock:
    """An exclusive lock on `path` (a lock file); `what` names the output in messages."""

    def __init__(self, path: str, what: str) -> None:
        self.path, self.what = path, what
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        """Take the lock now, or raise Busy naming its holder (never waits)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EACCES, errno.EAGAIN):
                    raise WitError(f"{self.path}: cannot lock {self.what} ({e.strerror})") from None
                raise Busy(f"{self.what}: another run is writing it ({self._holder()}); wait for it to end or "
                           f"stop it, then run again") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)   # locked a file its previous owner had just removed: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def _holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                owner = json.load(f)
            return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that is starting"

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
