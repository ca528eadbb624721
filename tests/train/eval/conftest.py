"""The evaluation tests' model."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def checkpoint(trained_checkpoint):
    """tests/train/conftest.py's `trained_checkpoint`: the tiny model, fitted to tell the
    four colours apart by their names (one per test module)."""
    return trained_checkpoint
