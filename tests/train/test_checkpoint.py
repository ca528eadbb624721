"""The trainer's small components: configuration, launch environment, model names and
registration, optimizer groups and schedule, logit-scale clamp, checkpoint parts,
low-precision optimizer state in checkpoints."""

from __future__ import annotations

import math
import tempfile

import open_clip
import pytest
import torch

from tests.train.conftest import TINY_MODEL
from train import checkpoint, dist, optim
from train.model import clip as models
from train.config import ModelConfig, TrainConfig, load_config
from train.dist import World
from wit.formats.errors import WitError
from wit.formats.images import ImageRefused


def test_yaml_and_repeated_set_overrides_build_one_typed_tree(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("shards: s\nrun_dir: r\nmodel: ViT-B-32\nlr: 1e-3\neval:\n  batch_size: 64\n")
    cfg = load_config(str(path), ["steps=7", "model.grad_checkpointing=true", "betas=[0.9, 0.95]",
                                  "eval.shards=held/{0..3}.tar", "warmup=3"])
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)          # YAML reads 1e-3 as a string
    assert cfg.model == ModelConfig(name="ViT-B-32", grad_checkpointing=True)
    assert cfg.betas == (0.9, 0.95) and cfg.steps == 7 and cfg.warmup == 3
    assert cfg.eval.batch_size == 64 and cfg.eval.shards == "held/{0..3}.tar"
    with pytest.raises(WitError, match=r"unknown key eval\.bogus"):
        load_config(str(path), ["eval.bogus=1"])
    with pytest.raises(WitError, match="steps must be int"):
        load_config(str(path), ["steps=many"])
    with pytest.raises(WitError, match="steps must be at least 1"):
        load_config(str(path), ["steps=0"])
    with pytest.raises(WitError, match="expected key=value"):
        load_config(str(path), ["steps"])
    path.write_text("- a list\n")
    with pytest.raises(WitError, match="must be a mapping"):
        load_config(str(path))


def test_launch_environment_from_torchrun_slurm_or_none():
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"}
    assert dist.launch_env(torchrun) == (3, 8, 1, "n1", "1234")
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_JOB_NODELIST": "gpu[07-08,11]", "SLURM_JOB_ID": "4242"}
    rank, size, local, addr, port = dist.launch_env(slurm)
    assert (rank, size, local) == (5, 8, 1) and addr == "gpu07" and port == str(29500 + 4242 % 1000)
    assert dist.launch_env({}) == (0, 1, 0, None, None)


@pytest.mark.parametrize("name", ["/abs/path", "../x", "a/b", ".", "..", "", "hf-hub:org/model", "x\ny"])
def test_a_model_name_that_is_not_a_plain_name_is_refused(name):
    with pytest.raises(WitError, match="not a plain model name") as e:
        ModelConfig(name=name, config=TINY_MODEL)
    assert "\n" not in str(e.value)


def test_custom_configs_register_in_memory_and_unknown_or_clashing_names_are_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    custom = ModelConfig(name="wit-test-in-memory", config=TINY_MODEL)
    models.register(custom)
    assert open_clip.get_model_config(custom.name) == TINY_MODEL and custom.name in open_clip.list_models()
    assert list(tmp_path.iterdir()) == []                          # no config file written
    models.register(ModelConfig(name="RN50", config=open_clip.get_model_config("RN50")))   # its own config: fine
    with pytest.raises(WitError, match="not an OpenCLIP model"):
        models.register(ModelConfig(name="ViT-Z-99"))
    with pytest.raises(WitError, match="built-in OpenCLIP model"):
        models.register(ModelConfig(name="RN50", config={"embed_dim": 1, "vision_cfg": {}, "text_cfg": {}}))


def _cfg(tiny_model, **kw) -> TrainConfig:
    return TrainConfig(shards="s", run_dir="r", model=ModelConfig(tiny_model["name"], tiny_model["config"]), **kw)


def test_no_weight_decay_on_gains_biases_and_the_logit_scale(tiny_model):
    cfg = _cfg(tiny_model, weight_decay=0.2)
    model = models.create(cfg.model)
    optimizer = optim.build(model, cfg).optimizer
    decayed, plain = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.2 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"])
    plain_names = {names[id(p)] for p in plain["params"]}
    assert "logit_scale" in plain_names and any(n.endswith(".bias") for n in plain_names)
    assert optimizer.defaults["betas"] == (0.9, 0.98) and optimizer.defaults["eps"] == 1e-6
    assert math.isclose(model.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-6)


def test_warmup_then_cosine_schedule(tiny_model):
    cfg = _cfg(tiny_model, lr=1.0, warmup=10, steps=110, min_lr=0.1)
    factors = [optim.lr_factor(s, cfg) for s in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:10]))
    assert factors[60] == pytest.approx(0.1 + 0.9 * 0.5) and factors[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_logit_scale_is_clamped_at_100(tiny_model):
    model = models.create(_cfg(tiny_model).model)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    models.clamp_logit_scale(model)
    assert model.logit_scale.exp().item() == pytest.approx(100.0)


def test_low_precision_optimizer_state_round_trips_through_a_weights_only_checkpoint(tmp_path, tiny_model):
    pytest.importorskip("torchao")
    cfg = _cfg(tiny_model, optimizer_state="8bit")
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
    world, log, cfg = World(0, 1, 0, torch.device("cpu")), [], _cfg(tiny_model)
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


def test_decoding_caps_pixels_from_the_header_and_crops_where_asked():
    import io

    import numpy as np
    from PIL import Image

    from train.data import preprocess as images

    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000), (10, 20, 30)).save(buf, "PNG")
    with pytest.raises(ImageRefused, match="over the 1,000,000-pixel cap") as e:
        images.decode(buf.getvalue(), 32, max_pixels=1_000_000)
    assert e.value.reason == "too_many_pixels"
    with pytest.raises(ImageRefused) as e:
        images.decode(b"\xff\xd8\xff\xe0 truncated", 32, max_pixels=10**8)
    assert e.value.reason == "undecodable_image"
    ramp = np.tile(np.arange(128, dtype=np.uint8) * 2, (64, 1))            # 128 wide, 64 high, brighter to the right
    buf = io.BytesIO()
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(buf, "PNG")
    left = images.decode(buf.getvalue(), 32, 10**8, crop=(0.0, 0.0)).float().mean()
    centre = images.decode(buf.getvalue(), 32, 10**8).float().mean()
    right = images.decode(buf.getvalue(), 32, 10**8, crop=(0.999, 0.0)).float().mean()
    assert images.decode(buf.getvalue(), 32, 10**8).shape == (3, 32, 32)
    assert left < centre < right and abs(centre - 127) < 4   # shorter side 64 -> 32: the crop is half the width


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


def test_every_tokenizer_caps_the_text_so_a_huge_word_costs_what_a_normal_caption_does(tiny_model):
    import random
    import time

    tokenize = models.tokenizer(_cfg(tiny_model).model)   # the one the trainer, evaluation, search and embed use
    assert tokenize.max_chars == models.CHARS_PER_TOKEN * 16
    rng = random.Random(0)
    huge = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1_000_000))
    started = time.perf_counter()
    tokens = tokenize([huge, "a red picture"])
    seconds = time.perf_counter() - started
    assert seconds < 0.5   # unbounded, OpenCLIP's BPE takes minutes on it
    assert torch.equal(tokens[0], tokenize([huge[:tokenize.max_chars]])[0])
    assert tokens[0].count_nonzero() == 16   # the context is full
    plain = open_clip.get_tokenizer("ViT-B-32", context_length=16)
    assert torch.equal(tokens[1], plain(["a red picture"])[0])   # a normal caption is untouched
