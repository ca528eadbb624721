"""Fixtures of the trainer tests: the tiny OpenCLIP model config, and a checkpoint of it
fitted to tell colours apart (one per test module). Their helpers are in tests/support."""

from __future__ import annotations

import pytest

from tests.support.checkpoints import TINY_MODEL, write_trained_checkpoint


@pytest.fixture
def tiny_model() -> dict:
    return {"name": "wit-test-tiny", "config": TINY_MODEL}


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """The tiny model, fitted to tell the four colours apart by their names."""
    return write_trained_checkpoint(tmp_path_factory.mktemp("ckpt") / "step_10.pt")
