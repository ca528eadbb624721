"""`wit view DIR`: a local, read-only web page over a SHARDS dir, and optionally its EMBED
dir (more like this; text search with the model that made it) and a FILTER dir made
from it (what was removed and why, beside what it matched).

1. Check the inputs: DIR a finished SHARDS dir, the FILTER dir made from it as it is now,
   the EMBED dir of its shards, the checkpoint the one the embeddings were made with.
2. Build (or finish, or confirm) the index in the cache dir: one SQLite transaction per
   shard, read in worker processes (wit.view.index); then, once each, the FILTER dir's
   removals and annotations (wit.view.filtered) and the image vectors (wit.view.vectors).
3. Serve the pages (wit.view.app) until Ctrl-C. Every page is answered from the index and
   the few members it shows; nothing reads every shard per request.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from wit.formats.errors import WitError
from wit.formats.flags import option
from wit.formats.locks import OutputLock
from wit.formats.processes import worker_pool
from wit.view import filtered as filter_index, index, vectors as vector_cache
from wit.view.app import View, create_app, is_loopback
from wit.view.sources import (Embedded, Filtered, QueryNames, Shards, cache_dir, datacard, open_embedded,
                              open_filtered, open_shards, query_names)

PROG = "wit view"


@dataclass(frozen=True)
class ViewConfig:
    shards: str = option(help="the SHARDS dir to show (wit shard or wit filter output)", metavar="DIR",
                         positional=True)
    embeddings: str = option("", "the EMBED dir of DIR (wit embed): 'more like this image', and text search with "
                                 "--checkpoint", metavar="DIR")
    filtered: str = option("", "a `wit filter` output made from DIR: what it removed, why and matching what; "
                               "annotations; its data card", metavar="DIR")
    checkpoint: str = option("", "the checkpoint the --embeddings were made with: search images by a typed text",
                             metavar="FILE")
    model: str = option("", "the architecture of an OpenCLIP --checkpoint file (as for wit embed)",
                        metavar="NAME|FILE")
    tokenizer: str = option("", "with --model: the tokenizer file of its text tower (as for wit embed)",
                            metavar="FILE")
    queries: str = option("", "the query list that names DIR's query ids (default: the one its crawl matched "
                              "against, when it is still there)", metavar="PATH")
    host: str = option("127.0.0.1", "address to serve on (anyone who can reach it can read the data)")
    port: int = option(8765, "port to serve on (0: any free port)")
    index: str = option("", "the cache dir of the index (default: ~/.cache/wit/view/<hash of DIR's path and "
                            "manifest>); never inside DIR", metavar="DIR")
    page_size: int = option(48, "samples per page")
    workers: int = option(min(4, os.cpu_count() or 1), "processes reading shards while the index is built")
    index_only: bool = option(False, "build the index and the caches, then exit without serving")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise WitError(f"--port: {self.port} is not a port (0-65535)")
        if not 1 <= self.page_size <= 500:
            raise WitError("--page-size: must be between 1 and 500")
        if self.workers < 1:
            raise WitError("--workers: must be at least 1")
        if self.checkpoint and not self.embeddings:
            raise WitError("--checkpoint: only with --embeddings (text search looks through the EMBED dir's "
                           "image vectors)")
        if self.model and not self.checkpoint:
            raise WitError("--model: only with --checkpoint (an OpenCLIP file's architecture)")
        if self.tokenizer and not self.model:
            raise WitError("--tokenizer: only with --model (a trainer checkpoint names its own tokenizer)")


def prepare(config: ViewConfig) -> tuple[View, dict]:
    """Check the inputs, build what is missing of the index and caches; the pages' View and
    a summary."""
    shards = open_shards(config.shards)
    filtered = open_filtered(config.filtered, shards) if config.filtered else None
    embedded = open_embedded(config.embeddings, shards) if config.embeddings else None
    names = query_names(shards, config.queries)
    cache = cache_dir(shards, config.index)
    try:
        os.makedirs(cache, exist_ok=True)
    except OSError as e:
        raise WitError(f"{cache}: cannot make the index dir ({e.strerror or e}); give --index DIR") from None
    path = os.path.join(cache, index.INDEX_FILE)
    with OutputLock(os.path.join(cache, ".build.lock"), f"the index {cache}"):   # one builder at a time
        view, report = _build(config, shards, filtered, embedded, names, cache, path)
    summary = {"samples": report.samples, "shards": report.shards, "index": path, "built_shards": report.built,
               "seconds": round(report.seconds, 3)}
    return view, summary


def _build(config: ViewConfig, shards: Shards, filtered: Filtered | None, embedded: Embedded | None,
           names: QueryNames, cache: str, path: str) -> tuple[View, index.BuildReport]:
    """The index (built, finished or confirmed), then the FILTER and EMBED caches; the View."""
    report = index.build(shards.root, shards.manifest, path, shards.identity, config.workers,
                         index.Progress(PROG), pool_factory=lambda n: worker_pool(n, "wit.view.index"))
    if report.built:
        print(f"{PROG}: indexed {report.samples:,} samples of {report.shards:,} shards in {report.seconds:.1f}s "
              f"({report.built:,} shards now) -> {path}", file=sys.stderr, flush=True)
    else:
        print(f"{PROG}: index up to date ({report.samples:,} samples, {report.shards:,} shards) at {path}",
              file=sys.stderr, flush=True)
    view = View(shards, index.Index(path), names, config.page_size, card=datacard(shards.root))
    if filtered is not None:
        view.filtered = filtered
        view.filters = filter_index.FilterIndex(filter_index.build(filtered, view.index, cache), filtered)
        view.evals = filter_index.EvalImages(view.filters)
        view.filter_card = datacard(filtered.root)
    if embedded is not None:
        view.embedded = embedded
        view.vectors = vector_cache.Vectors(vector_cache.build(embedded, view.index, cache))
        if config.checkpoint:
            view.encoder = vector_cache.TextEncoder(config.checkpoint, config.model, config.tokenizer, embedded)
        else:
            view.notes.append("Text search needs --checkpoint (the model of the EMBED dir).")
    if not names.source:
        view.notes.append("Query names unknown: give --queries (the crawl's query list) to show them.")
    return view, report


def run(config: ViewConfig) -> dict:
    """Prepare, then serve until interrupted (with --index-only, return after preparing)."""
    view, summary = prepare(config)
    if config.index_only:
        return summary
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(view, config.host)
    try:
        server = make_server(config.host, config.port, app, threaded=True)
    except OSError as e:
        raise WitError(f"{config.host}:{config.port}: cannot serve there ({e.strerror or e}; try another --port)") \
            from None
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{server.server_port}/"
    if not is_loopback(config.host):
        print(f"{PROG}: serving on {config.host}, not a loopback address: anyone who can reach it can read the data",
              file=sys.stderr)
    print(f"{PROG}: serving {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return {**summary, "url": url}

