"""Atomic output: a file is written under a temporary name beside its target, flushed to
disk, then renamed over it, so a reader sees the whole old file or the whole new one; a
directory is swapped with another in one step. And the readers every stage shares: a
file's sha256, a JSON object."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

from wit.formats.errors import WitError

if TYPE_CHECKING:
    import pyarrow as pa

_UMASK = os.umask(0)
os.umask(_UMASK)
TEMPORARY_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """A temporary path beside `path`; when the block succeeds the file is synced to disk
    and renamed to `path` (with the usual 0666-less-umask permissions), else removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMPORARY_SUFFIX)
    os.close(fd)
    try:
        yield tmp
        sync_path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A file object whose contents replace `path` atomically when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
        yield f


def sync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(directory: str | os.PathLike) -> None:
    """Delete the temporary files a killed writer left in `directory` (only ours: `.NAME.*.tmp`)."""
    for tmp in Path(directory).glob(f".*{TEMPORARY_SUFFIX}"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, value: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
        f.write("\n")


def write_parquet(path: str | os.PathLike, table: "pa.Table") -> None:
    import pyarrow.parquet as pq   # here: the trainer imports this module, and needs no pyarrow

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def file_sha256(path: str | os.PathLike, what: str) -> str:
    """The sha256 of a file, or a WitError naming it and `what` it is."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise WitError(f"{path}: no such {what}") from None
    except OSError as e:
        raise WitError(f"{path}: cannot read the {what} ({e.strerror or e})") from None


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_json_object(path: str | os.PathLike, what: str) -> dict:
    """A JSON object from a regular file, or a WitError naming the file and the problem."""
    path = str(path)
    if not os.path.isfile(path):
        raise WitError(f"{path}: {'missing' if not os.path.lexists(path) else 'not a regular file'} ({what})")
    try:
        value = read_json(path)
    except RecursionError:
        raise WitError(f"{path}: unreadable {what} (nested too deeply)") from None
    except (OSError, ValueError) as e:
        raise WitError(f"{path}: unreadable {what} ({e})") from None
    if not isinstance(value, dict):
        raise WitError(f"{path}: {what} must be a JSON object, not {type(value).__name__}")
    return value


_RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def exchange_dirs(a: str | os.PathLike, b: str | os.PathLike) -> None:
    """Swap the directories `a` and `b` in one step (Linux renameat2 RENAME_EXCHANGE): a
    reader, or a kill, sees either both old or both new, never neither."""
    at_fdcwd = -100
    result = _libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) \
        if hasattr(_libc, "renameat2") else -1
    if result != 0:
        code = ctypes.get_errno() if hasattr(_libc, "renameat2") else errno.ENOSYS
        raise WitError(f"{b}: cannot swap in the new output from {a} ({os.strerror(code)}); "
                       "the old output is intact")
    sync_path(os.path.dirname(os.path.abspath(b)))   # the rename itself, on disk
