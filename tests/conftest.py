"""Shared fixtures: the real Wikipedia excerpt (from the gensim wheel) and WordNet 3.0; the
test web and the test query list of the crawl tests (tests/wit, tests/pipelines)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.crawls import write_queries
from tests.support.testweb import TestWeb
from wit.enwiki_excerpt import enwiki_excerpt as fetch_enwiki_excerpt

WORDNET_DIR = Path("/usr/share/wordnet")


@pytest.fixture(scope="session")
def enwiki_excerpt() -> Path:
    return fetch_enwiki_excerpt()


@pytest.fixture(scope="session")
def wordnet_dir() -> Path:
    if not (WORDNET_DIR / "data.noun").exists():
        pytest.fail("WordNet 3.0 is missing: install Debian's wordnet-base (`make test` does)")
    return WORDNET_DIR


@pytest.fixture(scope="module")
def web():
    """The test web (tests/support/testweb.py), one server per test module."""
    with TestWeb() as server:
        yield server


@pytest.fixture
def queries_dir(tmp_path):
    """A QUERIES dir of tests.support.crawls.QUERIES (dog, cat, red dog, bird)."""
    return write_queries(tmp_path / "queries")


@pytest.fixture(autouse=True)
def _quiet_albumentations():
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def pytest_collection_modifyitems(items):
    """The files that hold slow tests first, each file's tests kept together and in order
    (a stable sort), so that under pytest-xdist (`make test`: one worker per core, a file
    per worker at a time, `--no-loadscope-reorder`) the long files start early and the
    quick ones fill in at the end."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)
