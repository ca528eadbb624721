"""The EMBED dir (`wit embed`): image and text embeddings of every sample of a SHARDS dir.

- `NNNNNN.parquet`, one per shard (the shard's name with `.parquet`): `uid`, `image` and
  `text`, each a fixed-size list of float32, L2-normalised, one row per sample of the
  shard in shard order; a sample whose image cannot be decoded has a null `image`.
- `embed.json`: what made them (tool, model, checkpoint sha256, dim, the SHARDS dir and
  its manifest's sha256, per-shard counts), written last.
`wit filter --clip-score` and `train.search` read them back with `read_embeddings`.
"""

from __future__ import annotations

import os

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
