"""The shards a run reads, with their sample counts: a SHARDS dir or a brace/glob pattern,
expanded by `wit.formats.globs`; the counts come from `sizes.json` (or `manifest.json`)
next to the shards, read by `wit.formats.shards`, never from guessing."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

from wit.formats import globs
from wit.formats.errors import WitError
from wit.formats.shards import SIZES, read_sizes


@dataclass(frozen=True)
class Shard:
    url: str
    samples: int


def list_shards(spec: str, sizes: str | None = None) -> list[Shard]:
    """The shards named by `spec` (a SHARDS dir, a brace or glob pattern of local paths or
    fsspec urls, or `pipe:` commands) with their sample counts from `sizes` or the
    sizes.json next to them."""
    if "://" not in spec and not spec.startswith("pipe:") and os.path.isdir(spec):
        counts = read_sizes(sizes or os.path.join(spec, SIZES), spec)
        return [Shard(os.path.join(spec, name), n) for name, n in sorted(counts.items())]
    urls = globs.expand([spec], "shard", check_plain=False)
    if sizes is None:
        if urls[0].startswith("pipe:"):
            raise WitError(f"{spec}: pipe: urls need the sizes file; set sizes=PATH/TO/sizes.json")
        sizes = posixpath.join(posixpath.dirname(urls[0]), SIZES)
    counts = read_sizes(sizes, spec)
    shards = []
    for url in urls:
        name = _tar_name(url)
        if name not in counts:
            raise WitError(f"{url}: not listed in {sizes}")
        shards.append(Shard(url, counts[name]))
    return shards


def _tar_name(url: str) -> str:
    """The shard's name in sizes.json: the basename of the url, or of the `.tar` argument
    of a `pipe:` command."""
    tars = [w for w in url.split() if w.endswith(".tar")] if url.startswith("pipe:") else [url]
    return posixpath.basename(tars[-1] if tars else url)
