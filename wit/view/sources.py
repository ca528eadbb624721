"""What `wit view` shows, checked before anything is built: the SHARDS dir, the FILTER dir
made from it, the EMBED dir of it, the query list that names its query ids; and where the
index of it lives (a cache dir outside it)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from wit.formats.atomic import read_json_object
from wit.formats.embeddings import SUMMARY as EMBED_SUMMARY, embedding_file, manifest_sha256, read_summary
from wit.formats.errors import WitError
from wit.formats.queries import QueryList, WorldwideQueries, read_query_list
from wit.formats.shards import DATACARD, MANIFEST, read_manifest

CONTAMINATION, REMOVED, ANNOTATIONS = "contamination.json", "removed.parquet", "annotations.parquet"


@dataclass(frozen=True)
class Shards:
    root: str              # absolute
    manifest: dict
    manifest_sha256: str

    @property
    def identity(self) -> dict[str, str]:
        """What an index of this dir records, and is checked against."""
        return {"shards_dir": self.root, "manifest_sha256": self.manifest_sha256}


def open_shards(directory: str) -> Shards:
    """A finished SHARDS dir (`wit shard` or `wit filter` output), or a one-line error."""
    if not os.path.isdir(directory):
        raise WitError(f"{directory}: {'not a directory' if os.path.lexists(directory) else 'missing'} "
                       "(expected a SHARDS dir written by `wit shard`)")
    try:
        manifest = read_manifest(directory)
    except RecursionError:
        raise WitError(f"{os.path.join(directory, MANIFEST)}: unreadable shard manifest (nested too deeply)") from None
    return Shards(os.path.abspath(directory), manifest, manifest_sha256(directory))


def cache_dir(shards: Shards, given: str = "") -> str:
    """The index's dir: `given`, or ~/.cache/wit/view/<sha256 of the dir's absolute path and
    its manifest's sha256>; never inside the SHARDS dir (which `wit view` only reads)."""
    if given:
        found = os.path.abspath(given)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        key = hashlib.sha256(f"{shards.root}\0{shards.manifest_sha256}".encode()).hexdigest()[:32]
        found = os.path.join(os.path.abspath(base), "wit", "view", key)
    real, root = os.path.realpath(found), os.path.realpath(shards.root)
    if real == root or real.startswith(root + os.sep):
        raise WitError(f"--index {given or found}: inside the SHARDS dir {shards.root} (wit view writes nothing there; "
                       "give a directory outside it)")
    return found


@dataclass(frozen=True)
class Filtered:
    """A `wit filter` output whose input is the SHARDS dir shown."""
    root: str
    manifest: dict
    manifest_sha256: str
    contamination: dict    # contamination.json ({} without --decontaminate)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)


def open_filtered(directory: str, shards: Shards) -> Filtered:
    """The FILTER dir, which must have been made from `shards` as they are now."""
    found = open_shards(directory)
    manifest, path = found.manifest, os.path.join(directory, MANIFEST)
    inputs = manifest.get("inputs")
    if manifest.get("tool") != "wit filter" or not isinstance(inputs, dict):
        raise WitError(f"{path}: not a `wit filter` output (give --filtered the --out dir of `wit filter`)")
    if inputs.get("shards") != shards.root or inputs.get("manifest_sha256") != shards.manifest_sha256:
        what = ("made from another SHARDS dir" if inputs.get("shards") != shards.root
                else "made from another version of this SHARDS dir (its manifest changed)")
        raise WitError(f"{path}: a `wit filter` output {what}: its input is {inputs.get('shards')!r}, "
                       f"not {shards.root!r}")
    if not os.path.isfile(os.path.join(directory, REMOVED)):
        raise WitError(f"{os.path.join(directory, REMOVED)}: missing (not a finished `wit filter` output?)")
    contamination = {}
    if os.path.exists(os.path.join(directory, CONTAMINATION)):
        contamination = read_json_object(os.path.join(directory, CONTAMINATION), "contamination report")
    return Filtered(found.root, manifest, found.manifest_sha256, contamination)


@dataclass(frozen=True)
class Embedded:
    root: str
    summary: dict
    summary_sha256: str


def open_embedded(directory: str, shards: Shards) -> Embedded:
    """The EMBED dir, which must hold the embeddings of `shards` as they are now, shard for shard."""
    summary = read_summary(directory)
    path = os.path.join(directory, EMBED_SUMMARY)
    if summary["manifest_sha256"] != shards.manifest_sha256:
        raise WitError(f"{path}: embeddings of other shards ({summary['shards_dir']}, manifest sha256 "
                       f"{summary['manifest_sha256'][:12]}...), not of {shards.root} (run `wit embed` on it)")
    names = [str(s.get("name")) if isinstance(s, dict) else None for s in summary["shards"]]
    if names != [s["name"] for s in shards.manifest["shards"]]:
        raise WitError(f"{path}: its shards are not those of {os.path.join(shards.root, MANIFEST)}")
    for name in names:
        if not os.path.isfile(os.path.join(directory, embedding_file(name))):
            raise WitError(f"{os.path.join(directory, embedding_file(name))}: missing (embed.json lists it)")
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return Embedded(os.path.abspath(directory), summary, digest)


# ---- query names ---------------------------------------------------------------------------


class QueryNames:
    """The text of a (lang, query id): from the query list the crawl matched against."""

    def __init__(self, found: QueryList | WorldwideQueries | None = None, source: str = "") -> None:
        self.source = source
        if isinstance(found, WorldwideQueries):
            self._lists = {lang: q.queries for lang, q in found.lists.items()}
        elif found is not None:
            self._lists = {"": found.queries}
        else:
            self._lists = {}

    def __call__(self, lang: str, query_id: int) -> str | None:
        entries = self._lists.get(lang)
        return entries[query_id] if entries is not None and 0 <= query_id < len(entries) else None


def query_names(shards: Shards, given: str = "") -> QueryNames:
    """The query list `given` (a one-line error if unreadable), else the one the crawl of the
    SHARDS dir named (manifest inputs -> crawl.json), when it is still there; else none."""
    if given:
        return QueryNames(read_query_list(given), given)
    crawl = shards.manifest.get("inputs", {}).get("crawl") if isinstance(shards.manifest.get("inputs"), dict) else None
    if not isinstance(crawl, str):
        return QueryNames()
    try:
        summary = read_json_object(os.path.join(crawl, "crawl.json"), "crawl summary")
        parameters = summary.get("parameters")
        path = parameters.get("queries") if isinstance(parameters, dict) else None
        if not isinstance(path, str) or not path:
            return QueryNames()
        candidates = [path] if os.path.isabs(path) else [path, os.path.join(os.path.dirname(os.path.abspath(crawl)), path)]
        path = next((p for p in candidates if os.path.exists(p)), None)
        return QueryNames(read_query_list(path), path) if path else QueryNames()
    except (WitError, OSError, ValueError):
        return QueryNames()


def datacard(directory: str) -> dict | None:
    """datacard.json of a SHARDS or FILTER dir, or None when it has none."""
    path = os.path.join(directory, DATACARD)
    if not os.path.exists(path):
        return None
    try:
        return read_json_object(path, "data card")
    except RecursionError:
        raise WitError(f"{path}: unreadable data card (nested too deeply)") from None
