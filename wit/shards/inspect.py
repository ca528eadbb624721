"""`wit inspect`: what a SHARDS dir holds, and whether its tars are intact.

Every file is read through the contracts in `wit.formats`: the manifest through
`read_manifest` (plain shard names only), the data card and sizes.json as JSON objects,
the tars through `scan_tar`, images through the header check before anything decodes
them. Shards are opened without following links and without blocking, and only a
regular file is read, so a FIFO or a device in the dir can neither hang nor flood the
command. Bad input ends in one WitError naming the file and the problem; `--verify`
lists every problem it finds, each with its reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import BinaryIO

from PIL import Image

from wit.formats.atomic import read_json_object
from wit.formats.flags import option
from wit.formats.crawl import MAX_SAMPLE_JSON_BYTES
from wit.formats.errors import WitError
from wit.formats.images import ImageRefused, header_size
from wit.formats.shards import DATACARD, MANIFEST, SAMPLE_JSON_FIELDS, SIZES, open_regular, read_manifest, verify_shard
from wit.formats.tars import IMAGE_EXTENSIONS, Member, image_extension, read_member, scan_tar

PROBLEMS_IN_MESSAGE = 10  # the error message names this many problems; InspectFailed.lines has all
# the manifest's and the data card's fields that the summary prints
_COUNT_FIELDS = ("counts.tars", "counts.samples_read", "counts.balanced_out")
_OPTIONAL_COUNT_FIELDS = ("counts.duplicates_by_uid", "counts.duplicates_by_sha256")
_CARD_FIELDS = ("queries_with_samples.kept", "head.queries", "head.pairs_kept", "head.pairs_downloaded",
                "tail.queries", "tail.pairs_kept")


class InspectFailed(WitError):
    """`--verify` found problems: the message names them (the first PROBLEMS_IN_MESSAGE),
    `lines` is what the command prints before it, one `problem: ...` line per problem."""

    def __init__(self, message: str, lines: list[str]) -> None:
        super().__init__(message)
        self.lines = lines


@dataclass
class Verification:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)


class _BadSample(ValueError):
    """Why one sample is unusable (the message)."""


@dataclass(frozen=True)
class InspectConfig:
    """One `wit inspect` run."""

    shards: str = option(help="the SHARDS dir", metavar="SHARDS_DIR", positional=True)
    verify: bool = option(False, "re-hash every tar and read every sample")
    show: int = option(0, "print the first N samples", metavar="N")

    def __post_init__(self) -> None:
        if isinstance(self.show, bool) or not isinstance(self.show, int) or self.show < 0:
            raise WitError(f"--show: {self.show!r} is not a number of samples (0 or more)")


def run(config: InspectConfig) -> list[str]:
    """The lines `wit inspect SHARDS_DIR [--verify] [--show N]` prints: the summary, the
    first `show` samples and, with `verify`, the verification's result. Raises WitError
    for bad input, InspectFailed (a WitError) when the verification finds problems."""
    directory, verify, show = config.shards, config.verify, config.show
    manifest, card = load(directory)
    lines = summary_lines(manifest, card) + _show(directory, manifest, show)
    if verify:
        result = _verify(directory, manifest)
        if result.problems:
            problems = [_line(p) for p in result.problems]
            raise InspectFailed(_failure(directory, problems), lines + [f"problem: {p}" for p in problems])
        lines.append(f"verified: {result.shards} shards, {result.samples:,} samples, all hashes match")
    return lines


def load(directory: str) -> tuple[dict, dict]:
    """manifest.json and datacard.json of a SHARDS dir, with the fields the summary prints."""
    if not os.path.isdir(directory):
        raise WitError(f"{directory}: {'not a directory' if os.path.lexists(directory) else 'missing'} "
                       "(expected a SHARDS dir written by `wit shard`)")
    manifest_path, card_path = os.path.join(directory, MANIFEST), os.path.join(directory, DATACARD)
    try:
        manifest = read_manifest(directory)
    except RecursionError:
        raise WitError(f"{manifest_path}: unreadable shard manifest (nested too deeply)") from None
    try:
        card = read_json_object(card_path, "data card (not a finished `wit shard` output?)")
    except RecursionError:
        raise WitError(f"{card_path}: unreadable data card (nested too deeply)") from None
    _require_integers(manifest_path, manifest, _COUNT_FIELDS)
    _require_integers(manifest_path, manifest, _OPTIONAL_COUNT_FIELDS, optional=True)
    _require_integers(card_path, card, _CARD_FIELDS)
    return manifest, card


def _require_integers(path: str, value: dict, fields: tuple[str, ...], optional: bool = False) -> None:
    for dotted in fields:
        node: object = value
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None and optional:
            continue
        if not isinstance(node, int) or isinstance(node, bool):
            raise WitError(f"{path}: field {dotted!r} missing or not an integer")


def summary_lines(manifest: dict, card: dict) -> list[str]:
    counts = manifest["counts"]
    return [
        f"shards: {len(manifest['shards']):,}, samples: {manifest['total_samples']:,}, "
        f"bytes: {manifest['total_bytes']:,}",
        f"read {counts['samples_read']:,} samples from {counts['tars']} tars; duplicates removed: "
        f"{counts.get('duplicates_by_uid') or 0:,} by uid, {counts.get('duplicates_by_sha256') or 0:,} by sha256; "
        f"balanced out: {counts['balanced_out']:,} (cap {manifest['cap']:,})",
        f"queries with samples: {card['queries_with_samples']['kept']:,}; "
        f"head (> cap): {card['head']['queries']:,} queries, {card['head']['pairs_kept']:,} pairs kept of "
        f"{card['head']['pairs_downloaded']:,}; tail: {card['tail']['queries']:,} queries, "
        f"{card['tail']['pairs_kept']:,} pairs",
    ]


# ---- verification ----------------------------------------------------------------------


def _verify(directory: str, manifest: dict) -> Verification:
    result = Verification()
    manifest_path = os.path.join(directory, MANIFEST)
    for what, total in (("samples", "total_samples"), ("bytes", "total_bytes")):
        added = sum(shard[what] for shard in manifest["shards"])
        if added != manifest[total]:
            result.problems.append(f"{manifest_path}: {total} is {manifest[total]:,}, "
                                   f"its shards add up to {added:,}")
    result.problems += _check_sizes(directory, manifest)
    for shard in manifest["shards"]:
        result.shards += 1
        result.samples += _verify_shard(os.path.join(directory, shard["name"]), shard, result.problems)
    return result


def _check_sizes(directory: str, manifest: dict) -> list[str]:
    """sizes.json (what OpenCLIP reads) must give every shard's samples as the manifest does."""
    path = os.path.join(directory, SIZES)
    try:
        sizes = read_json_object(path, "shard sizes")
    except RecursionError:
        return [f"{path}: unreadable shard sizes (nested too deeply)"]
    except WitError as e:
        return [str(e)]
    expected = {shard["name"]: shard["samples"] for shard in manifest["shards"]}
    if sizes != expected:
        differ = sorted(set(sizes) ^ set(expected) | {k for k in sizes.keys() & expected if sizes[k] != expected[k]})
        return [_line(f"{path}: differs from the manifest for {len(differ)} shards "
                      f"({', '.join(map(str, differ[:3]))}{', ...' if len(differ) > 3 else ''})")]
    return []


def _verify_shard(path: str, shard: dict, problems: list[str]) -> int:
    """The good samples of one shard; its problems are added to `problems`."""
    try:
        f = open_regular(path)
    except WitError as e:
        problems.append(str(e))
        return 0
    with f:
        try:
            problems.extend(verify_shard(f, path, shard))
        except WitError as e:
            problems.append(_line(str(e)))
            return 0
        scan = scan_tar(path)
        if scan.error:
            problems.append(_line(f"{path}: {scan.error}"))
        for reason, n in sorted(scan.refused.items()):
            problems.append(f"{path}: {n} {'member or sample' if n == 1 else 'members or samples'} "
                            f"refused by the tar reader ({reason})")
        good = 0
        for key, members in scan.samples:
            problem = _check_sample(f, members)
            if problem:
                problems.append(_line(f"{path}: sample {key}: {problem}"))
            else:
                good += 1
    if good != shard["samples"]:
        problems.append(f"{path}: {good:,} good samples, the manifest says {shard['samples']:,}")
    return good


def _check_sample(f: BinaryIO, members: dict[str, Member]) -> str | None:
    """Why the sample is not a good one, or None: its json (an object with every field of
    SAMPLE_JSON_FIELDS) and UTF-8 text, its image (header within the pixel cap, then
    Pillow's verify), the image's size and sha256 as its json gives them."""
    extension = image_extension(members)
    if extension is None:
        return f"no image (none of {', '.join(IMAGE_EXTENSIONS)})"
    try:
        meta = _sample_json(f, members)
        _sample_text(f, members)
        image = read_member(f, members[extension])
    except _BadSample as e:
        return str(e)
    except (EOFError, OSError) as e:
        return f"unreadable ({e})"
    try:
        width, height, kind = header_size(image)
    except ImageRefused as e:
        return f"{extension} image refused ({e.reason}: {e})"
    try:
        with Image.open(io.BytesIO(image), formats=[kind]) as img:
            img.verify()
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for a damaged image
        return f"{extension} image does not decode ({type(e).__name__}{': ' if str(e) else ''}{e})"
    if (meta["width"], meta["height"]) != (width, height):
        return f"{extension} image is {width}x{height}, its json says {meta['width']!r}x{meta['height']!r}"
    if hashlib.sha256(image).hexdigest() != meta["sha256"]:
        return "image sha256 differs from its json"
    return None


def _failure(directory: str, problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    named = "; ".join(problems[:PROBLEMS_IN_MESSAGE])
    more = f"; and {len(problems) - PROBLEMS_IN_MESSAGE:,} more" if len(problems) > PROBLEMS_IN_MESSAGE else ""
    return f"{directory}: {len(problems):,} problems found: {named}{more}"


# ---- samples ---------------------------------------------------------------------------


def _show(directory: str, manifest: dict, count: int) -> list[str]:
    lines: list[str] = []
    for shard in manifest["shards"]:
        if len(lines) >= count:
            break
        path = os.path.join(directory, shard["name"])
        with open_regular(path) as f:
            for key, members in scan_tar(path).samples:
                if len(lines) == count:
                    break
                try:
                    meta = _sample_json(f, members)
                    text = _sample_text(f, members)
                except _BadSample as e:
                    raise WitError(_line(f"{path}: sample {key}: {e}")) from None
                except (EOFError, OSError) as e:
                    raise WitError(_line(f"{path}: sample {key}: unreadable ({e})")) from None
                lines.append(_line(f"{key}  {meta['width']!r}x{meta['height']!r}  "
                                   f"queries {meta['query_ids']!r}  {text!r}"))
    return lines


def _sample_json(f: BinaryIO, members: dict[str, Member]) -> dict:
    member = members.get("json")
    if member is None:
        raise _BadSample("no json")
    if member.size > MAX_SAMPLE_JSON_BYTES:
        raise _BadSample(f"json of {member.size:,} bytes, over the {MAX_SAMPLE_JSON_BYTES:,}-byte limit")
    try:
        meta = json.loads(read_member(f, member))
    except RecursionError:
        raise _BadSample("unreadable json (nested too deeply)") from None
    except ValueError as e:
        raise _BadSample(f"unreadable json ({e})") from None
    if not isinstance(meta, dict):
        raise _BadSample(f"json is {_json_kind(meta)}, not an object")
    missing = [name for name in SAMPLE_JSON_FIELDS if name not in meta]
    if missing:
        raise _BadSample(f"json lacks {', '.join(missing)}")
    return meta


def _sample_text(f: BinaryIO, members: dict[str, Member]) -> str:
    member = members.get("txt")
    if member is None:
        raise _BadSample("no txt")
    try:
        return read_member(f, member).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadSample(f"txt is not UTF-8 (byte {e.start})") from None


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


# ---- files -----------------------------------------------------------------------------


def _line(text: str) -> str:
    """`text` on one printable line: control characters, and bytes that were not UTF-8
    in a tar member's name, escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
