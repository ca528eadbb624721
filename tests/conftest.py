"""Shared fixtures: the real Wikipedia excerpt (from the gensim wheel) and WordNet 3.0."""

from __future__ import annotations

from pathlib import Path

import pytest

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
