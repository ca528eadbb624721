"""The optimizer (`train.optim`): its parameter groups and its schedule."""

from __future__ import annotations

import math

import pytest

from tests.support.checkpoints import train_config
from train import optim
from train.model import clip as models


def test_no_weight_decay_on_gains_biases_and_the_logit_scale(tiny_model):
    cfg = train_config(tiny_model, weight_decay=0.2)
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
    cfg = train_config(tiny_model, lr=1.0, warmup=10, steps=110, min_lr=0.1)
    factors = [optim.lr_factor(s, cfg) for s in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(factors[:10], factors[1:10]))
    assert factors[60] == pytest.approx(0.1 + 0.9 * 0.5) and factors[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
