"""`wit inspect`: what a SHARDS dir holds, and whether its tars are intact."""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field

from PIL import Image

from wit.atomic import read_json
from wit.errors import WitError
from wit.shards.tars import IMAGE_EXTENSIONS, read_member, scan_tar


@dataclass
class Verification:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)


def load(directory: str) -> tuple[dict, dict]:
    """manifest.json and datacard.json of a SHARDS dir."""
    try:
        return (read_json(os.path.join(directory, "manifest.json")),
                read_json(os.path.join(directory, "datacard.json")))
    except FileNotFoundError as e:
        raise WitError(f"{e.filename}: missing (not a finished `wit shard` output)") from None
    except (OSError, ValueError) as e:
        raise WitError(f"{directory}: unreadable manifest or data card ({e})") from None


def summary_lines(manifest: dict, card: dict) -> list[str]:
    counts = manifest["counts"]
    return [
        f"shards: {len(manifest['shards']):,}, samples: {manifest['total_samples']:,}, "
        f"bytes: {manifest['total_bytes']:,}",
        f"read {counts['samples_read']:,} samples from {counts['tars']} tars; duplicates removed: "
        f"{counts.get('duplicates_by_uid', 0):,} by uid, {counts.get('duplicates_by_sha256', 0):,} by sha256; "
        f"balanced out: {counts['balanced_out']:,} (cap {manifest['cap']:,})",
        f"queries with samples: {card['queries_with_samples']['kept']:,}; "
        f"head (> cap): {card['head']['queries']:,} queries, {card['head']['pairs_kept']:,} pairs kept of "
        f"{card['head']['pairs_downloaded']:,}; tail: {card['tail']['queries']:,} queries, "
        f"{card['tail']['pairs_kept']:,} pairs",
    ]


def verify(directory: str, manifest: dict) -> Verification:
    """Re-hash every tar against the manifest and read every sample."""
    result = Verification()
    for shard in manifest["shards"]:
        path = os.path.join(directory, shard["name"])
        result.shards += 1
        try:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError as e:
            result.problems.append(f"{shard['name']}: unreadable ({e.strerror or e})")
            continue
        if digest != shard["sha256"]:
            result.problems.append(f"{shard['name']}: sha256 differs from the manifest")
        scan = scan_tar(path)
        if scan.error or scan.refused:
            result.problems.append(f"{shard['name']}: {scan.error or 'unsafe members ' + str(scan.refused)}")
        good = 0
        with open(path, "rb") as f:
            for key, members in scan.samples.items():
                try:
                    image = next(read_member(f, members[e]) for e in IMAGE_EXTENSIONS if e in members)
                    meta = json.loads(read_member(f, members["json"]))
                    read_member(f, members["txt"]).decode("utf-8")
                    with Image.open(io.BytesIO(image)) as img:
                        img.verify()
                    if hashlib.sha256(image).hexdigest() != meta["sha256"]:
                        raise ValueError("image sha256 differs from its json")
                    good += 1
                except (StopIteration, KeyError, ValueError, OSError, EOFError) as e:
                    result.problems.append(f"{shard['name']}: sample {key}: {e or type(e).__name__}")
        if good != shard["samples"]:
            result.problems.append(f"{shard['name']}: {good} good samples, the manifest says {shard['samples']}")
        result.samples += good
    return result


def show(directory: str, manifest: dict, count: int) -> list[str]:
    """The first `count` samples: key, text, query ids, image size."""
    lines: list[str] = []
    for shard in manifest["shards"]:
        path = os.path.join(directory, shard["name"])
        scan = scan_tar(path)
        with open(path, "rb") as f:
            for key, members in scan.samples.items():
                if len(lines) == count:
                    return lines
                meta = json.loads(read_member(f, members["json"]))
                text = read_member(f, members["txt"]).decode("utf-8")
                lines.append(f"{key}  {meta['width']}x{meta['height']}  queries {meta['query_ids']}  {text!r}")
    return lines
