"""Small real inputs for the demo and the tests, fetched from package registries and cached.

    python -m wit.enwiki_excerpt enwiki-excerpt [--cache DIR]   # prints the file's path
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

GENSIM = "gensim==4.4.0"
ENWIKI_EXCERPT = (
    "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)
DEFAULT_CACHE = Path(os.environ.get("WIT_CACHE", Path.home() / ".cache" / "wit"))


def enwiki_excerpt(cache: Path = DEFAULT_CACHE) -> Path:
    """The real 206-page English Wikipedia excerpt shipped in the gensim wheel (1.7 MB bz2)."""
    target = Path(cache) / Path(ENWIKI_EXCERPT).name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", GENSIM, "-d", tmp],
                       check=True, stdout=subprocess.DEVNULL)
        wheel = next(Path(tmp).glob("gensim-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            part = Path(tmp) / "excerpt.part"
            part.write_bytes(z.read(ENWIKI_EXCERPT))
            os.replace(part, target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m wit.enwiki_excerpt", description=__doc__.splitlines()[0])
    parser.add_argument("sample", choices=["enwiki-excerpt"])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    print(enwiki_excerpt(args.cache))


if __name__ == "__main__":
    main()
