"""`wit build-queries --merge LANG=LIST ...`: per-language query lists combined into one
worldwide query list (MetaCLIP 2's layout, `wit.formats.queries`): one `{lang}.json` per
language, each list in its own order (query ids are (lang, index)), and `stats.json`
naming every input with its sha256 and size. A LIST is anything `--queries` takes: a
QUERIES dir, a metadata.json, a text file, or a worldwide dir (LANG is then `*`, and every
language in it is taken); a QUERIES dir built with `--lang` may be given alone. A language
given twice is refused."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from wit import __version__
from wit.formats.atomic import read_json_object, write_json
from wit.formats.errors import WitError
from wit.formats.queries import (LANGUAGE_CODE, STATS, QueryList, is_worldwide, read_queries, read_worldwide,
                                 write_worldwide)
from wit.formats.workdir import claim


def parse_merge(spec: str) -> tuple[str, str]:
    """LANG=PATH (or *=PATH for a worldwide dir, or a QUERIES dir built with `--lang`, whose
    stats.json names its language) into (lang, path)."""
    built = _built_language(spec)
    if built:
        return built, spec
    lang, sep, path = spec.partition("=")
    if not sep or not path or not (lang == "*" or LANGUAGE_CODE.fullmatch(lang)):
        raise WitError(f"--merge {spec}: give LANG=LIST (a Wikipedia language code, e.g. ja=queries-ja/) "
                       "or *=DIR for a worldwide dir")
    return lang, path


def _built_language(path: str) -> str | None:
    """The language a QUERIES dir was built for (`wit build-queries --lang`), if it is one."""
    stats = os.path.join(path, STATS)
    if not (os.path.isdir(path) and os.path.isfile(stats)):
        return None
    lang = read_json_object(stats, "query list stats").get("lang")
    return lang if isinstance(lang, str) and LANGUAGE_CODE.fullmatch(lang) else None


def merge_queries(specs: tuple[str, ...], out: str, overwrite: bool, started: float) -> dict:
    """Write the worldwide dir `out` from the per-language lists; its stats."""
    lists: dict[str, QueryList] = {}
    for lang, path in map(parse_merge, specs):
        if lang == "*":
            if not is_worldwide(path):
                raise WitError(f"--merge *={path}: not a worldwide dir of {{lang}}.json files")
            found = read_worldwide(path).lists
        else:
            found = {lang: read_queries(path)}
        for code, query_list in found.items():
            if code in lists:
                raise WitError(f"--merge: language {code} given twice ({lists[code].path} and {query_list.path})")
            lists[code] = query_list
    lists = dict(sorted(lists.items()))
    inputs = {lang: {"path": q.path, "sha256": q.sha256, "format": q.format, "queries": len(q.queries)}
              for lang, q in lists.items()}
    with claim(out, "build-queries", {"merge": inputs}, overwrite, inputs=tuple(q.path for q in lists.values())) as work:
        done = work.complete()
        if done is not None:
            return done
        write_worldwide(work.root, {lang: q.queries for lang, q in lists.items()})
        stats = {
            "tool": "wit build-queries --merge", "version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": inputs, "languages": len(lists), "queries": sum(len(q.queries) for q in lists.values()),
            "seconds": round(time.time() - started, 3),
        }
        write_json(work.path(STATS), stats)
        work.finish(stats)
    return stats
