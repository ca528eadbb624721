"""The training stream: a deterministic, resumable plan of which samples each rank and
dataloader worker reads in each epoch, and the workers that turn them into batches.

Plan for epoch e (a pure function of the shard list, seed, e, world size, workers and
batch size):
- the shards are permuted by (seed, e) and laid end to end;
- the epoch has `steps = samples // global_batch` steps; step k of a rank is served by
  its worker k % W, so worker w owns ceil((steps - w) / W) batches;
- each (rank, worker) slot reads one contiguous range of that sequence, of exactly the
  samples its batches need, so all slots are disjoint, every rank runs the same number
  of steps, and an epoch sees every sample once, up to the last partial global batch;
- inside a slot, windows of `shuffle_window` samples are shuffled by
  (seed, e, slot, window), and each sample's crop offsets come from the same draw.

A worker's position (samples of its sequence consumed) is all a checkpoint needs to
resume it exactly. An unusable sample is counted and skipped; a slot that runs short
wraps to its start (counted as repeats), so the step count never changes."""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import signal
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from train import images
from train.errors import TrainError
from train.shards import Sample, Shard, read_samples

log = logging.getLogger("train.data")


@dataclass(frozen=True)
class Segment:
    url: str
    first: int    # first sample of the shard in this segment
    count: int


@dataclass(frozen=True)
class Slot:
    """What one dataloader worker of one rank reads in one epoch."""
    index: int               # rank * workers + worker
    segments: tuple[Segment, ...]
    batches: int

    @property
    def samples(self) -> int:
        return sum(s.count for s in self.segments)


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    steps: int
    slots: tuple[tuple[Slot, ...], ...]   # [rank][worker]


def plan_epoch(shards: list[Shard], seed: int, epoch: int, world: int, workers: int,
               local_batch: int) -> EpochPlan:
    """The deterministic plan of one epoch (see the module docstring)."""
    workers = max(1, workers)
    if len(shards) < world * workers:
        raise TrainError(f"{len(shards)} shards for {world} ranks x {workers} dataloader workers: "
                         f"each worker needs a shard of its own; write more, smaller shards "
                         f"(wit shard --samples-per-shard) or set fewer workers")
    total = sum(s.samples for s in shards)
    steps = total // (world * local_batch)
    if steps == 0:
        raise TrainError(f"the shards hold {total} samples, fewer than one global batch of "
                         f"{world * local_batch}")
    order = np.random.default_rng([seed, epoch]).permutation(len(shards))
    sequence = [shards[i] for i in order]
    bounds = cumulative(sequence)
    slots, start = [], 0
    for rank in range(world):
        row = []
        for w in range(workers):
            batches = batches_of(w, steps, workers)
            count = batches * local_batch
            row.append(Slot(rank * workers + w, span(sequence, start, count, bounds), batches))
            start += count
        slots.append(tuple(row))
    return EpochPlan(epoch, steps, tuple(slots))


def batches_of(worker: int, steps: int, workers: int) -> int:
    """How many of steps 0..steps-1 worker `worker` serves (step k is worker k % workers's)."""
    return max(0, math.ceil((steps - worker) / workers))


def cumulative(sequence: list[Shard]) -> list[int]:
    """Where each shard starts when the shards are laid end to end (and the total, last)."""
    return [0, *itertools.accumulate(s.samples for s in sequence)]


def span(sequence: list[Shard], start: int, count: int, bounds: list[int] | None = None) -> tuple[Segment, ...]:
    """The parts of the shards covering samples [start, start + count) of the sequence laid
    end to end (`bounds`: its `cumulative`, when already known); only those shards are visited."""
    bounds = cumulative(sequence) if bounds is None else bounds
    out, end = [], start + count
    i = bisect.bisect_right(bounds, start) - 1
    while i < len(sequence) and bounds[i] < end:
        a, b = max(bounds[i], start), min(bounds[i + 1], end)
        if a < b:
            out.append(Segment(sequence[i].url, a - bounds[i], b - a))
        i += 1
    return tuple(out)


@dataclass(frozen=True)
class StreamSettings:
    seed: int
    batch_size: int          # per rank
    image_size: int
    shuffle_window: int
    max_pixels: int


def worker_batches(slot: Slot, epoch: int, position: int, done_batches: int, settings: StreamSettings,
                   tokenize: Callable, worker: int) -> Iterator[dict]:
    """The remaining batches of `slot`, starting `position` samples into its sequence, after
    `done_batches` of its batches were already consumed. Each batch carries the position
    after its last sample, and the samples dropped and repeated since the previous batch."""
    if slot.batches == 0:
        return
    length, b = slot.samples, settings.batch_size
    images_, texts = [], []
    dropped = repeated = 0
    since_usable = 0
    stats: dict = {}
    cycle, offset = divmod(position, length)
    while done_batches < slot.batches:
        window = (offset // settings.shuffle_window) * settings.shuffle_window
        cursor = _raw_samples(slot, window, stats)
        while window < length and done_batches < slot.batches:
            n = min(settings.shuffle_window, length - window)
            raw = list(itertools.islice(cursor, n))
            rng = np.random.default_rng([settings.seed, epoch, slot.index, window // settings.shuffle_window])
            order = rng.permutation(n)
            crops = rng.random((n, 2))
            for j in range(offset - window, n):
                position += 1
                sample = raw[order[j]] if order[j] < len(raw) else None
                image = _usable(sample, settings, tuple(crops[j]))
                if image is None:
                    dropped += 1
                    since_usable += 1
                    if since_usable >= length:
                        raise TrainError(f"no usable sample in the {length} samples of this worker's shards "
                                         f"({', '.join(sorted({s.url for s in slot.segments})[:3])}...)")
                    continue
                since_usable = 0
                repeated += cycle > 0
                images_.append(image)
                texts.append(sample.text)
                if len(images_) == b:
                    yield {"images": torch.stack(images_), "tokens": tokenize(texts), "worker": worker,
                           "position": position, "dropped": dropped, "repeated": repeated,
                           "unsafe_members": stats.pop("unsafe_members", 0)}
                    images_, texts, dropped, repeated = [], [], 0, 0
                    done_batches += 1
                    if done_batches == slot.batches:
                        return
            window += n
            offset = window
        cycle, offset = cycle + 1, 0     # the slot ran short: wrap to its start


def _raw_samples(slot: Slot, start: int, stats: dict) -> Iterator[Sample | None]:
    """The slot's samples in plan order from sample `start`; a shard that holds fewer
    samples than sizes.json says is padded with None (counted as unusable)."""
    seen = 0
    for seg in slot.segments:
        if seen + seg.count <= start:
            seen += seg.count
            continue
        skip = max(0, start - seen)
        got = 0
        for sample in itertools.islice(read_samples(seg.url, seg.first + skip, stats), seg.count - skip):
            got += 1
            yield sample
        if got < seg.count - skip:
            log.warning("%s: ended after %d of the %d samples sizes.json lists from there (truncated or "
                        "unreadable); the rest count as dropped", seg.url, got, seg.count - skip)
        yield from itertools.repeat(None, seg.count - skip - got)
        seen += seg.count


def _usable(sample: Sample | None, settings: StreamSettings, crop: tuple[float, float]) -> torch.Tensor | None:
    if sample is None or sample.image is None or not sample.text or not sample.text.strip():
        return None
    try:
        return images.decode(sample.image, settings.image_size, settings.max_pixels, crop)
    except images.ImageError:
        return None


class EpochStream(IterableDataset):
    """One rank's batches for one epoch, resumable at step `start_step` of the epoch from
    the per-worker `positions`. DataLoader worker i serves logical worker (start_step + i) % W,
    so the round-robin over workers continues where it stopped."""

    def __init__(self, plan: EpochPlan, rank: int, start_step: int, positions: list[int] | None,
                 settings: StreamSettings, tokenize: Callable):
        self.plan, self.rank, self.start_step = plan, rank, start_step
        self.slots = plan.slots[rank]
        self.positions = positions or [0] * len(self.slots)
        self.settings, self.tokenize = settings, tokenize

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        workers = len(self.slots)
        if info is None:   # in-process: all logical workers round-robin here
            streams = [self._stream((self.start_step + i) % workers) for i in range(workers)]
            yield from _round_robin(streams)
        else:
            yield from self._stream((self.start_step + info.id) % workers)

    def _stream(self, w: int) -> Iterator[dict]:
        done = batches_of(w, self.start_step, len(self.slots))
        try:
            yield from worker_batches(self.slots[w], self.plan.epoch, self.positions[w], done,
                                      self.settings, self.tokenize, w)
        except TrainError as e:
            yield {"error": f"rank {self.rank} worker {w}: {e}"}


def _round_robin(streams: list[Iterator[dict]]) -> Iterator[dict]:
    active = list(streams)
    while active:
        for stream in list(active):
            try:
                yield next(stream)
            except StopIteration:
                active.remove(stream)


def loader(stream: EpochStream, processes: bool, pin_memory: bool, seed: int) -> DataLoader | EpochStream:
    """The rank's batch iterator: a DataLoader with one process per planned worker, or the
    stream itself, all workers in-process, when `processes` is false."""
    if not processes:
        return stream
    return DataLoader(stream, batch_size=None, num_workers=len(stream.slots), pin_memory=pin_memory,
                      prefetch_factor=2, persistent_workers=False, worker_init_fn=_ignore_stop_signals,
                      generator=torch.Generator().manual_seed(seed))


def _ignore_stop_signals(worker_id: int) -> None:
    """SLURM signals every process of a task before its time limit; the workers must live on
    while the training process checkpoints (they exit with it)."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
