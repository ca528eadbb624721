"""The EMBED dir (`wit embed`): image and text embeddings of every sample of a SHARDS dir.

- `NNNNNN.parquet`, one per shard (the shard's name with `.parquet`): `uid`, `image` and
  `text`, each a fixed-size list of float32, L2-normalised, one row per sample of the
  shard in shard order; a sample whose image cannot be decoded has a null `image`.
- `embed.json`: what made them (tool, model, checkpoint sha256, dim, the SHARDS dir and
  its manifest's sha256, per-shard counts), written last. Of shards that are not a
  finished `wit shard` output (a brace pattern, urls, `pipe:` commands), `shards_dir` is
  the pattern and `manifest_sha256` the sha256 of their listing (`shards_sha256`).
`wit filter --clip-score` and `train.search` read them back with `read_embeddings`;
`train.search` builds one for the shards it searches when given none.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from wit.formats.atomic import file_sha256, read_json_object
from wit.formats.errors import WitError
from wit.formats.shards import MANIFEST

SUMMARY = "embed.json"
SUMMARY_FIELDS = {"model": str, "dim": int, "shards_dir": str, "manifest_sha256": str, "shards": list}


def schema(dim: int) -> pa.Schema:
    vector = pa.list_(pa.float32(), dim)
    return pa.schema([("uid", pa.string()), ("image", vector), ("text", vector)])


def embedding_file(shard: str) -> str:
    """The embeddings file of a shard: `000012.tar` -> `000012.parquet`."""
    return f"{os.path.splitext(os.path.basename(shard))[0]}.parquet"


def manifest_sha256(shards_dir: str) -> str:
    """The sha256 of a SHARDS dir's manifest.json: what embeddings and filters record of
    their input."""
    return file_sha256(os.path.join(shards_dir, MANIFEST), "shard manifest (not a finished `wit shard` output?)")


def is_local(url: str) -> bool:
    """A shard url naming a file here (not an fsspec url or a `pipe:` command)."""
    return "://" not in url and not url.startswith("pipe:")


def shards_sha256(spec: str, shards: Sequence[tuple[str, int]]) -> str:
    """What embeddings record of the shards they are of: for a SHARDS dir with its manifest,
    the manifest's sha256; for any other listing of (url, samples), the sha256 of the urls
    (local paths made absolute), the sample counts and the local files' sizes and
    modification times."""
    if is_local(spec) and os.path.isfile(os.path.join(spec, MANIFEST)):
        return manifest_sha256(spec)
    listing = []
    for url, samples in shards:
        local = is_local(url)
        stat = os.stat(url) if local and os.path.exists(url) else None
        listing.append([os.path.abspath(url) if local else url, samples,
                        [stat.st_size, stat.st_mtime_ns] if stat else None])
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def read_summary(embed_dir: str) -> dict:
    """embed.json of a finished EMBED dir, checked field by field."""
    path = os.path.join(embed_dir, SUMMARY)
    summary = read_json_object(path, "embeddings summary (not a finished `wit embed` output?)")
    for name, kind in SUMMARY_FIELDS.items():
        if not isinstance(summary.get(name), kind) or isinstance(summary.get(name), bool):
            raise WitError(f"{path}: field {name!r} missing or not a {kind.__name__}")
    return summary


def read_embeddings(embed_dir: str, shards_dir: str | None = None) -> pa.Table:
    """Every embedding of an EMBED dir, in shard order. With `shards_dir`, the embeddings
    must be of that SHARDS dir as it is now (same manifest), else a one-line error."""
    summary = read_summary(embed_dir)
    if shards_dir is not None and summary["manifest_sha256"] != manifest_sha256(shards_dir):
        raise WitError(f"{embed_dir}: embeddings of another version of {summary['shards_dir']} "
                       f"(its manifest changed; run `wit embed` again)")
    expected = schema(summary["dim"])
    tables = []
    for shard in summary["shards"]:
        path = os.path.join(embed_dir, embedding_file(str(shard.get("name", ""))))
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as e:
            raise WitError(f"{path}: cannot read the embeddings ({e})") from None
        if not table.schema.equals(expected):
            raise WitError(f"{path}: columns are not uid, image, text of dim {summary['dim']}")
        tables.append(table)
    return pa.concat_tables(tables) if tables else expected.empty_table()
