"""The models (`train.model.clip`): custom configs registered in memory and unknown or
clashing names refused, the logit-scale clamp, SigLIP's logit bias (init, loading back),
tokenizers that cap the text."""

from __future__ import annotations

import json
import math
import tempfile

import open_clip
import pytest
import torch

from tests.support.checkpoints import TINY_MODEL, train_config
from train.model import clip as models
from train.config import ModelConfig
from wit.formats.errors import WitError


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


def test_logit_scale_is_clamped_at_100(tiny_model):
    model = models.create(train_config(tiny_model).model)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    models.clamp_logit_scale(model)
    assert model.logit_scale.exp().item() == pytest.approx(100.0)


def test_a_siglip_model_starts_at_the_papers_scale_and_bias_and_loads_back(tmp_path, tiny_model):
    cfg = train_config(tiny_model, loss="siglip")
    model = models.create(cfg.model, cfg.loss)
    assert model.logit_scale.item() == pytest.approx(math.log(10)) and model.logit_bias.item() == -10.0
    assert getattr(models.create(cfg.model), "logit_bias", None) is None   # clip: no bias
    with torch.no_grad():
        model.logit_bias.fill_(-3.5)
    checkpoint = tmp_path / "step_1.pt"
    torch.save({"state_dict": model.state_dict(), "config": cfg.to_dict(), "position": {"step": 1}}, checkpoint)
    assert models.load(checkpoint).model.logit_bias.item() == -3.5
    (tmp_path / "wit-test-tiny.json").write_text(json.dumps(TINY_MODEL))
    assert models.load_openclip(checkpoint, str(tmp_path / "wit-test-tiny.json")).model.logit_bias.item() == -3.5


def test_every_tokenizer_caps_the_text_so_a_huge_word_costs_what_a_normal_caption_does(tiny_model):
    import random
    import time

    tokenize = models.tokenizer(train_config(tiny_model).model)   # the one the trainer, evaluation, search and embed use
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
