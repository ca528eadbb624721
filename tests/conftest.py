"""Shared fixtures: the real Wikipedia excerpt (from the gensim wheel) and WordNet 3.0."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("WIT_TEST_CACHE", REPO / ".cache" / "test-data"))
GENSIM = "gensim==4.4.0"
EXCERPT = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WORDNET_DIR = Path("/usr/share/wordnet")


def enwiki_excerpt_path() -> Path:
    """The 206-page English Wikipedia excerpt shipped in the gensim wheel, cached."""
    target = CACHE / Path(EXCERPT).name
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", GENSIM,
                        "-d", str(CACHE)], check=True)
        wheel = next(CACHE.glob("gensim-4.4.0-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            tmp = target.with_suffix(".part")
            tmp.write_bytes(z.read(EXCERPT))
            tmp.rename(target)
        wheel.unlink()
    return target


@pytest.fixture(scope="session")
def enwiki_excerpt() -> Path:
    return enwiki_excerpt_path()


@pytest.fixture(scope="session")
def wordnet_dir() -> Path:
    if not (WORDNET_DIR / "data.noun").exists():
        pytest.fail("WordNet 3.0 is missing: install Debian's wordnet-base (`make test` does)")
    return WORDNET_DIR
