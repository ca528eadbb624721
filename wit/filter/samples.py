"""The samples of a SHARDS dir, read once: per sample its uid, url, text, query ids, its
image's size (as found on the web: the json's `original_width`/`original_height`, else its
`width`/`height`, else the image header; nothing is decoded), where its members lie (to
copy them byte for byte) and, when asked, its image's pHash."""

from __future__ import annotations

import json

import pyarrow as pa

from wit.filter.hashes import phash
from wit.formats.errors import WitError
from wit.formats.images import ImageRefused, header_size
from wit.formats.shards import open_regular, verify_shard
from wit.formats.tars import image_extension, read_member, scan_tar

SCHEMA = pa.schema([
    ("shard", pa.int32()), ("key", pa.string()), ("uid", pa.string()), ("url", pa.string()),
    ("text", pa.string()), ("query_ids", pa.list_(pa.int32())), ("width", pa.int32()), ("height", pa.int32()),
    ("phash", pa.binary(8)),
    ("extensions", pa.list_(pa.string())), ("offsets", pa.list_(pa.int64())), ("sizes", pa.list_(pa.int64())),
])


def read_shard(shard: int, path: str, expected: dict, hashing: bool) -> dict[str, list]:
    """The samples of one input shard as columns of plain values (a worker task), checked
    against its manifest entry (bytes, sha256); damage is a one-line error naming the tar."""
    with open_regular(path) as f:
        if verify_shard(f, path, expected):
            raise WitError(f"{path}: does not match its entry in manifest.json (changed since it was written?)")
    scan = scan_tar(path)
    if scan.error or scan.refused:
        raise WitError(f"{path}: not a clean shard ({scan.error or ', '.join(scan.refused)})")
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    with open(path, "rb") as f:
        for key, members in scan.samples:
            extension = image_extension(members)
            if extension is None or "txt" not in members or "json" not in members:
                raise WitError(f"{path}: sample {key!r} lacks an image, a txt or a json")
            try:
                meta = json.loads(read_member(f, members["json"]))
                text = read_member(f, members["txt"]).decode("utf-8")
                uid, url, query_ids = meta["uid"], meta["url"], [int(q) for q in meta["query_ids"]]
            except (ValueError, KeyError, TypeError) as e:
                raise WitError(f"{path}: sample {key!r} has an unreadable txt or json ({e})") from None
            image = read_member(f, members[extension]) if hashing else None
            width, height = image_size(meta, lambda: image if image is not None else read_member(f, members[extension]))
            values = (shard, key, uid, url, text, query_ids, width, height,
                      phash(image) if hashing else None,
                      list(members), [m.offset for m in members.values()], [m.size for m in members.values()])
            for name, value in zip(SCHEMA.names, values):
                columns[name].append(value)
    return columns


def image_size(meta: dict, image) -> tuple[int | None, int | None]:
    """The image's size as found on the web (see the module's doc); `image()` gives its
    bytes when the json has no size; (None, None) when its header cannot be read."""
    for w, h in (("original_width", "original_height"), ("width", "height")):
        width, height = meta.get(w), meta.get(h)
        if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
            return width, height
    try:
        width, height, _ = header_size(image(), max_pixels=1 << 62)
    except ImageRefused:
        return None, None
    return width, height
