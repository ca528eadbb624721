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
  (seed, e, slot, window), and each sample's crop offsets come from the same draw;
- a sample's caption is its `txt`, or with `text_sampling: per_epoch` one of its json's
  `texts` drawn by (seed, e, uid).

A worker's position (samples of its sequence consumed) is all a checkpoint needs to
resume it exactly. An unusable sample is counted and skipped; a slot that runs short
wraps to its start (counted as repeats), so the step count never changes. Tars are read
by `wit.formats.tars` (its grouping, safety rules and image choice); `TrainStream` is
the run's data stream over the epochs, with its resumable state. Several sources, or
shards drawn with replacement: `train.data.mix`, built on this plan."""

from __future__ import annotations

import bisect
import itertools
import json
import logging
import math
import signal
from collections import Counter
from dataclasses import dataclass
from tarfile import TarError   # what a damaged stream raises from wit.formats.tars.stream_samples
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from train import dist
from train.data import preprocess as images
from train.dist import World
from train.data.shards import Shard
from wit.formats import tars
from wit.formats.balance import pick
from wit.formats.errors import WitError
from wit.formats.images import ImageRefused
from wit.formats.uids import is_uid

log = logging.getLogger("train.data")
COUNTS = ("dropped", "repeated", "refused_members", "truncated_shards")   # what a batch reports
SAMPLE_PARTS = (*tars.IMAGE_EXTENSIONS, "txt", "json")


@dataclass(frozen=True)
class Sample:
    key: str
    image: bytes | None
    text: str | None
    meta: bytes | None


def read_samples(url: str, skip: int = 0, counts: Counter | None = None) -> Iterator[Sample]:
    """The samples of one tar in order, from sample number `skip` on, as
    `wit.formats.tars.stream_samples` reads them (its safety rules and image choice); the
    caption is the `txt` part, `meta` the `json` part. Refused and dropped members are
    added to `counts["refused_members"]`; a damaged tar ends the iteration (counted in
    `counts["truncated_shards"]`)."""
    counts = Counter() if counts is None else counts
    try:
        stream = tars.open_url(url)
    except FileNotFoundError:
        raise WitError(f"{url}: shard listed in sizes.json is missing") from None
    except OSError as e:
        raise WitError(f"{url}: cannot open the shard ({e})") from None
    refused: Counter[str] = Counter()
    try:
        with stream:
            for sample in tars.stream_samples(stream, SAMPLE_PARTS, skip, refused):
                text = sample.parts.get("txt")
                yield Sample(sample.key, sample.image, None if text is None else text.decode("utf-8", "replace"),
                             sample.parts.get("json"))
    except (TarError, EOFError, OSError):
        counts["truncated_shards"] += 1
    finally:
        counts["refused_members"] += sum(refused.values())


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
        raise WitError(f"{len(shards)} shards for {world} ranks x {workers} dataloader workers: "
                         f"each worker needs a shard of its own; write more, smaller shards "
                         f"(wit shard --samples-per-shard) or set fewer workers")
    total = sum(s.samples for s in shards)
    steps = total // (world * local_batch)
    if steps == 0:
        raise WitError(f"the shards hold {total} samples, fewer than one global batch of "
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
    text_sampling: str = "fixed"   # or per_epoch: one of a sample's json `texts` per (seed, epoch, uid)


def caption(sample: Sample, settings: StreamSettings, epoch: int) -> str:
    """The text a sample is trained with: its `txt` part, or with `per_epoch` one of the
    `texts` of its json (image-centric crawls), drawn by (seed, epoch, uid), so that each
    epoch may see another caption of the image and a resumed run sees the same one."""
    if settings.text_sampling != "per_epoch" or not sample.meta:
        return sample.text
    try:
        meta = json.loads(sample.meta)
    except (ValueError, RecursionError):
        return sample.text
    texts, uid = (meta.get("texts"), meta.get("uid")) if isinstance(meta, dict) else (None, None)
    if not isinstance(texts, list) or not texts or not is_uid(uid):
        return sample.text
    key = np.array([int(uid[:16], 16)], np.uint64)
    chosen = texts[int(pick(key, np.array([len(texts)]), settings.seed, round=epoch + 1)[0])]
    text = chosen.get("text") if isinstance(chosen, dict) else None
    return text if isinstance(text, str) and text.strip() else sample.text


def worker_batches(slot: Slot, epoch: int, position: int, done_batches: int, settings: StreamSettings,
                   tokenize: Callable, worker: int) -> Iterator[dict]:
    """The remaining batches of `slot`, starting `position` samples into its sequence, after
    `done_batches` of its batches were already consumed. Each batch carries the position
    after its last sample, and its `counts` (COUNTS) since the previous batch."""
    if slot.batches == 0:
        return
    length, b = slot.samples, settings.batch_size
    images_, texts = [], []
    dropped = repeated = 0
    since_usable = 0
    found: Counter[str] = Counter()   # refused members and truncated shards, from the reader
    cycle, offset = divmod(position, length)
    while done_batches < slot.batches:
        window = (offset // settings.shuffle_window) * settings.shuffle_window
        cursor = _raw_samples(slot, window, found)
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
                        raise WitError(f"no usable sample in the {length} samples of this worker's shards "
                                         f"({', '.join(sorted({s.url for s in slot.segments})[:3])}...)")
                    continue
                since_usable = 0
                repeated += cycle > 0
                images_.append(image)
                texts.append(caption(sample, settings, epoch))
                if len(images_) == b:
                    yield {"images": torch.stack(images_), "tokens": tokenize(texts), "worker": worker,
                           "position": position, "counts": {"dropped": dropped, "repeated": repeated,
                           **{key: found.pop(key, 0) for key in COUNTS[2:]}}}
                    images_, texts, dropped, repeated = [], [], 0, 0
                    done_batches += 1
                    if done_batches == slot.batches:
                        return
            window += n
            offset = window
        cycle, offset = cycle + 1, 0     # the slot ran short: wrap to its start


def _raw_samples(slot: Slot, start: int, counts: Counter) -> Iterator[Sample | None]:
    """The slot's samples in plan order from sample `start`; a shard that holds fewer
    samples than sizes.json says is padded with None (counted as unusable)."""
    seen = 0
    for seg in slot.segments:
        if seen + seg.count <= start:
            seen += seg.count
            continue
        skip = max(0, start - seen)
        got = 0
        for sample in itertools.islice(read_samples(seg.url, seg.first + skip, counts), seg.count - skip):
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
    except ImageRefused:
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
            yield from round_robin(streams)
        else:
            yield from self._stream((self.start_step + info.id) % workers)

    @property
    def workers(self) -> int:
        return len(self.slots)

    def _stream(self, w: int) -> Iterator[dict]:
        done = batches_of(w, self.start_step, len(self.slots))
        try:
            yield from worker_batches(self.slots[w], self.plan.epoch, self.positions[w], done,
                                      self.settings, self.tokenize, w)
        except WitError as e:
            yield {"error": f"rank {self.rank} worker {w}: {e}"}


def round_robin(streams: list[Iterator[dict]]) -> Iterator[dict]:
    """The streams' items in turn, each stream until it ends."""
    active = list(streams)
    while active:
        for stream in list(active):
            try:
                yield next(stream)
            except StopIteration:
                active.remove(stream)


def loader(stream: IterableDataset, processes: bool, pin_memory: bool, seed: int) -> DataLoader | IterableDataset:
    """The rank's batch iterator: a DataLoader with one process per planned worker (the
    stream's `workers`), or the stream itself, all workers in-process, when `processes` is
    false."""
    if not processes:
        return stream
    return DataLoader(stream, batch_size=None, num_workers=stream.workers, pin_memory=pin_memory,
                      prefetch_factor=2, persistent_workers=False, worker_init_fn=_ignore_stop_signals,
                      generator=torch.Generator().manual_seed(seed))


def _ignore_stop_signals(worker_id: int) -> None:
    """SLURM signals every process of a task before its time limit, and Ctrl-C the whole
    process group; the workers must live on while the training process checkpoints (they
    exit with it)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


class TrainStream:
    """One rank's batches of the run, epoch after epoch, and its place in them: the epoch,
    the step inside it, each dataloader worker's position and the counts (COUNTS)."""

    def __init__(self, shards: list[Shard], settings: StreamSettings, world: World, workers: int,
                 tokenize: Callable):
        self.shards, self.settings, self.world, self.tokenize = shards, settings, world, tokenize
        self.processes, self.workers = workers > 0, max(1, workers)   # 0: the workers run in-process
        self.epoch = self.epoch_step = 0
        self.positions = [0] * self.workers
        self.counts = dict.fromkeys(COUNTS, 0)

    def __iter__(self) -> Iterator[dict]:
        """The batches from the current place on; `advance` moves the place past each one."""
        while True:
            plan = plan_epoch(self.shards, self.settings.seed, self.epoch, self.world.size, self.workers,
                              self.settings.batch_size)
            stream = EpochStream(plan, self.world.rank, self.epoch_step, list(self.positions), self.settings,
                                 self.tokenize)
            yield from loader(stream, self.processes, self.world.device.type == "cuda", self.settings.seed)
            self.epoch, self.epoch_step, self.positions = self.epoch + 1, 0, [0] * self.workers

    def advance(self, batch: dict) -> None:
        self.epoch_step += 1
        self.positions[batch["worker"]] = batch["position"]
        for key, n in batch["counts"].items():
            self.counts[key] += int(n)

    def totals(self) -> dict[str, int]:
        """The counts summed over the ranks (every rank must call it)."""
        t = torch.tensor(list(self.counts.values()), dtype=torch.float64, device=self.world.device)
        if self.world.size > 1:
            torch.distributed.all_reduce(t)
        return {key: int(v) for key, v in zip(self.counts, t.tolist())}

    def state_dict(self) -> dict:
        """The place, with every rank's positions and counts (every rank must call it)."""
        ranks = dist.gather_objects((list(self.positions), dict(self.counts)), self.world)
        return {"epoch": self.epoch, "epoch_step": self.epoch_step, "positions": [r[0] for r in ranks],
                "counts": [r[1] for r in ranks], "world_size": self.world.size, "workers": self.workers}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` stopped: sample-exact with the same ranks x workers; else at
        the same step of the epoch, each worker past the batches it served, rank 0 carrying
        the counts on."""
        if "sources" in state:
            raise WitError(f"resume: the checkpoint's data stream mixes data sources ({', '.join(state['sources'])}) "
                           "or resamples, this run reads `shards` epoch by epoch; use the checkpoint's data "
                           "settings or a new run_dir")
        self.epoch, self.epoch_step = state["epoch"], state["epoch_step"]
        if state["world_size"] == self.world.size and state["workers"] == self.workers:
            self.positions = list(state["positions"][self.world.rank])
            self.counts = {key: state["counts"][self.world.rank].get(key, 0) for key in COUNTS}
            return
        log.warning("the checkpoint was written by %d ranks x %d workers, this run has %d x %d: the data "
                    "stream resumes at the same step of epoch %d, but not sample-exact",
                    state["world_size"], state["workers"], self.world.size, self.workers, self.epoch)
        self.positions = [batches_of(w, self.epoch_step, self.workers) * self.settings.batch_size
                          for w in range(self.workers)]
        totals = {key: sum(c.get(key, 0) for c in state["counts"]) for key in COUNTS}
        self.counts = totals if self.world.is_main else dict.fromkeys(COUNTS, 0)
