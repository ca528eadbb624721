"""`wit build-queries --import FILE`: a finished query list (MetaCLIP's metadata.json, or
one query per line) as a full QUERIES dir, so that every stage reads it like a built one.

Every query gets `sources` = ["imported"] (count, pmi and views unknown); `stats.json`
names the file and its sha256, and reports what MetaCLIP's matcher does with the list:
the ids of duplicated entries (each is matched) and of entries that can never match.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from wit import __version__
from wit.formats.atomic import write_json
from wit.formats.queries import IMPORTED, STATS, duplicates, never_matching, read_queries, write_queries
from wit.formats.workdir import claim
from wit.formats.inputs import describe_file

EXAMPLES = 20


def import_queries(path: str, out: str, overwrite: bool, started: float) -> dict:
    """Write the QUERIES dir `out` from the list at `path`; its stats."""
    query_list = read_queries(path)
    queries = query_list.queries
    with claim(out, "build-queries", {"import": query_list.path, "sha256": query_list.sha256},
               overwrite, inputs=(path,)) as work:
        done = work.complete()
        if done is not None:
            return done
        write_queries(work.root, {"query": queries, "sources": [[IMPORTED]] * len(queries),
                                  "count": [None] * len(queries), "pmi": [None] * len(queries),
                                  "views": [None] * len(queries)})
        repeated = duplicates(queries)
        unmatchable = never_matching(queries)
        stats = {
            "tool": "wit build-queries --import", "version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": {"import": {**describe_file(path), "format": query_list.format}},
            "sources": {IMPORTED: {"qualified": len(queries), "listed": len(queries),
                                   "first_listed_by": len(queries)}},
            "queries": len(queries),
            "duplicates": {"entries": len(repeated), "ids": repeated},
            "never_matching": {"entries": len(unmatchable),
                               "examples": [queries[i] for i in unmatchable[:EXAMPLES]]},
            "seconds": round(time.time() - started, 3),
        }
        write_json(work.path(STATS), stats)
        work.finish(stats)
    return stats
