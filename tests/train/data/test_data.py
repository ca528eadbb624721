"""The training stream: exactly-once epochs over uneven shards, equal steps on every rank,
exact resume from worker positions, determinism, and the clear errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from tests.support.images import jpeg
from tests.support.shards import write_raw_tar, write_shards
from train.data import stream as data
from train.data.stream import read_samples
from train.data.shards import list_shards
from wit.formats.errors import WitError

UNEVEN = [7, 13, 3, 20, 11, 9, 1, 16]


def settings(batch: int = 4, window: int = 5, text_sampling: str = "fixed") -> data.StreamSettings:
    return data.StreamSettings(seed=3, batch_size=batch, image_size=24, shuffle_window=window, max_pixels=10**8,
                               text_sampling=text_sampling)


def texts(batch_texts: list[str]) -> list[str]:
    return list(batch_texts)


def run_epoch(shards, world, workers, batch, epoch=0, processes=False, window=5, text_sampling="fixed"):
    """{rank: [batch, ...]} for one epoch, its workers in DataLoader processes or in-process."""
    plan = data.plan_epoch(shards, 3, epoch, world, workers, batch)
    out = {}
    for rank in range(world):
        stream = data.EpochStream(plan, rank, 0, None, settings(batch, window, text_sampling), texts)
        out[rank] = list(data.loader(stream, processes, False, 0))
    return plan, out


def test_epoch_sees_every_sample_once_up_to_the_last_partial_global_batch(tmp_path):
    keys = write_shards(tmp_path, UNEVEN)
    shards = list_shards(str(tmp_path))
    world, workers, batch = 2, 3, 4
    plan, out = run_epoch(shards, world, workers, batch)
    assert plan.steps == sum(UNEVEN) // (world * batch)
    assert all(len(batches) == plan.steps for batches in out.values())    # same steps on every rank
    seen = [t for batches in out.values() for b in batches for t in b["tokens"]]
    assert len(seen) == len(set(seen)) == plan.steps * world * batch
    assert len(keys) - len(seen) < world * batch
    assert all(b["counts"]["dropped"] == 0 and b["counts"]["repeated"] == 0 for bs in out.values() for b in bs)


def test_dataloader_workers_give_the_same_stream_as_in_process(tmp_path):
    write_shards(tmp_path, UNEVEN)
    shards = list_shards(str(tmp_path))
    _, inline = run_epoch(shards, 2, 2, 4)
    _, pooled = run_epoch(shards, 2, 2, 4, processes=True)
    for rank in inline:
        assert [b["tokens"] for b in inline[rank]] == [b["tokens"] for b in pooled[rank]]
        assert all(torch.equal(a["images"], b["images"]) for a, b in zip(inline[rank], pooled[rank]))


@pytest.mark.parametrize("start_step", [1, 4, 5, 9])
def test_resume_from_worker_positions_continues_the_exact_stream(tmp_path, start_step):
    write_shards(tmp_path, UNEVEN, broken={"000000004", "000000031"})
    shards = list_shards(str(tmp_path))
    plan = data.plan_epoch(shards, 3, 1, 1, 3, 4)
    full = list(data.EpochStream(plan, 0, 0, None, settings(), texts))
    positions = [0, 0, 0]
    for b in full[:start_step]:
        positions[b["worker"]] = b["position"]
    rest = list(data.loader(data.EpochStream(plan, 0, start_step, positions, settings(), texts), True, False, 0))
    assert [b["tokens"] for b in rest] == [b["tokens"] for b in full[start_step:]]
    assert all(torch.equal(a["images"], b["images"]) for a, b in zip(rest, full[start_step:]))


def test_order_depends_on_seed_and_epoch_only(tmp_path):
    write_shards(tmp_path, UNEVEN)
    shards = list_shards(str(tmp_path))
    order = lambda epoch: [t for b in run_epoch(shards, 1, 2, 4, epoch)[1][0] for t in b["tokens"]]
    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(0)) != order(0)     # shuffled, not in shard order


def test_unusable_samples_are_counted_dropped_and_the_step_count_holds(tmp_path):
    broken = {"000000002", "000000010"}
    write_shards(tmp_path, [6, 6, 6, 6], broken=broken, no_text={"000000003"})
    shards = list_shards(str(tmp_path))
    plan, out = run_epoch(shards, 1, 2, 4)
    batches = out[0]
    assert len(batches) == plan.steps == 6
    assert sum(b["counts"]["repeated"] for b in batches) == 3    # the slots wrapped to fill in for them
    assert sum(b["counts"]["dropped"] for b in batches) >= 3     # (and may meet them again on the way)
    seen = [t for b in batches for t in b["tokens"]]
    numbers = {int(t.rsplit(" ", 1)[1]) for t in seen}
    assert not numbers & {int(k) for k in broken | {"000000003"}}


def test_a_slot_without_usable_samples_is_a_clear_error_not_a_hang(tmp_path):
    keys = write_shards(tmp_path, [4, 4])
    write_shards(tmp_path, [4, 4], broken=set(keys[4:]))   # second shard all broken
    shards = list_shards(str(tmp_path))
    plan = data.plan_epoch([shards[0], shards[1]], 0, 0, 1, 2, 2)
    stream = data.EpochStream(plan, 0, 0, None, settings(batch=2), texts)
    results = list(data.loader(stream, True, False, 0))
    errors = [b["error"] for b in results if "error" in b]
    assert len(errors) == 1 and "no usable sample" in errors[0] and "000001.tar" in errors[0]


def test_fewer_shards_than_ranks_times_workers_is_an_error(tmp_path):
    write_shards(tmp_path, [10, 10, 10])
    shards = list_shards(str(tmp_path))
    with pytest.raises(WitError, match="3 shards for 2 ranks x 2 dataloader workers"):
        data.plan_epoch(shards, 0, 0, 2, 2, 4)
    with pytest.raises(WitError, match="fewer than one global batch"):
        data.plan_epoch(shards, 0, 0, 1, 1, 64)


def test_sizes_come_from_sizes_json_or_the_manifest_never_guessed(tmp_path):
    write_shards(tmp_path, [5, 6])
    sizes = json.loads((tmp_path / "sizes.json").read_text())
    (tmp_path / "sizes.json").unlink()
    with pytest.raises(WitError, match="no sizes.json or manifest.json"):
        list_shards(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": [{"name": n, "samples": s} for n, s in sizes.items()]}))
    assert [s.samples for s in list_shards(str(tmp_path))] == [5, 6]
    brace = list_shards(f"{tmp_path}/{{000000..000001}}.tar")
    assert [(s.url, s.samples) for s in brace] == [(f"{tmp_path}/000000.tar", 5), (f"{tmp_path}/000001.tar", 6)]
    piped = list_shards(f"pipe:cat {tmp_path}/{{000000..000001}}.tar", sizes=str(tmp_path / "manifest.json"))
    assert len(list(read_samples(piped[1].url))) == 6
    globbed = list_shards(f"{tmp_path}/*.tar")
    assert [(s.url, s.samples) for s in globbed] == [(f"{tmp_path}/000000.tar", 5), (f"{tmp_path}/000001.tar", 6)]
    assert [s.samples for s in list_shards(f"file://{tmp_path}/00000[1].tar")] == [6]
    with pytest.raises(WitError, match="no shard file matches"):
        list_shards(f"{tmp_path}/*.tgz")


def test_readers_refuse_path_tricks_links_and_devices(tmp_path):
    path = tmp_path / "000000.tar"
    write_raw_tar(path, [("../evil.jpg", jpeg((1, 2, 3))), ("/abs.txt", b"x"), ("ok.jpg", jpeg((9, 9, 9))),
                         ("ok.txt", b"fine")], device=True)
    counts: Counter = Counter()
    samples = list(read_samples(str(path), counts=counts))
    assert [(s.key, s.text) for s in samples] == [("ok", "fine")]
    assert counts["refused_members"] == 4


def test_a_truncated_shard_is_padded_as_unusable_not_fatal(tmp_path):
    write_shards(tmp_path, [8, 8])
    blob = (tmp_path / "000001.tar").read_bytes()
    (tmp_path / "000001.tar").write_bytes(blob[: len(blob) // 2])
    shards = list_shards(str(tmp_path))
    plan, out = run_epoch(shards, 1, 1, 4)
    assert len(out[0]) == plan.steps == 4
    assert sum(b["counts"]["dropped"] for b in out[0]) >= 3
    assert sum(b["counts"]["truncated_shards"] for b in out[0]) >= 1


def captions_by_sample(out: dict) -> dict[str, str]:
    """{"a COLOUR picture number N": the caption it was trained with} over an epoch's batches."""
    return {t.rsplit(",", 1)[0]: t for batches in out.values() for b in batches for t in b["tokens"]}


def test_per_epoch_text_sampling_draws_each_epoch_and_resumes_exactly(tmp_path):
    """Every caption of a sample is seen over enough epochs; `fixed` keeps the txt part;
    the draw is the same in DataLoader processes, and a resumed epoch continues exactly."""
    write_shards(tmp_path, [3, 3, 3, 3], captions=3)
    shards = list_shards(str(tmp_path))
    seen: dict[str, set[str]] = {}
    for epoch in range(12):
        _, out = run_epoch(shards, 1, 2, 4, epoch=epoch, text_sampling="per_epoch")
        for sample, text in captions_by_sample(out).items():
            seen.setdefault(sample, set()).add(text)
    assert len(seen) == 12 and all(texts == {f"{s}, caption {j}" for j in range(3)} for s, texts in seen.items())
    _, fixed = run_epoch(shards, 1, 2, 4, epoch=0)
    assert all("caption" not in t for b in fixed[0] for t in b["tokens"])
    _, inline = run_epoch(shards, 2, 2, 2, epoch=5, text_sampling="per_epoch")
    _, pooled = run_epoch(shards, 2, 2, 2, epoch=5, processes=True, text_sampling="per_epoch")
    assert {r: [b["tokens"] for b in bs] for r, bs in inline.items()} == \
        {r: [b["tokens"] for b in bs] for r, bs in pooled.items()}
    plan = data.plan_epoch(shards, 3, 4, 1, 2, 4)
    full = list(data.EpochStream(plan, 0, 0, None, settings(text_sampling="per_epoch"), texts))
    positions = [0, 0]
    for b in full[:1]:
        positions[b["worker"]] = b["position"]
    rest = list(data.EpochStream(plan, 0, 1, positions, settings(text_sampling="per_epoch"), texts))
    assert [b["tokens"] for b in rest] == [b["tokens"] for b in full[1:]]
