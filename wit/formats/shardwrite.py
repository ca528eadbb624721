"""Writing the files of a SHARDS dir: a shard copied from the members of source tars
(`SourceTars`, `write_shard`), its file hashed on its way to disk, and the plot of the data
distribution over the query list (`wit shard`, `wit filter`)."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO, Iterable

import numpy as np

from wit.formats.atomic import atomic_path
from wit.formats.errors import WitError
from wit.formats.shards import shard_name
from wit.formats.tars import Member, read_member, tar_chunks

Sample = tuple[str, list[tuple[str, bytes]]]   # (key, [(extension, bytes), ...])


class SourceTars:
    """The tars a new shard copies members from, each opened once and closed at the end; a
    member that is no longer where the index found it is a WitError naming the tar (it
    changed while `command` ran)."""

    def __init__(self, command: str) -> None:
        self.command, self.files = command, {}

    def read(self, tar: str, key: str, offset: int, size: int) -> bytes:
        f: BinaryIO = self.files.get(tar) or self.files.setdefault(tar, open(tar, "rb"))
        try:
            return read_member(f, Member(key, offset, size))
        except EOFError as e:
            raise WitError(f"{tar}: changed while `{self.command}` ran ({e})") from None

    def __enter__(self) -> "SourceTars":
        return self

    def __exit__(self, *exc) -> None:
        for f in self.files.values():
            f.close()


def write_shard(directory: str, index: int, samples: Iterable[Sample]) -> tuple[int, dict]:
    """Shard `index` of a SHARDS dir from its samples; (index, its manifest entry)."""
    count = 0

    def counted():
        nonlocal count
        for sample in samples:
            count += 1
            yield sample

    name = shard_name(index)
    size, digest = write_shard_file(os.path.join(directory, name), counted())
    return index, {"name": name, "samples": count, "bytes": size, "sha256": digest}


def write_shard_file(path: str, samples: Iterable[tuple[str, list[tuple[str, bytes]]]]) -> tuple[int, str]:
    """Write a deterministic tar of (key, [(extension, bytes), ...]) samples atomically at
    `path`; its size in bytes and sha256."""
    with atomic_path(path) as tmp, ShardFile(tmp) as shard_file:
        for chunk in tar_chunks(samples):
            shard_file.write(chunk)
    return shard_file.size, shard_file.digest.hexdigest()


class ShardFile:
    """A new file written in gathered `writev`s, hashed on the way (no second read), sent
    to disk while the rest is computed, and on disk (fsync) when it closes."""

    GATHER_BYTES, GATHER_CHUNKS, WRITEBACK_BYTES = 256 << 10, 256, 8 << 20

    def __init__(self, path: str) -> None:
        self.fd, self.digest, self.size = os.open(path, os.O_WRONLY), hashlib.sha256(), 0
        self.gathered: list[bytes] = []
        self.pending = self.synced = self.dropped = 0

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.gathered.append(chunk)
        self.pending += len(chunk)
        if self.pending >= self.GATHER_BYTES or len(self.gathered) == self.GATHER_CHUNKS:
            self._flush()

    def _flush(self) -> None:
        if not self.gathered:
            return
        done = os.writev(self.fd, self.gathered)
        if done < self.pending:  # a short write: finish it
            rest = memoryview(b"".join(self.gathered))[done:]
            while rest:
                rest = rest[os.write(self.fd, rest):]
        self.size += self.pending
        self.gathered, self.pending = [], 0
        if self.size - self.synced >= self.WRITEBACK_BYTES:
            # DONTNEED starts the writeback of the new dirty pages and drops the pages of
            # the step before (on disk by now) from the page cache
            os.posix_fadvise(self.fd, self.dropped, self.size - self.dropped, os.POSIX_FADV_DONTNEED)
            self.dropped, self.synced = self.synced, self.size

    def __enter__(self) -> "ShardFile":
        return self

    def __exit__(self, kind, *_) -> None:
        try:
            if kind is None:
                self._flush()
                os.fsync(self.fd)  # on disk before it gets its name and its marker
                os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(self.fd)


def plot_distribution(curves: dict[str, np.ndarray], cap: int, path: str) -> None:
    """Log-log plot of per-query counts by rank (MetaCLIP's figure), one curve per
    {label: counts}, e.g. before and after balancing, with the cap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.13, 0.13, 0.82, 0.78))
    for label, counts in curves.items():
        values = np.sort(counts[counts > 0])[::-1]
        if len(values):
            axes.loglog(np.arange(1, len(values) + 1), values, label=label)
    axes.axhline(cap, color="grey", linestyle="--", linewidth=1, label=f"cap t = {cap:,}")
    axes.set_xlabel("query rank")
    axes.set_ylabel("pairs per query")
    axes.set_title("Pairs per query")
    axes.legend()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})


def plot_languages(languages: dict[str, dict], path: str, top: int = 40) -> None:
    """Bar chart of the samples per language before and after the cap (a worldwide crawl's
    data card; the `top` languages with the most downloaded samples, largest first)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ranked = sorted(languages.items(), key=lambda kv: (-kv[1]["samples"]["downloaded"], kv[0]))[:top]
    figure = Figure(figsize=(9, 1.6 + 0.3 * max(len(ranked), 1)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    rows = np.arange(len(ranked))
    for shift, key, label in ((-0.2, "downloaded", "downloaded (before the cap)"), (0.2, "kept", "kept (after the cap)")):
        axes.barh(rows + shift, [max(entry["samples"][key], 0) for _, entry in ranked], height=0.4, label=label)
    axes.set_yticks(rows, [f"{lang} (t = {entry['t']:,.0f})" for lang, entry in ranked])
    axes.invert_yaxis()
    axes.set_xlabel("samples")
    axes.set_title("Samples per language")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)   # beside the bars, never over them
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
