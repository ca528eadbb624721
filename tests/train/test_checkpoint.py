"""Checkpoints (`train.checkpoint`): the newest kept and `latest` at the last, each part
saved under its name and restored in order, low-precision optimizer state and the RNG
state through weights-only checkpoints; damaged ones skipped; step dirs (a sharded run's)
found, set aside and removed like step files; a checkpoint of the other layout refused.
The sharded checkpoints themselves are tested with real processes in test_fsdp.py."""

from __future__ import annotations

import os

import pytest
import torch

from tests.support.checkpoints import train_config
from train import checkpoint, optim
from train.model import clip as models
from train.dist import World
from wit.formats.errors import WitError


@pytest.mark.slow
def test_low_precision_optimizer_state_round_trips_through_a_weights_only_checkpoint(tmp_path, tiny_model):
    pytest.importorskip("torchao")
    cfg = train_config(tiny_model, optimizer_state="8bit")
    model = models.create(cfg.model)
    optimization = optim.build(model, cfg)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimization.step()
    checkpoint.save(tmp_path, 1, {"optimizer": optimization.state_dict()}, keep=0)
    loaded = torch.load(tmp_path / "latest.pt", weights_only=True)
    fresh = optim.build(model, cfg)
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.schedule.last_epoch == 1 and fresh.lr == optimization.lr
    before, after = optimization.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert before.keys() == after.keys()
    big = max(before, key=lambda k: before[k]["exp_avg"].numel())
    assert type(after[big]["exp_avg"]).__name__ == "OptimState8bit"
    assert torch.equal(after[big]["exp_avg"].codes, before[big]["exp_avg"].codes)


def test_checkpoints_keep_the_newest_and_latest_points_at_the_last(tmp_path):
    for step in (2, 4, 6, 8):
        checkpoint.save(tmp_path, step, {"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step_6.pt", "step_8.pt"]
    assert torch.load(tmp_path / "latest.pt", weights_only=True)["step"] == 8
    assert checkpoint.candidates("auto", tmp_path) == [tmp_path / "step_8.pt", tmp_path / "step_6.pt"]
    assert checkpoint.candidates("auto", tmp_path.parent / "nothing") == []
    with pytest.raises(WitError, match="resume checkpoint not found"):
        checkpoint.candidates(str(tmp_path / "step_2.pt"), tmp_path)


class Part:
    """A checkpoint part that records its restores in `log`."""

    def __init__(self, value: int, log: list):
        self.value, self.log = value, log

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.log.append(self)
        self.value = state["value"]


def test_the_checkpointer_saves_each_part_under_its_name_and_restores_them_in_order(tmp_path, tiny_model):
    world, log, cfg = World(0, 1, 0, torch.device("cpu")), [], train_config(tiny_model)
    parts = {"b": Part(1, log), "a": Part(2, log), "optimizer": optim.build(models.create(cfg.model), cfg)}
    checkpoint.Checkpointer(tmp_path, 0, world, parts).save(7)
    state = torch.load(tmp_path / "step_7.pt", weights_only=True)
    assert list(state) == ["b", "a", "optimizer"] and state["a"] == {"value": 2}
    assert set(state["optimizer"]) == {"optimizer", "scheduler"}
    fresh = {"b": Part(0, log), "a": Part(0, log), "optimizer": optim.build(models.create(cfg.model), cfg)}
    checkpoint.Checkpointer(tmp_path, 0, world, fresh).restore(tmp_path / "latest.pt")
    assert log == [fresh["b"], fresh["a"]] and (fresh["b"].value, fresh["a"].value) == (1, 2)
    with pytest.raises(WitError, match=r"not a resumable checkpoint \(missing c\)"):
        checkpoint.Checkpointer(tmp_path, 0, world, {**fresh, "c": Part(0, log)}).restore(tmp_path / "latest.pt")


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    np.random.seed(5)
    np.random.normal()          # leaves a cached Gaussian and a mid-block position behind
    random.random()
    rng = checkpoint.Rng()
    torch.save(rng.state_dict(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.normal(size=3), np.random.randint(0, 1 << 30, 3), random.random())
    torch.rand(7), np.random.normal(size=5), random.random()
    rng.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.normal(size=3), np.random.randint(0, 1 << 30, 3), random.random())
    assert torch.equal(expected[0], again[0]) and expected[3] == again[3]
    assert np.array_equal(expected[1], again[1]) and np.array_equal(expected[2], again[2])


def test_newest_valid_skips_a_damaged_or_non_finite_checkpoint_with_a_warning(tmp_path, caplog):
    world, log = World(0, 1, 0, torch.device("cpu")), []
    checkpointer = checkpoint.Checkpointer(tmp_path, 0, world, {"a": Part(1, log)})
    for step in (2, 4, 6):
        checkpointer.save(step)
    torch.save({"a": {"value": 6}, "state_dict": {"w": torch.tensor([1.0, float("nan")])}}, tmp_path / "step_6.pt")
    (tmp_path / "step_4.pt").write_bytes(b"garbage")
    path, state = checkpointer.newest_valid(checkpoint.candidates("auto", tmp_path))
    assert path == tmp_path / "step_2.pt" and state["a"] == {"value": 1}
    assert "non-finite weights (w)" in caplog.text and "step_4.pt: not a readable checkpoint" in caplog.text
    (tmp_path / "step_2.pt").write_bytes(b"")
    with pytest.raises(WitError, match="no valid checkpoint to resume from"):
        checkpointer.newest_valid(checkpoint.candidates("auto", tmp_path))


def test_step_dirs_are_candidates_set_aside_after_a_divergence_and_removed_by_a_restart(tmp_path):
    for step in (2, 4, 6):   # a sharded run's step dirs (their files do not matter here)
        (tmp_path / f"step_{step}").mkdir()
        (tmp_path / f"step_{step}" / "state.pt").write_bytes(b"")
    (tmp_path / ".step_8.tmp").mkdir()   # a killed run's unfinished one
    (tmp_path / "latest").symlink_to("step_6")
    assert checkpoint.candidates("auto", tmp_path) == [tmp_path / f"step_{n}" for n in (6, 4, 2)]
    assert checkpoint.candidates(str(tmp_path / "step_4"), tmp_path) == [tmp_path / "step_4"]
    assert checkpoint.set_aside_diverged(tmp_path, 4) == tmp_path / "step_2"
    assert sorted(p.name for p in (tmp_path / "diverged").iterdir()) == ["step_4", "step_6"]
    assert os.readlink(tmp_path / "latest") == "step_2" and not (tmp_path / "latest.pt").exists()
    with pytest.raises(WitError, match=r"holds checkpoints \(step_2, latest\)"):
        checkpoint.start_afresh("none", tmp_path)
    checkpoint.start_afresh("restart", tmp_path)
    assert checkpoint.candidates("auto", tmp_path) == [] and not os.path.lexists(tmp_path / "latest")
    # a one-file checkpoint then: latest.pt, the step dirs' link gone
    (tmp_path / "latest").symlink_to("step_2")
    checkpoint.save(tmp_path, 10, {"step": 10}, keep=1)
    assert os.path.samefile(tmp_path / "latest.pt", tmp_path / "step_10.pt")
    assert not os.path.lexists(tmp_path / "latest")


def test_a_checkpoint_of_the_other_layout_restores_only_its_first_part(tmp_path):
    world, log = World(0, 1, 0, torch.device("cpu")), []
    checkpoint.Checkpointer(tmp_path, 0, world, {"a": Part(1, log), "b": Part(2, log)}).save(3)
    fresh = {"a": Part(0, log), "b": Part(0, log)}
    sharded = checkpoint.ShardedCheckpointer(tmp_path, 0, world, fresh, dict)
    state = sharded.newest_valid(checkpoint.candidates("auto", tmp_path))[1]
    with pytest.raises(WitError, match=r"step_3.pt: a one-file checkpoint \(parallel=ddp\), not sharded weights: "
                                       "resume it with the parallel it was written with"):
        sharded.restore_state(state)
    assert log == [fresh["a"]] and fresh["b"].value == 0
