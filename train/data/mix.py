"""The training stream over several data sources (`data: [{shards, weight}, ...]`), or over
shards sampled with replacement (`resampled: true`): the same interface and resumable
state as `stream.TrainStream`, which stays the stream of one source read epoch by epoch.

The draw: the global batch of step k holds each source in proportion to its weight, and
each of its positions (rank * local batch + j) gets its source from (seed, k, position)
alone (`batch_sources`); every batch mixes the sources, none comes from one source.

Each source keeps its own plan (`stream.plan_epoch` with its own seed): per epoch every
(rank, dataloader worker) owns one contiguous slot of its samples, read in shuffle
windows by `stream.worker_batches`; a worker's slot of a source that runs out moves on
to that source's next epoch, independently of the other sources and workers. With
`resampled`, a worker's "epoch" of a source is instead a draw, with replacement, of as
many of its shards as a worker would own, by (source seed, round, slot): OpenCLIP's
--dataset-resampled, made deterministic and resumable.

Step k is served by dataloader worker k % W, which pulls, for each source, as many
samples from its slot as the step's positions of this rank drew, and lays them out in
position order. A worker's place in a source is (epoch, position, samples taken), and
the places of every worker of every rank are all a checkpoint needs to resume exactly."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import posixpath
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from train import dist
from train.config import DataSource
from train.data.shards import Shard, list_shards
from train.data.stream import (COUNTS, Segment, Slot, StreamSettings, loader, plan_epoch, round_robin,
                               worker_batches)
from train.dist import World
from wit.formats.errors import WitError

log = logging.getLogger("train.data")
MIX_DRAW, SOURCE_SEED, RESAMPLE = 0x6D6978, 0x737263, 0x727364   # tags that keep these draws apart


@dataclass(frozen=True)
class Source:
    """One data source as the stream reads it: its shards, weight and own seed (its shard
    order, shuffle windows, crops and per-epoch captions)."""
    name: str
    shards: tuple[Shard, ...]
    weight: float
    seed: int
    resampled: bool

    def slot(self, epoch: int, rank: int, worker: int, world: int, workers: int) -> Slot:
        """What (rank, worker) reads of this source in its `epoch`: its slot of the epoch's
        plan (one sample per "batch"), or, resampled, a draw with replacement of as many
        whole shards as a worker would own."""
        if not self.resampled:
            return plan_epoch(list(self.shards), self.seed, epoch, world, workers, 1).slots[rank][worker]
        index = rank * workers + worker
        picks = np.random.default_rng([self.seed, RESAMPLE, epoch, index]).integers(
            len(self.shards), size=max(1, len(self.shards) // (world * workers)))
        segments = tuple(Segment(self.shards[i].url, 0, self.shards[i].samples) for i in picks
                         if self.shards[i].samples)
        return Slot(index, segments, sum(s.count for s in segments))


def load_sources(specs: tuple[DataSource, ...], seed: int, world: int, workers: int,
                 resampled: bool) -> list[Source]:
    """The sources of `specs` with their shards, checked for this many ranks x workers; an
    error is one line naming the source."""
    workers = max(1, workers)
    sources = []
    for i, (spec, name) in enumerate(zip(specs, source_names([s.shards for s in specs]))):
        try:
            if _plain_path(spec.shards) and not os.path.exists(spec.shards):
                raise WitError("no such directory")
            shards = tuple(list_shards(spec.shards, spec.sizes))
            total = sum(s.samples for s in shards)
            if total < (1 if resampled else world * workers):
                raise WitError(f"the shards hold {total} samples, fewer than one per dataloader worker "
                               f"({world} ranks x {workers} workers)")
            source = Source(name, shards, spec.weight, source_seed(seed, i), resampled)
            if not resampled:
                plan_epoch(list(shards), source.seed, 0, world, workers, 1)
        except WitError as e:
            raise WitError(f"data source {name} ({spec.shards}): {e}") from None
        sources.append(source)
    return sources


def _plain_path(spec: str) -> bool:
    """Whether `spec` names one local path (no url, `pipe:` command, glob or brace pattern)."""
    return "://" not in spec and not spec.startswith("pipe:") and not any(c in spec for c in "*?[{")


def source_seed(seed: int, index: int) -> int:
    """The seed of source number `index` of a run seeded `seed`."""
    return int(np.random.SeedSequence([seed, SOURCE_SEED, index]).generate_state(1)[0])


def source_names(specs: list[str]) -> list[str]:
    """A name per source: the basename of its dir (of the dir its shard pattern or `pipe:`
    command reads), made unique with -2, -3... in order."""
    names: list[str] = []
    for spec in specs:
        words = [w for w in spec.split() if w.endswith(".tar")] if spec.startswith("pipe:") else [spec]
        path = (words[-1] if words else spec).rstrip("/")
        base = posixpath.basename(path)
        if base.endswith(".tar") or any(c in base for c in "*?[{"):
            base = posixpath.basename(posixpath.dirname(path))
        base = base or "data"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def batch_sources(seed: int, step: int, global_batch: int, weights: list[float]) -> np.ndarray:
    """The source of every position of the global batch of `step`, a pure function of
    (seed, step, position): the points (i + u) / B of [0, 1), with u drawn by (seed, step),
    fall into the sources' shares of [0, 1), so each source fills the floor or the ceiling
    of B x its share (u decides which); a permutation drawn by (seed, step) deals them out
    to the positions, so each position draws source s with probability its share."""
    if len(weights) == 1:
        return np.zeros(global_batch, np.int64)
    rng = np.random.default_rng([seed, MIX_DRAW, step])
    u = rng.random()
    edges = np.cumsum(weights) / np.sum(weights)
    drawn = np.searchsorted(edges, (np.arange(global_batch) + u) / global_batch, side="right")
    return np.minimum(drawn, len(weights) - 1)[rng.permutation(global_batch)]


def source_samples(source: Source, rank: int, worker: int, world: int, workers: int, place: list[int],
                   settings: StreamSettings) -> Iterator[tuple[dict, list[int]]]:
    """(rank, worker)'s samples of `source` from `place` ([epoch, position in the slot,
    samples taken]) on, epoch after epoch: each as a one-sample batch of
    `stream.worker_batches` (its image, caption and counts), with the place after it."""
    epoch, position, taken = place
    settings = dataclasses.replace(settings, seed=source.seed, batch_size=1)
    while True:
        slot = source.slot(epoch, rank, worker, world, workers)
        for one in worker_batches(slot, epoch, position, taken, settings, _as_is, worker):
            taken += 1
            yield one, [epoch, one["position"], taken]
        epoch, position, taken = epoch + 1, 0, 0


def _as_is(texts: list[str]) -> list[str]:
    return texts


class MixBatches(IterableDataset):
    """One rank's mixed batches from run step `start` on, each worker from its `places`
    ([worker][source] = [epoch, position, taken]). DataLoader worker i serves logical
    worker (start + i) % W, whose steps are those k with k % W equal to it."""

    def __init__(self, sources: list[Source], rank: int, world: int, workers: int, start: int,
                 places: list[list[list[int]]], settings: StreamSettings, tokenize: Callable):
        self.sources, self.rank, self.world, self.workers, self.start = sources, rank, world, workers, start
        self.places, self.settings, self.tokenize = places, settings, tokenize

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is None:   # in-process: all logical workers round-robin here
            yield from round_robin([self._worker((self.start + i) % self.workers) for i in range(self.workers)])
        else:
            yield from self._worker((self.start + info.id) % self.workers)

    def _worker(self, w: int) -> Iterator[dict]:
        local = self.settings.batch_size
        places = [list(p) for p in self.places[w]]
        readers = [source_samples(s, self.rank, w, self.world, self.workers, p, self.settings)
                   for s, p in zip(self.sources, places)]
        weights = [s.weight for s in self.sources]
        mine = slice(self.rank * local, (self.rank + 1) * local)
        for step in itertools.count(self.start + (w - self.start) % self.workers, self.workers):
            drawn = batch_sources(self.settings.seed, step, local * self.world, weights)[mine]
            images, texts, counts = [], [], Counter()
            try:
                for s in drawn:
                    one, places[s] = next(readers[s])
                    images.append(one["images"])
                    texts += one["tokens"]
                    counts.update(one["counts"])
            except WitError as e:
                yield {"error": f"rank {self.rank} worker {w}: data source {self.sources[s].name}: {e}"}
                return
            yield {"images": torch.cat(images), "tokens": self.tokenize(texts), "worker": w,
                   "places": [list(p) for p in places], "counts": {key: counts[key] for key in COUNTS},
                   "sources": np.bincount(drawn, minlength=len(self.sources)).tolist()}


class MixStream:
    """One rank's batches of a mixed (or resampled) run and its place in them: the run
    step, every dataloader worker's place in every source, the counts (COUNTS) and the
    samples taken from each source. The interface of `stream.TrainStream`."""

    def __init__(self, sources: list[Source], settings: StreamSettings, world: World, workers: int,
                 tokenize: Callable):
        self.sources, self.settings, self.world, self.tokenize = sources, settings, world, tokenize
        self.names = [s.name for s in sources]
        self.processes, self.workers = workers > 0, max(1, workers)   # 0: the workers run in-process
        self.step = 0
        self.places = [[[0, 0, 0] for _ in sources] for _ in range(self.workers)]
        self.counts = dict.fromkeys(COUNTS, 0)
        self.seen = [0] * len(sources)

    @property
    def epoch(self) -> int:
        """The lowest epoch any worker of this rank is in, over the sources: every source
        has been read through this many times."""
        return min(place[0] for worker in self.places for place in worker)

    def __iter__(self) -> Iterator[dict]:
        """The batches from the current place on; `advance` moves the place past each one."""
        batches = MixBatches(self.sources, self.world.rank, self.world.size, self.workers, self.step,
                             [[list(p) for p in worker] for worker in self.places], self.settings, self.tokenize)
        yield from loader(batches, self.processes, self.world.device.type == "cuda", self.settings.seed)

    def advance(self, batch: dict) -> None:
        self.step += 1
        self.places[batch["worker"]] = [list(p) for p in batch["places"]]
        for key, n in batch["counts"].items():
            self.counts[key] += int(n)
        self.seen = [a + int(b) for a, b in zip(self.seen, batch["sources"])]

    def totals(self) -> dict:
        """The counts and the samples taken from each source (`sources`: {name: samples}),
        summed over the ranks (every rank must call it)."""
        t = torch.tensor([*self.counts.values(), *self.seen], dtype=torch.float64, device=self.world.device)
        if self.world.size > 1:
            torch.distributed.all_reduce(t)
        values = [int(v) for v in t.tolist()]
        return {**dict(zip(self.counts, values)), "sources": dict(zip(self.names, values[len(self.counts):]))}

    def state_dict(self) -> dict:
        """The place, with every rank's places, counts and samples per source (every rank
        must call it)."""
        ranks = dist.gather_objects((self.places, dict(self.counts), list(self.seen)), self.world)
        return {"sources": list(self.names), "step": self.step, "places": [r[0] for r in ranks],
                "counts": [r[1] for r in ranks], "seen": [r[2] for r in ranks], "world_size": self.world.size,
                "workers": self.workers}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` stopped: sample-exact with the same sources and ranks x
        workers; with other ranks x workers at the same step, each source from the start
        of a new epoch (after the newest one any worker was in), rank 0 carrying the
        counts on. Other sources (names, in order) are refused."""
        saved = state.get("sources")
        if saved is None:
            raise WitError("resume: the checkpoint's data stream reads `shards` epoch by epoch, this run mixes "
                           f"data sources ({', '.join(self.names)}) or resamples; use the checkpoint's data "
                           "settings or a new run_dir")
        if list(saved) != self.names:
            raise WitError(f"resume: the data sources were {', '.join(saved)} in the checkpoint, now "
                           f"{', '.join(self.names)}; use the checkpoint's sources (their weights may change) "
                           "or a new run_dir")
        self.step = state["step"]
        if state["world_size"] == self.world.size and state["workers"] == self.workers:
            self.places = [[list(p) for p in worker] for worker in state["places"][self.world.rank]]
            self.counts = {key: state["counts"][self.world.rank].get(key, 0) for key in COUNTS}
            self.seen = list(state["seen"][self.world.rank])
            return
        newest = [max(worker[s][0] for rank in state["places"] for worker in rank) for s in range(len(self.names))]
        log.warning("the checkpoint was written by %d ranks x %d workers, this run has %d x %d: the data "
                    "stream resumes at step %d, each source from the start of its next epoch (%s), not "
                    "sample-exact", state["world_size"], state["workers"], self.world.size, self.workers,
                    self.step, ", ".join(f"{n} {e + 1}" for n, e in zip(self.names, newest)))
        self.places = [[[e + 1, 0, 0] for e in newest] for _ in range(self.workers)]
        if self.world.is_main:
            self.counts = {key: sum(c.get(key, 0) for c in state["counts"]) for key in COUNTS}
            self.seen = [sum(r[s] for r in state["seen"]) for s in range(len(self.names))]
        else:
            self.counts, self.seen = dict.fromkeys(COUNTS, 0), [0] * len(self.names)

