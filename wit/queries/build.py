"""`wit build-queries`: dump chunks counted in parallel, summed, ranked, written atomically.

The output dir is claimed with a fingerprint of the inputs and thresholds
(`wit.formats.workdir`); each counted chunk leaves its counts in the scratch directory and
a marker, so a killed run started again skips the finished chunks. The outputs are
written at the end, `stats.json` last; then the scratch files are removed. On bad input
nothing is left behind.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wit import __version__
from wit.formats.flags import option
from wit.formats.atomic import write_json
from wit.formats.inputs import describe_file
from wit.formats.errors import WitError
from wit.formats.globs import expand
from wit.formats.queries import LANGUAGE_CODE, STATS, write_queries
from wit.formats.processes import worker_pool
from wit.formats.workdir import Unit, WorkDir, claim
from wit.queries.assemble import Candidates, assemble, assemble_worldwide, query_columns
from wit.queries.chunks import ChunkStats, chunk_files, count_chunk
from wit.queries.dumps import DumpFile, open_dump, plan_chunks
from wit.queries.pmi import bigram_counts, qualifying_bigrams, sum_counts
from wit.queries.pageviews import ENGLISH, PageViews, read_pageviews
from wit.queries.segment import SEGMENTED, check_language, join_bigram
from wit.queries.wordnet import DATA_FILES, WordNetLemmas, read_omw, read_wordnet

log = logging.getLogger("wit.build_queries")
TITLE_RULES = ("articles", "all")



@dataclass(frozen=True)
class BuildConfig:
    """Inputs and thresholds of one `wit build-queries` run (MetaCLIP's defaults)."""

    out: str = option(help="QUERIES output directory", metavar="DIR")
    wiki_dumps: tuple[str, ...] = option((), "pages-articles XML export(s), plain or .bz2 (multistream too)",
                                         flag="wiki-dump", metavar="PATH")
    import_list: str = option("", "instead of building: import this query list (MetaCLIP's metadata.json, or a "
                                  "text file with one query per line) as a QUERIES dir", flag="import",
                              metavar="FILE")
    merge: tuple[str, ...] = option((), "instead of building: combine per-language lists into one worldwide list "
                                        "(MetaCLIP 2's {lang}.json layout); LANG=LIST, repeated (a QUERIES dir, a "
                                        "metadata.json or a text file), *=DIR for a worldwide dir, or a dir built "
                                        "with --lang alone",
                                    metavar="LANG=LIST")
    titles: str = option("articles", "which page-view titles are queries: `articles` (non-redirect articles of "
                                     "the given dump) or `all` (MetaCLIP's rule: every title with enough views, "
                                     "redirect names such as UK or NYC too)")
    pageviews: tuple[str, ...] = option((), "page-view dump files (pageviews-YYYYMMDD-HHMMSS.gz); globs allowed",
                                        metavar="GLOB")
    wordnet: str | None = option(None, "WordNet 3.0 database dir (e.g. /usr/share/wordnet) or NLTK data dir",
                                 metavar="DIR")
    lang: str = option("", "build one language of a worldwide list (MetaCLIP 2): the dump's Wikipedia code (de, ja, "
                           "zh, th, ...); words of languages written without spaces are segmented, page views of "
                           "that Wikipedia count, and MetaCLIP 2's per-language caps replace --size, --min-count and "
                           "--min-views (`--lang en` too; without --lang, English as MetaCLIP 1)", metavar="CODE")
    omw: str = option("", "with --lang: Open Multilingual Wordnet data (a wn-data-CODE.tab file, or a dir holding "
                          "it such as NLTK's corpora/omw-1.4), whose lemmas of that language are entries",
                      metavar="PATH")
    size: int = option(500_000, "maximum number of queries")
    min_count: int = option(100, "minimum unigram count")
    min_pmi: float = option(30.0, "minimum bigram PMI (log2)")
    min_bigram_count: int = option(2, "bigrams seen fewer times are not ranked by PMI (a bigram seen once is "
                                      "indistinguishable from noise)")
    min_views: int = option(70, "minimum summed views of a title")
    workers: int = option(os.cpu_count() or 1, "worker processes")
    lowercase: bool = option(False, "lower-case texts and titles")
    chunk_mb: float = option(4.0, "MB of XML per unit of work (and of resume)")
    overwrite: bool = option(False, "replace an existing output made with other settings (built beside it, "
                                    "swapped in when complete)")

    def __post_init__(self) -> None:
        if self.merge:
            if self.import_list or self.wiki_dumps or self.pageviews or self.wordnet:
                raise WitError("--merge: combines finished lists; not with --import, --wiki-dump, --pageviews "
                               "or --wordnet")
            return
        if self.import_list:
            if self.wiki_dumps or self.pageviews or self.wordnet:
                raise WitError("--import: imports a finished list; not with --wiki-dump, --pageviews or --wordnet")
            return
        if not self.wiki_dumps:
            raise WitError("--wiki-dump: at least one Wikipedia dump is required (or --import a list)")
        if self.lang:
            if not LANGUAGE_CODE.fullmatch(self.lang):
                raise WitError(f"--lang: {self.lang!r} is not a Wikipedia language code (e.g. de, ja, zh_yue)")
            check_language(self.lang)
            if self.wordnet and self.lang != ENGLISH:
                raise WitError(f"--wordnet: is Princeton's English WordNet; for --lang {self.lang} give its Open "
                               "Multilingual Wordnet data with --omw")
        if self.omw and not self.lang:
            raise WitError("--omw: only with --lang (a language of a worldwide list)")
        if self.titles not in TITLE_RULES:
            raise WitError(f"--titles: unknown {self.titles!r} (one of: {', '.join(TITLE_RULES)})")
        for name in ("size", "workers", "min_bigram_count"):
            if getattr(self, name) < 1:
                raise WitError(f"--{name.replace('_', '-')}: must be at least 1")
        for name in ("min_count", "min_views"):
            if getattr(self, name) < 0:
                raise WitError(f"--{name.replace('_', '-')}: must not be negative")
        if self.chunk_mb <= 0:
            raise WitError("--chunk-mb: must be positive")

    @property
    def chunk_bytes(self) -> int:
        return int(self.chunk_mb * (1 << 20))


def run(config: BuildConfig) -> dict:
    """Run the whole stage; return the stats also written to `OUT/stats.json`."""
    started = time.time()
    if config.merge:
        from wit.queries.merged import merge_queries

        return merge_queries(config.merge, config.out, config.overwrite, started)
    if config.import_list:
        from wit.queries.imported import import_queries

        return import_queries(config.import_list, config.out, config.overwrite, started)
    dumps = [open_dump(path) for path in config.wiki_dumps]
    wordnet = read_omw(config.omw, config.lang) if config.omw else read_wordnet(config.wordnet) if config.wordnet \
        else None
    views = read_pageviews(expand(config.pageviews, "page-view"), config.lang or ENGLISH)
    with claim(config.out, "build-queries", _fingerprint(config, dumps, views, wordnet), config.overwrite) as work:
        done = work.complete()
        if done is not None:
            return done
        os.makedirs(work.scratch(), exist_ok=True)
        pages, chunk_ids, resumed = _count_all(dumps, work, config)
        stats = _finish(config, dumps, wordnet, views, pages, chunk_ids, resumed, work, started)
        work.finish(stats)
    return stats


def _fingerprint(config: BuildConfig, dumps: list[DumpFile], views: PageViews,
                 wordnet: WordNetLemmas | None) -> dict:
    """What decides the query list: the inputs (path, size, mtime) and every threshold."""
    def identity(path: str) -> list:
        stat = os.stat(path)
        return [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]

    wordnet_files = _wordnet_files(wordnet)
    settings = {f.name: getattr(config, f.name) for f in fields(config)
                if f.name not in ("wiki_dumps", "out", "pageviews", "wordnet", "omw", "workers", "overwrite", "import_list",
                              "merge")}
    return {"wiki_dumps": [identity(d.path) for d in dumps], "pageviews": [identity(p) for p in views.files],
            "wordnet": [identity(p) for p in wordnet_files], **settings}


def _wordnet_files(wordnet: WordNetLemmas | None) -> list[str]:
    if wordnet is None:
        return []
    return [os.path.join(wordnet.source, n) for n in DATA_FILES] if os.path.isdir(wordnet.source) \
        else [wordnet.source]


def _count_all(dumps: list[DumpFile], work: WorkDir, config: BuildConfig) -> tuple[ChunkStats, list[str], int]:
    """Count every chunk not already done, at most two per worker in flight; return the
    page counts, every chunk's id and how many chunks an earlier run had finished."""
    units = (Unit(chunk.chunk_id, (chunk, work.scratch(), config.lowercase, d.hidden_namespaces, config.lang),
                  [os.path.relpath(f, work.root) for f in chunk_files(work.scratch(), chunk.chunk_id).values()],
                  chunk.end - chunk.start)
             for i, d in enumerate(dumps) for chunk in plan_chunks(d, i, config.chunk_bytes))
    pool = None if config.workers == 1 else _worker_pool(config.workers)
    with pool or nullcontext():
        ran = work.run_units(units, count_chunk, pool, desc="dump", unit="B", total=sum(d.size for d in dumps),
                             what="chunks counted", in_flight=2 * config.workers,
                             finish=lambda u, result: asdict(result[1]),
                             rate=lambda r: f"{r.get('pages', 0):,.0f} pages/s, "
                                            f"{r.get('wikitext_bytes', 0) / 1e6:.1f} MB/s wikitext")
    total = sum((ChunkStats(**c) for c in ran.counters.values()), ChunkStats())
    log.info("read %d pages (%d articles) in %d chunks (%d done before)",
             total.pages, total.articles, len(ran.counters), ran.resumed)
    return total, list(ran.counters), ran.resumed


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """Workers forked from a server that has imported the counting code once (fork-safe,
    and no per-worker import of pyarrow)."""
    return worker_pool(workers, "wit.queries.chunks")


def _finish(
    config: BuildConfig, dumps: list[DumpFile], wordnet: WordNetLemmas | None, views: PageViews,
    pages: ChunkStats, chunk_ids: list[str], resumed: int, work: WorkDir, started: float,
) -> dict:
    """Sum the chunks, rank every source, write the outputs."""
    files = [chunk_files(work.scratch(), c) for c in chunk_ids]
    unigrams = sum_counts((f["unigrams"] for f in files), ["word"])
    total_tokens = int(pc.sum(unigrams.column("count")).as_py() or 0)
    titles = _ranked_titles(views, _article_titles(f["titles"] for f in files), config,
                            1 if config.lang else config.min_views)
    lemmas = wordnet.lemmas if wordnet else []
    others = [t for t, _ in titles] + lemmas
    bigrams = bigram_counts((f["bigrams"] for f in files), unigrams, total_tokens,
                            config.min_bigram_count, config.min_pmi,
                            phrases=(t for t in others if t.count(" ") == 1))
    ranked_bigrams = _ranked_bigrams(qualifying_bigrams(bigrams, config.min_bigram_count, config.min_pmi))
    candidates = Candidates(
        unigrams=_ranked_unigrams(unigrams, 1 if config.lang else config.min_count),
        bigrams=[(join_bigram(config.lang, b), n, p) for b, n, p in ranked_bigrams] if config.lang
        else ranked_bigrams,
        titles=titles,
        wordnet=lemmas,
        counts=_known_counts(unigrams, bigrams, others),
    )
    if config.lang:
        queries, per_source = assemble_worldwide(candidates, unigrams.num_rows)
    else:
        queries, per_source = assemble(candidates, config.size)
    write_queries(work.root, query_columns(queries))
    stats = {
        "tool": "wit build-queries",
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {
            "wiki_dumps": [_describe_dump(d) for d in dumps],
            "pageviews": [describe_file(p) for p in views.files],
            "wordnet": _describe_wordnet(wordnet),
        },
        "lang": config.lang or None,
        "thresholds": {
            **({} if config.lang else {"size": config.size, "min_count": config.min_count,
                                       "min_views": config.min_views}),
            "min_pmi": config.min_pmi, "min_bigram_count": config.min_bigram_count,
            "lowercase": config.lowercase, "titles": config.titles,
        },
        **({"segmenter": SEGMENTED.get(config.lang)} if config.lang else {}),
        "pages": asdict(pages),
        "tokens": total_tokens,
        "vocabulary": unigrams.num_rows,
        "pageview_lines": views.lines,
        "pageview_malformed_lines": views.malformed_lines,
        "wordnet_synsets": wordnet.synsets if wordnet else 0,
        "wordnet_distinct_lemmas": len(set(lemmas)),
        "sources": per_source,
        "queries": len(queries),
        "chunks": len(chunk_ids),
        "chunks_resumed": resumed,
        "workers": config.workers,
        "seconds": round(time.time() - started, 3),
    }
    write_json(work.path(STATS), stats)
    return stats


def _ranked_unigrams(unigrams: pa.Table, min_count: int) -> list[tuple[str, int]]:
    kept = unigrams.filter(pc.greater_equal(unigrams.column("count"), min_count))
    kept = kept.sort_by([("count", "descending"), ("word", "ascending")])
    return list(zip(kept.column("word").to_pylist(), kept.column("count").to_pylist()))


def _ranked_bigrams(bigrams: pa.Table) -> list[tuple[str, int, float]]:
    ranked = bigrams.sort_by([("pmi", "descending"), ("count", "descending"),
                              ("first", "ascending"), ("second", "ascending")])
    columns = [ranked.column(c).to_pylist() for c in ("first", "second", "count", "pmi")]
    return [(f"{a} {b}", n, p) for a, b, n, p in zip(*columns)]


def _article_titles(title_files: Iterable[str]) -> set[str]:
    titles: set[str] = set()
    for path in title_files:
        titles.update(pq.read_table(path).column("title").to_pylist())
    return titles


def _ranked_titles(views: PageViews, articles: set[str], config: BuildConfig,
                   min_views: int) -> list[tuple[str, int]]:
    """The titles with at least `min_views` views, most viewed first: the dump's articles
    (`--titles articles`), or every page-view title (`all`, MetaCLIP's rule)."""
    ranked: dict[str, int] = {}
    for title, n in views.views.items():
        if config.titles == "all" or title in articles:
            key = title.lower() if config.lowercase else title
            ranked[key] = ranked.get(key, 0) + n  # lower-casing may merge titles
    kept = [(t, n) for t, n in ranked.items() if n >= min_views]
    return sorted(kept, key=lambda item: (-item[1], item[0]))


def _known_counts(unigrams: pa.Table, bigrams: pa.Table, texts: list[str]) -> dict[str, int]:
    """Wikipedia counts of the given one- or two-word entries (`bigrams` holds the
    two-word ones that occur)."""
    words = pa.array(sorted({t for t in texts if " " not in t}), pa.string())
    found = unigrams.filter(pc.is_in(unigrams.column("word"), value_set=words))
    counts = dict(zip(found.column("word").to_pylist(), found.column("count").to_pylist()))
    for first, second, n in zip(*(bigrams.column(c).to_pylist() for c in ("first", "second", "count"))):
        counts[f"{first} {second}"] = n
    return counts


def _describe_dump(dump: DumpFile) -> dict:
    kind = "bz2-multistream" if dump.multistream else "bz2" if dump.compressed else "xml"
    return {**describe_file(dump.path), "format": kind, "bz2_streams": len(dump.stream_offsets)}


def _describe_wordnet(wordnet: WordNetLemmas | None) -> dict | None:
    if wordnet is None:
        return None
    if os.path.isdir(wordnet.source):
        return {"path": os.path.abspath(wordnet.source),
                "files": [describe_file(os.path.join(wordnet.source, n)) for n in DATA_FILES]}
    return {"path": os.path.abspath(wordnet.source), "files": [describe_file(wordnet.source)]}
