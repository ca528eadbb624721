"""`wit merge-crawl`: the parts of a crawl (`wit crawl --part I/N`, e.g. a SLURM array) ->
one CRAWL dir that `wit shard` reads like any crawl.

The parts must be complete `wit crawl` outputs, parts 0 .. N-1 of the same N each exactly
once, crawled with the same settings and query list, no candidate file in two parts. The
merged dir (claimed like every stage's output, see `wit.formats.workdir`) holds:
- `download/NNNNN.tar`, `NNNNN.parquet`, `NNNNN_stats.json`: relative symbolic links to
  every part's download shards, renumbered part after part so that names never collide;
- `candidates/`, `selected/`: links to the parts' files, prefixed `part-I-`;
- `entry_counts.parquet`: `matched` per query summed over the parts (the whole pool's);
- `crawl.json`: the shared settings, the whole pool's candidate files, counts and download
  results summed over the parts and, per part, its dir, files, counts and which merged
  shard is which of its shards.
Nothing in the parts is changed or copied: keep (or move) the merged dir and the parts
together. Merging again after a part changed is refused unless `--overwrite`.
"""

from __future__ import annotations

import glob
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np

from wit import __version__
from wit.formats.flags import option
from wit.formats.atomic import read_json_object, write_json
from wit.formats.balance import space_thresholds
from wit.formats.crawl import (CANDIDATES, DOWNLOAD, ENTRY_COUNTS, SELECTED, SHARD_FILES, SUMMARY, crawl_space,
                               finished_shards, read_entry_counts, unfinished_shards, write_entry_counts)
from wit.formats.errors import WitError
from wit.formats.globs import GLOB_CHARACTERS
from wit.formats.queries import EntrySpace
from wit.formats.workdir import STATE, WorkDir, claim, sum_counters

# fingerprint entries that differ from part to part by design
_PER_PART = ("candidate_files", "part")


@dataclass(frozen=True)
class MergeConfig:
    """One `wit merge-crawl` run."""

    parts: tuple[str, ...] = option(help="the part CRAWL dirs (`wit crawl --part I/N`), or quoted globs of them, "
                                         "e.g. 'OUT/part-*'", metavar="GLOB")
    out: str = option(help="merged CRAWL output directory", metavar="DIR")
    overwrite: bool = option(False, "replace an existing output made from other parts (built beside it, "
                                    "swapped in when complete)")

    def __post_init__(self) -> None:
        if not self.parts or not all(self.parts):
            raise WitError("--parts: give the part dirs (or a quoted glob such as 'OUT/part-*')")


def run(config: MergeConfig) -> dict:
    """Merge the parts into `config.out`; return the summary also written to its `crawl.json`."""
    started = time.time()
    parts = _read_parts(_expand(config.parts))
    final = os.path.abspath(config.out)
    fingerprint = {"parts": [{"dir": os.path.relpath(p["dir"], final), "claim": p["claim"],
                              "complete": p["complete"]} for p in parts]}
    with claim(config.out, "merge-crawl", fingerprint, config.overwrite,
               inputs=tuple(p["dir"] for p in parts)) as work:
        done = work.complete()
        if done is not None:
            return done
        summary = _merge(parts, work, final)
        summary["seconds"] = round(time.time() - started, 3)
        write_json(work.path(SUMMARY), summary)
        work.finish(summary)
    return summary


# ---- the parts and their checks ---------------------------------------------------------


def _expand(patterns: tuple[str, ...]) -> list[str]:
    """The dirs the patterns name (globs expanded, sorted), each once."""
    found: dict[str, str] = {}
    for pattern in patterns:
        if any(c in pattern for c in GLOB_CHARACTERS):
            dirs = [n for n in sorted(glob.glob(pattern)) if os.path.isdir(n)]
            if not dirs:
                raise WitError(f"{pattern}: no part dir matches (run the `wit crawl --part I/N` tasks first)")
        elif os.path.isdir(pattern):
            dirs = [pattern]
        else:
            raise WitError(f"{pattern}: {'not a directory' if os.path.lexists(pattern) else 'no such directory'}")
        for d in dirs:
            found.setdefault(os.path.realpath(d), os.path.normpath(d))
    return list(found.values())


def _read_parts(dirs: list[str]) -> list[dict]:
    """Every part's claim, summary and (I, N), checked; sorted by I."""
    parts = [_read_part(d) for d in dirs]
    declared = sorted({p["count"] for p in parts})
    if len(declared) > 1:
        by_count = "; ".join(f"{n} in {', '.join(p['dir'] for p in parts if p['count'] == n)}" for n in declared)
        raise WitError(f"the parts disagree on the number of parts ({by_count}); merge the parts of one crawl")
    count = declared[0]
    seen: dict[int, str] = {}
    for p in parts:
        if p["index"] in seen:
            raise WitError(f"{p['dir']}: part {p['index']}/{count} again (also {seen[p['index']]}); "
                           "give each part once")
        seen[p["index"]] = p["dir"]
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        unfinished = _unfinished_builds(parts, count, missing)
        if unfinished:
            index, build = unfinished[0]
            raise WitError(f"{build}: not a finished crawl, part {index}/{count} (run array task {index} "
                           "again; it resumes)")
        raise WitError(f"{count} parts declared, missing part(s) {_numbers(missing)} (run those array tasks, "
                       f"e.g. `PARTS={count} sbatch --array=I crawl.sbatch ...`, with the same arguments)")
    parts.sort(key=lambda p: p["index"])
    _check_same_settings(parts)
    owner: dict[str, str] = {}
    for p in parts:
        for name in p["claim"]["fingerprint"].get("candidate_files", []):
            if name in owner:
                raise WitError(f"{name}: crawled by both {owner[name]} and {p['dir']}; "
                               "crawl every part from the same pool")
            owner[name] = p["dir"]
    downloaded = [p["dir"] for p in parts if "download" in p["complete"]]
    if downloaded and len(downloaded) < len(parts):
        matched_only = next(p["dir"] for p in parts if "download" not in p["complete"])
        raise WitError(f"{matched_only}: crawled with --match-only, but {downloaded[0]} downloaded; "
                       "run that part again without --match-only (it resumes)")
    for p in parts:
        p["shards"] = _finished_shards(p) if downloaded else []
    return parts


def _read_part(directory: str) -> dict:
    claimed = os.path.join(directory, STATE, "claim.json")
    if not os.path.exists(claimed):
        raise WitError(f"{directory}: not a `wit crawl` output (no {STATE}/claim.json)")
    identity = read_json_object(claimed, "claim")
    if identity.get("stage") != "crawl":
        raise WitError(f"{directory}: holds the output of `wit {identity.get('stage')}`, not of `wit crawl`")
    completed = os.path.join(directory, STATE, "complete.json")
    if not os.path.exists(completed):
        part = (identity.get("fingerprint") or {}).get("part") or ""
        task = part.partition("/")[0] if part else "of this part"
        raise WitError(f"{directory}: not a finished crawl (run array task {task} again; it resumes)")
    complete = read_json_object(completed, "crawl summary")
    if not isinstance(complete.get("queries"), int) or isinstance(complete.get("queries"), bool):
        raise WitError(f"{completed}: no query count (\"queries\")")
    summary = read_json_object(os.path.join(directory, SUMMARY), "crawl summary")
    part = (summary.get("parameters") or {}).get("part", "")
    if part == "":
        index, count = 0, 1     # a crawl of a whole pool is its only part
    else:
        index, _, count = str(part).partition("/")
        if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
            raise WitError(f"{os.path.join(directory, SUMMARY)}: parameters.part {part!r} is not I/N")
        index, count = int(index), int(count)
    return {"dir": directory, "index": index, "count": count, "claim": identity, "complete": complete,
            "summary": summary}


def _unfinished_builds(parts: list[dict], count: int, missing: list[int]) -> list[tuple[int, str]]:
    """The build dirs (`.NAME.partial`) of missing parts beside the found ones."""
    found = []
    for parent in sorted({os.path.dirname(os.path.abspath(p["dir"])) for p in parts}):
        for build in sorted(glob.glob(os.path.join(parent, ".*.partial"))):
            try:
                identity = read_json_object(os.path.join(build, STATE, "claim.json"), "claim")
            except WitError:
                continue
            part = str((identity.get("fingerprint") or {}).get("part") or "")
            index, _, of = part.partition("/")
            if identity.get("stage") == "crawl" and index.isdigit() and int(index) in missing \
                    and of == str(count):
                found.append((int(index), os.path.join(os.path.dirname(build),
                                                       os.path.basename(build)[1:-len(".partial")])))
    return sorted(found)


def _check_same_settings(parts: list[dict]) -> None:
    """Every part's claim (stage, settings, query list, version) must equal the first's,
    except for its files and its part number."""
    def settings(p: dict) -> dict:
        fingerprint = {k: v for k, v in (p["claim"].get("fingerprint") or {}).items() if k not in _PER_PART}
        return {**fingerprint, "version": p["claim"].get("version")}

    first = settings(parts[0])
    for p in parts[1:]:
        other = settings(p)
        differing = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if differing:
            raise WitError(f"{p['dir']}: crawled with other settings than {parts[0]['dir']} "
                           f"({', '.join(differing)}); crawl every part with the same options")


def _finished_shards(part: dict) -> list[str]:
    """The part's download shard ids, each finished (its _stats.json written)."""
    download = os.path.join(part["dir"], DOWNLOAD)
    unfinished = unfinished_shards(download)
    if unfinished:
        raise WitError(f"{download}: shard(s) {', '.join(unfinished)} have no _stats.json, the download did not "
                       f"finish (run array task {part['index']} again; it resumes)")
    return finished_shards(download)


def _numbers(values: list[int]) -> str:
    return ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")


# ---- the merged dir ---------------------------------------------------------------------


def _merge(parts: list[dict], work: WorkDir, final: str) -> dict:
    downloaded = "download" in parts[0]["complete"]
    for sub in (DOWNLOAD, CANDIDATES, SELECTED):   # a killed merge's links are made again
        shutil.rmtree(work.path(sub), ignore_errors=True)
        if sub != DOWNLOAD or downloaded:          # no download/ after --match-only, as in a crawl
            os.makedirs(work.path(sub))

    total = sum(len(p["shards"]) for p in parts)
    width = max(5, len(str(max(total - 1, 0))))
    number = 0
    for p in parts:
        p["merged"] = []
        for shard in p["shards"]:
            merged = f"{number:0{width}d}"
            for suffix in SHARD_FILES:
                source = os.path.join(p["dir"], DOWNLOAD, shard + suffix)
                if os.path.exists(source):
                    _link(source, work, final, DOWNLOAD, merged + suffix)
            p["merged"].append(f"{merged}={shard}")
            number += 1
        for sub in (CANDIDATES, SELECTED):
            for source in sorted(glob.glob(os.path.join(p["dir"], sub, "*.parquet"))):
                _link(source, work, final, sub, f"part-{p['index']}-{os.path.basename(source)}")
    space = crawl_space(parts[0]["dir"])
    matched = _entry_counts(parts, work.path(ENTRY_COUNTS), space)

    summaries = [p["complete"] for p in parts]
    first = parts[0]["claim"]["fingerprint"]
    summary = {
        "tool": "wit merge-crawl", "version": __version__,
        "parts": len(parts),
        "settings": {k: v for k, v in first.items() if k not in _PER_PART},
        "candidate_files": _pool_order(parts),
        "queries": summaries[0]["queries"],
        "counts": sum_counters([s.get("counts") for s in summaries]),
        "queries_matched": int((matched > 0).sum()),
    }
    if space.worldwide:
        summary["languages"] = _languages([p["summary"] for p in parts], space, matched)
    if downloaded:
        download = sum_counters([s["download"] for s in summaries])
        download["errors"] = dict(sorted(download.get("errors", {}).items(), key=lambda e: -e[1]))
        summary["download"] = download
    summary["part_summaries"] = [
        {"dir": os.path.relpath(os.path.abspath(p["dir"]), final), "part": f"{p['index']}/{p['count']}",
         "candidate_files": p["claim"]["fingerprint"].get("candidate_files", []), "shards": p["merged"],
         "counts": p["complete"].get("counts"), "seconds": p["complete"].get("seconds")}
        for p in parts]
    return summary


def _link(source: str, work: WorkDir, final: str, sub: str, name: str) -> None:
    """A relative link at `work.path(sub, name)` that resolves once the build dir is moved
    into place at `final`."""
    os.symlink(os.path.relpath(os.path.abspath(source), os.path.join(final, sub)), work.path(sub, name))


def _entry_counts(parts: list[dict], path: str, space: EntrySpace) -> np.ndarray:
    """`matched` per entry summed over the parts, written dense like a crawl's."""
    matched = np.zeros(space.size, dtype=np.int64)
    for p in parts:
        matched += read_entry_counts(os.path.join(p["dir"], ENTRY_COUNTS), space)
    write_entry_counts(path, matched, space)
    return matched


def _languages(summaries: list[dict], space: EntrySpace, matched: np.ndarray) -> dict:
    """A worldwide crawl's `languages` over the whole pool: the parts' counts summed; t,
    entry matches and queries matched from the summed counts (each part balanced on its own
    counts: its t is in its crawl.json)."""
    languages = sum_counters([s.get("languages") for s in summaries])
    cap = summaries[0]["parameters"]["cap"] * summaries[0]["parameters"]["oversample"]
    thresholds = space_thresholds(matched, space, cap)
    for lang, where in space.slices().items():
        languages[lang].update({"queries": where.stop - where.start, "t": thresholds[lang],
                                "entry_matches": int(matched[where].sum()),
                                "queries_matched": int((matched[where] > 0).sum())})
    return languages


def _pool_order(parts: list[dict]) -> list[str]:
    """The pool's files in the order `wit crawl` lists them: part I took files I, I + N, ..."""
    lists = [p["claim"]["fingerprint"].get("candidate_files", []) for p in parts]
    rounds = max(map(len, lists), default=0)
    return [files[r] for r in range(rounds) for files in lists if r < len(files)]
