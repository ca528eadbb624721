"""Merge the parts of a crawl run as a SLURM array (crawl.sbatch) into one CRAWL dir.

    python pipelines/slurm/merge_crawl.py OUT

OUT/part-0 ... OUT/part-{N-1} are complete `wit crawl` outputs (each with the
partition.json crawl.sbatch writes). OUT itself becomes the CRAWL dir of the whole pool:

- `download/NNNNN.tar`, `NNNNN.parquet`, `NNNNN_stats.json`: relative symbolic links to
  every part's download shards, renumbered part after part so names never collide
  (`wit shard --crawl OUT` reads these);
- `candidates/`, `selected/`: links to the parts' files, prefixed `part-I-`;
- `entry_counts.parquet`: `matched` per query summed over the parts (the whole pool's);
- `crawl.json`: counts and download results summed over the parts, the settings they
  share, and per part its files and which merged shard is which of its shards.

Every part must be finished (`crawl.json` written) and crawled with the same settings and
query list. The merge writes into a temporary directory and moves the results into place,
`crawl.json` last; run again, it rebuilds the same links. Nothing in the parts is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PROG = "merge_crawl"
PART_DIR = re.compile(r"part-(\d+)")
STATS = re.compile(r"(\d+)_stats\.json")
SHARD_FILES = (".tar", ".parquet", "_stats.json")
OUTPUTS = ("download", "candidates", "selected", "entry_counts.parquet")


class MergeError(Exception):
    pass


def merge(out: Path) -> dict:
    """Make `out` the CRAWL dir of its parts; return the merged summary (crawl.json)."""
    out = Path(out)
    parts = _parts(out)
    settings = _common_settings(parts)
    tmp = out / ".merge.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("download", "candidates", "selected"):
        (tmp / sub).mkdir(parents=True)

    shards = [(part, stats_id) for part in parts for stats_id in _finished_shards(part)]
    width = max(5, len(str(len(shards) - 1)))
    names: dict[str, list[str]] = {part["name"]: [] for part in parts}
    for number, (part, shard_id) in enumerate(shards):
        merged = f"{number:0{width}d}"
        for suffix in SHARD_FILES:
            source = part["dir"] / "download" / f"{shard_id}{suffix}"
            if source.exists():
                _link(source, out / "download", tmp / "download" / f"{merged}{suffix}")
        names[part["name"]].append(f"{merged}={shard_id}")
    for part in parts:
        for sub in ("candidates", "selected"):
            for source in sorted((part["dir"] / sub).glob("*.parquet")):
                _link(source, out / sub, tmp / sub / f"{part['name']}-{source.name}")
    matched = _entry_counts(parts, tmp / "entry_counts.parquet")

    summaries = [part["crawl"] for part in parts]
    summary = {
        "tool": "merge_crawl",
        "parts": len(parts),
        "settings": settings,
        "queries": summaries[0].get("queries"),
        "counts": _sum([s.get("counts", {}) for s in summaries]),
        "queries_matched": matched,
    }
    if any("download" in s for s in summaries):
        summary["download"] = _sum([s.get("download", {}) for s in summaries])
    summary["part_summaries"] = [
        {"dir": part["name"], "files": part["partition"]["files"], "shards": names[part["name"]],
         "counts": part["crawl"].get("counts"), "seconds": part["crawl"].get("seconds")}
        for part in parts]
    _install(out, tmp, summary)
    return summary


def _parts(out: Path) -> list[dict]:
    if not out.is_dir():
        raise MergeError(f"{out}: no such directory")
    if (out / "crawl_config.json").exists():
        raise MergeError(f"{out}: is itself a `wit crawl` output, not a dir of crawl.sbatch parts")
    found = {}
    for path in out.iterdir():
        match = PART_DIR.fullmatch(path.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path
    if not found:
        raise MergeError(f"{out}: no part-N directories (run crawl.sbatch first)")
    parts = []
    for index in sorted(found):
        path = found[index]
        partition = _read_json(path / "partition.json", "not written by crawl.sbatch")
        if not (path / "crawl.json").exists():
            raise MergeError(f"{path}: no crawl.json, its crawl did not finish (run array task {index} again; "
                             "it resumes)")
        parts.append({"index": index, "name": path.name, "dir": path, "partition": partition,
                      "crawl": _read_json(path / "crawl.json", "unreadable"),
                      "config": _read_json(path / "crawl_config.json", "unreadable")})
    declared = {part["partition"]["parts"] for part in parts}
    if len(declared) > 1:
        raise MergeError(f"{out}: the parts disagree on the number of partitions ({sorted(declared)})")
    expected = declared.pop()
    missing = sorted(set(range(expected)) - set(found))
    extra = sorted(set(found) - set(range(expected)))
    if missing or extra:
        detail = ", ".join(filter(None, [missing and f"missing part(s) {_numbers(missing)}",
                                         extra and f"unexpected part(s) {_numbers(extra)}"]))
        raise MergeError(f"{out}: {expected} partitions declared, {detail} (run those array tasks, "
                         "e.g. `sbatch --array=I crawl.sbatch` with PARTS set)")
    return parts


def _common_settings(parts: list[dict]) -> dict:
    """The parts' crawl_config.json without the file lists; they must all be equal."""
    settings = [{k: v for k, v in part["config"].items() if k != "candidate_files"} for part in parts]
    differing = sorted({k for s in settings for k in s if any(s.get(k) != other.get(k) for other in settings)})
    if differing:
        raise MergeError(f"the parts were crawled with different settings ({', '.join(differing)}): "
                         "crawl every part with the same arguments")
    seen: dict[str, str] = {}
    for part in parts:
        for name in part["config"].get("candidate_files", []):
            if name in seen:
                raise MergeError(f"{name}: crawled by both {seen[name]} and {part['name']}")
            seen[name] = part["name"]
    return {**settings[0], "candidate_files": list(seen)}


def _finished_shards(part: dict) -> list[str]:
    """The part's download shard ids, each done (its _stats.json written)."""
    download = part["dir"] / "download"
    if not download.is_dir():
        return []
    done = sorted(m.group(1) for p in download.iterdir() if (m := STATS.fullmatch(p.name)))
    unfinished = sorted({p.stem for p in download.glob("*.tar")} - set(done))
    if unfinished:
        raise MergeError(f"{download}: shard(s) {', '.join(unfinished)} have no _stats.json, the download did not "
                         f"finish (run array task {part['index']} again; it resumes)")
    return done


def _entry_counts(parts: list[dict], path: Path) -> int:
    """Sum `matched` per query over the parts; write it; the number of queries matched."""
    total: pa.Array | None = None
    query_ids = None
    for part in parts:
        table = pq.read_table(part["dir"] / "entry_counts.parquet").sort_by("query_id")
        if total is None:
            query_ids, total = table["query_id"], table["matched"]
        elif table.num_rows != len(total):
            raise MergeError(f"{part['dir']}: entry_counts.parquet has {table.num_rows} queries, "
                             f"{parts[0]['name']} has {len(total)}")
        else:
            total = pc.add(total, table["matched"])
    pq.write_table(pa.table({"query_id": query_ids, "matched": total}), path)
    return int(pc.sum(pc.greater(total, 0)).as_py() or 0)


def _sum(values: list):
    """Numbers added up, dicts merged key by key (recursively), anything else kept when
    equal in every part, else listed per part."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: _sum([v.get(k) for v in present]) for k in keys}
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        total = sum(present)
        return round(total, 6) if isinstance(total, float) else total
    return present[0] if all(v == present[0] for v in present) else present


def _link(source: Path, final_dir: Path, link: Path) -> None:
    """A relative link at `link` that resolves once its directory is moved to `final_dir`."""
    os.symlink(os.path.relpath(source, final_dir), link)


def _install(out: Path, tmp: Path, summary: dict) -> None:
    """Replace the merged outputs of an earlier merge (only links and files it made),
    then write crawl.json, the marker of a complete merge."""
    for name in OUTPUTS:
        old = out / name
        if old.is_dir() and not old.is_symlink():
            strays = [p.name for p in old.iterdir() if not p.is_symlink()]
            if strays:
                raise MergeError(f"{old}: holds files the merge did not make ({strays[0]}, ...): not replacing it")
    (out / "crawl.json").unlink(missing_ok=True)
    for name in OUTPUTS:
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
        os.replace(tmp / name, old)
    with open(tmp / "crawl.json", "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    os.replace(tmp / "crawl.json", out / "crawl.json")
    tmp.rmdir()


def _read_json(path: Path, problem: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MergeError(f"{path}: missing ({problem})") from None
    except (OSError, ValueError) as e:
        raise MergeError(f"{path}: {problem} ({e})") from None


def _numbers(values: list[int]) -> str:
    return ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the OUT dir given to crawl.sbatch (holds part-0, part-1, ...)")
    args = parser.parse_args(argv)
    try:
        summary = merge(Path(args.out))
    except MergeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    download = summary.get("download", {})
    print(f"{PROG}: {summary['parts']} parts -> {args.out}: {summary['counts'].get('matched', 0)} matched, "
          f"{summary['counts'].get('selected', 0)} selected, {download.get('successes', 0)} downloaded in "
          f"{download.get('shards', 0)} shards", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
