"""Mixing data sources and resampled shards: every global batch holds each source by its
weight, drawn from (seed, step, position) alone and laid out in position order; exact
resume in the middle of a source's epoch; shards drawn with replacement; a changed worker
count continues at the same step; the clear errors, naming the source."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.shards import write_shards
from train.config import DataSource
from train.data import mix, stream as data
from train.data.shards import list_shards
from train.dist import World
from wit.formats.errors import WitError

CPU = World(0, 1, 0, torch.device("cpu"))
SEED = 3
B_START = 1000   # source b's sample numbers start here


def settings(batch: int = 8, seed: int = SEED) -> data.StreamSettings:
    return data.StreamSettings(seed=seed, batch_size=batch, image_size=24, shuffle_window=5, max_pixels=10**8)


def number(text: str) -> int:
    return int(text.rsplit(" ", 1)[1])


def as_is(texts: list[str]) -> list[str]:
    return list(texts)


@pytest.fixture
def two(tmp_path) -> tuple[Path, Path]:
    """Source a: 42 samples (0..41) in 4 shards; source b: 22 samples (1000..1021) in 4."""
    write_shards(tmp_path / "a", [10, 12, 9, 11])
    write_shards(tmp_path / "b", [6, 5, 7, 4], start=B_START)
    return tmp_path / "a", tmp_path / "b"


def sources(dirs_weights, world=1, workers=2, resampled=False, seed=SEED) -> list[mix.Source]:
    return mix.load_sources(tuple(DataSource(str(d), w) for d, w in dirs_weights), seed, world, workers, resampled)


def take(stream: mix.MixStream, n: int) -> list[dict]:
    """The next n batches of the stream, each advanced past."""
    out = []
    for batch in itertools.islice(stream, n):
        assert "error" not in batch, batch["error"]
        stream.advance(batch)
        out.append(batch)
    return out


def same_batches(a: list[dict], b: list[dict]) -> bool:
    return ([x["tokens"] for x in a] == [y["tokens"] for y in b]
            and all(torch.equal(x["images"], y["images"]) for x, y in zip(a, b)))


@pytest.mark.parametrize("weights,batch", [([3, 1], 16), ([1, 1, 1], 16), ([5, 2, 1], 64)])
def test_every_global_batch_holds_each_source_by_its_weight(weights, batch):
    share = np.array(weights) / sum(weights)
    drawn = np.stack([mix.batch_sources(7, step, batch, weights) for step in range(400)])
    counts = np.stack([np.bincount(d, minlength=len(weights)) for d in drawn])
    assert (counts >= np.floor(batch * share)).all() and (counts <= np.ceil(batch * share)).all()
    assert (counts > 0).all()                                     # never a batch of one source
    assert np.abs(counts.mean(axis=0) / batch - share).max() < 0.01
    for s, p in enumerate(share):   # each position draws its source by weight, over the steps
        per_position = (drawn == s).mean(axis=0)
        assert np.abs(per_position - p).max() < 4.5 * np.sqrt(p * (1 - p) / len(drawn))
    assert len({tuple(d) for d in drawn}) > len(drawn) * 3 // 4   # positions are dealt anew every step


def test_the_draw_is_a_function_of_seed_step_and_position_only():
    draw = lambda seed, step: mix.batch_sources(seed, step, 32, [2, 1]).tolist()  # noqa: E731
    assert draw(0, 5) == draw(0, 5)
    assert draw(0, 5) != draw(1, 5) and draw(0, 5) != draw(0, 6)
    assert (mix.batch_sources(0, 5, 32, [1]) == 0).all()


def test_each_batch_lays_out_its_draw_in_position_order_over_both_ranks(two):
    a, b = two
    srcs = sources([(a, 3), (b, 1)], world=2, workers=2)
    ranks = [mix.MixStream(srcs, settings(batch=4), World(r, 2, 0, torch.device("cpu")), 2, as_is) for r in (0, 1)]
    out = [take(stream, 10) for stream in ranks]
    for step in range(10):
        numbers = [number(t) for r in (0, 1) for t in out[r][step]["tokens"]]
        assert [int(n >= B_START) for n in numbers] == mix.batch_sources(SEED, step, 8, [3, 1]).tolist()
        assert [x + y for x, y in zip(out[0][step]["sources"], out[1][step]["sources"])] == [6, 2]
    seen = [number(t) for r in (0, 1) for batch in out[r] for t in batch["tokens"]]
    assert sum(n < B_START for n in seen) == 60 and sum(n >= B_START for n in seen) == 20
    for r, stream in enumerate(ranks):   # per rank and worker, a source's epoch 0 is its slot, read once
        for w in (0, 1):
            slot = srcs[0].slot(0, r, w, 2, 2)
            mine = [number(t) for batch in out[r] if batch["worker"] == w for t in batch["tokens"]
                    if number(t) < B_START][:slot.samples]
            keys = {int(k) for seg in slot.segments for k in _keys(seg)}
            assert len(mine) == slot.samples and set(mine) == keys
        assert stream.places[0][0][0] >= 1 and stream.epoch == 0   # a's workers moved on, b is in epoch 0


def _keys(segment: data.Segment) -> list[str]:
    return [s.key for s in itertools.islice(data.read_samples(segment.url, segment.first), segment.count)]


def test_same_settings_same_batches_in_process_or_in_workers_and_another_seed_others(two):
    a, b = two
    srcs = sources([(a, 2), (b, 1)])
    batches = lambda srcs, processes, seed=SEED: list(itertools.islice(data.loader(  # noqa: E731
        mix.MixBatches(srcs, 0, 1, 2, 0, [[[0, 0, 0]] * 2] * 2, settings(seed=seed), as_is), processes, False, 0), 9))
    inline, pooled = batches(srcs, False), batches(srcs, True)
    assert same_batches(inline, pooled)
    reseeded = batches(sources([(a, 2), (b, 1)], seed=4), False, seed=4)
    assert [x["tokens"] for x in reseeded] != [x["tokens"] for x in inline]


@pytest.mark.parametrize("stop", [3, 9])   # a mid-epoch; a in its second epoch and b mid-epoch
def test_a_resumed_mix_continues_exactly(two, stop):
    a, b = two
    srcs = sources([(a, 3), (b, 1)])
    straight = mix.MixStream(srcs, settings(), CPU, 2, as_is)
    reference = take(straight, 14)
    first = mix.MixStream(srcs, settings(), CPU, 2, as_is)
    take(first, stop)
    state = first.state_dict()
    epoch_of_a, _, taken_of_a = state["places"][0][0][0]        # worker 0's place in a: mid-epoch
    assert 0 < taken_of_a < srcs[0].slot(epoch_of_a, 0, 0, 1, 2).samples and epoch_of_a == (stop > 7)
    resumed = mix.MixStream(srcs, settings(), CPU, 2, as_is)
    resumed.load_state_dict(json.loads(json.dumps(state)))   # plain values, as a checkpoint holds them
    assert same_batches(take(resumed, 14 - stop), reference[stop:])
    assert resumed.totals() == straight.totals() == {**dict.fromkeys(data.COUNTS, 0), "sources": {"a": 84, "b": 28}}
    assert resumed.state_dict() == straight.state_dict()


def test_resampled_shards_are_drawn_with_replacement_and_resume_exactly(two):
    a, _ = two
    srcs = sources([(a, 1)], workers=2, resampled=True)
    straight = mix.MixStream(srcs, settings(), CPU, 2, as_is)
    reference = take(straight, 12)    # 96 samples of a source of 42
    seen = [number(t) for batch in reference for t in batch["tokens"]]
    assert len(set(seen[:42])) < 42 and set(seen) <= set(range(42))
    slot = srcs[0].slot(0, 0, 0, 1, 2)
    sizes = {s.url: s.samples for s in list_shards(str(a))}
    assert all(seg.first == 0 and seg.count == sizes[seg.url] for seg in slot.segments)   # whole shards
    assert len({tuple(srcs[0].slot(e, 0, 0, 1, 2).segments) for e in range(8)}) > 1
    first = mix.MixStream(srcs, settings(), CPU, 2, as_is)
    take(first, 5)
    resumed = mix.MixStream(srcs, settings(), CPU, 2, as_is)
    resumed.load_state_dict(first.state_dict())
    assert same_batches(take(resumed, 7), reference[5:])


def test_resampled_needs_no_shard_per_worker(tmp_path):
    write_shards(tmp_path / "one", [12])
    srcs = sources([(tmp_path / "one", 1)], workers=3, resampled=True)
    seen = [number(t) for batch in take(mix.MixStream(srcs, settings(batch=4), CPU, 3, as_is), 9) for t in batch["tokens"]]
    assert len(seen) == 36 and set(seen) == set(range(12))
    with pytest.raises(WitError, match="data source one .*1 shards for 1 ranks x 3 dataloader workers"):
        sources([(tmp_path / "one", 1)], workers=3)


def test_another_worker_count_on_resume_continues_at_the_same_step(two, caplog):
    a, b = two
    srcs = sources([(a, 3), (b, 1)])
    first = mix.MixStream(srcs, settings(), CPU, 2, as_is)
    take(first, 4)
    state = first.state_dict()
    resumed = mix.MixStream(sources([(a, 3), (b, 1)], workers=1), settings(), CPU, 0, as_is)
    with caplog.at_level(logging.WARNING, logger="train.data"):
        resumed.load_state_dict(state)
    assert "1 ranks x 2 workers, this run has 1 x 1" in caplog.text and "not sample-exact" in caplog.text
    assert resumed.step == 4 and resumed.places == [[[1, 0, 0], [1, 0, 0]]]
    batches = take(resumed, 3)
    assert [b_["sources"] for b_ in batches] == [np.bincount(mix.batch_sources(SEED, k, 8, [3, 1])).tolist()
                                                 for k in (4, 5, 6)]
    assert resumed.totals()["sources"] == {"a": 42, "b": 14}


def test_other_sources_or_another_stream_kind_on_resume_are_refused(two):
    a, b = two
    mixed = mix.MixStream(sources([(a, 3), (b, 1)]), settings(), CPU, 2, as_is)
    take(mixed, 2)
    state = mixed.state_dict()
    reweighted = mix.MixStream(sources([(a, 1), (b, 1)]), settings(), CPU, 2, as_is)
    reweighted.load_state_dict(state)   # weights may change
    assert reweighted.step == 2
    with pytest.raises(WitError, match="the data sources were a, b in the checkpoint, now b, a"):
        mix.MixStream(sources([(b, 1), (a, 3)]), settings(), CPU, 2, as_is).load_state_dict(state)
    single = data.TrainStream(list_shards(str(a)), settings(), CPU, 2, as_is)
    with pytest.raises(WitError, match=r"mixes data sources \(a, b\) or resamples, this run reads `shards`"):
        single.load_state_dict(state)
    with pytest.raises(WitError, match="reads `shards` epoch by epoch, this run mixes data sources"):
        mixed.load_state_dict(single.state_dict())


def test_a_bad_source_is_a_one_line_error_naming_it(tmp_path, two):
    a, _ = two
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "sizes.json").write_text("{garbage")
    write_shards(tmp_path / "small", [1, 0, 0])
    for name, expected in (("nope", "no such directory"), ("bad", "cannot read the shard sizes"),
                           ("small", "1 samples, fewer than one per dataloader worker (1 ranks x 2 workers)")):
        with pytest.raises(WitError) as caught:
            sources([(a, 1), (tmp_path / name, 1)], workers=2)
        message = str(caught.value)
        assert message.startswith(f"data source {name} ({tmp_path}/{name}): ") and expected in message
        assert "\n" not in message


def test_sources_are_named_by_their_dir_made_unique():
    assert mix.source_names(["/x/laion", "/y/laion/", "/z/laion/{000..009}.tar", "pipe:curl -s http://h/cc/{0..3}.tar",
                             "s3://b/laion/*.tar"]) == ["laion", "laion-2", "laion-3", "cc", "laion-4"]
