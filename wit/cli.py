"""The `wit` command: one subcommand per stage, a thin adapter over each stage's core."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from wit import __version__
from wit.errors import WitError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        args.run(args)
    except WitError as e:
        print(f"wit {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"wit {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build_queries(commands)
    _add_crawl(commands)
    _add_shard(commands)
    _add_inspect(commands)
    return parser


def _add_build_queries(commands) -> None:
    p = commands.add_parser(
        "build-queries", help="Wikipedia dump + page views + WordNet -> the query list",
        description="Build the CLIP/MetaCLIP query list: Wikipedia unigrams and bigrams, "
                    "article titles by page views, WordNet synsets.",
    )
    p.add_argument("--wiki-dump", nargs="+", required=True, metavar="PATH",
                   help="pages-articles XML export(s), plain or .bz2 (multistream too)")
    p.add_argument("--pageviews", nargs="+", default=[], metavar="GLOB",
                   help="page-view dump files (pageviews-YYYYMMDD-HHMMSS.gz); globs allowed")
    p.add_argument("--wordnet", metavar="DIR",
                   help="WordNet 3.0 database dir (e.g. /usr/share/wordnet) or NLTK data dir")
    p.add_argument("--out", required=True, metavar="DIR", help="QUERIES output directory")
    p.add_argument("--size", type=int, default=500_000, help="maximum number of queries")
    p.add_argument("--min-count", type=int, default=100, help="minimum unigram count")
    p.add_argument("--min-pmi", type=float, default=30.0, help="minimum bigram PMI (log2)")
    p.add_argument("--min-bigram-count", type=int, default=2,
                   help="bigrams seen fewer times are not ranked by PMI (default 2: a bigram "
                        "seen once is indistinguishable from noise)")
    p.add_argument("--min-views", type=int, default=70, help="minimum summed views of a title")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: all cores)")
    p.add_argument("--lowercase", action="store_true", help="lower-case texts and titles")
    p.add_argument("--chunk-mb", type=float, default=4.0,
                   help="MB of XML per unit of work (and of resume)")
    p.set_defaults(run=_run_build_queries)


def _run_build_queries(args: argparse.Namespace) -> None:
    from wit.queries.build import BuildConfig, build_queries

    config = BuildConfig(
        wiki_dumps=tuple(args.wiki_dump), out=args.out, pageviews=tuple(args.pageviews),
        wordnet=args.wordnet, size=args.size, min_count=args.min_count, min_pmi=args.min_pmi,
        min_bigram_count=args.min_bigram_count, min_views=args.min_views, workers=args.workers,
        lowercase=args.lowercase, chunk_mb=args.chunk_mb,
    )
    stats = build_queries(config)
    sources = ", ".join(f"{s} {v['first_listed_by']:,}" for s, v in stats["sources"].items())
    print(f"wit build-queries: {stats['queries']:,} queries ({sources}) from "
          f"{stats['pages']['articles']:,} articles in {stats['seconds']:.1f}s -> {args.out}",
          file=sys.stderr)


def _add_crawl(commands) -> None:
    p = commands.add_parser(
        "crawl", help="candidate pool -> substring matching -> balancing -> download",
        description="Match a pool of (image url, text) candidates against the query list, "
                    "balance it (MetaCLIP) and download the images with img2dataset.",
    )
    p.add_argument("--queries", required=True, metavar="DIR", help="QUERIES dir (wit build-queries)")
    p.add_argument("--out", required=True, metavar="DIR", help="CRAWL output directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--candidates", nargs="+", metavar="GLOB",
                        help="Parquet/CSV/TSV/JSONL files (local or fsspec urls) of url + text")
    source.add_argument("--wat", nargs="+", metavar="GLOB", help="Common Crawl WAT files")
    p.add_argument("--url-col", default="url")
    p.add_argument("--text-col", default="text")
    p.add_argument("--cap", type=int, default=20_000, help="pairs per query (MetaCLIP's t)")
    p.add_argument("--oversample", type=float, default=1.3,
                   help="crawl-time cap is cap * oversample, leaving room for failed downloads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lowercase", action="store_true", help="case-insensitive matching")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--resize-mode", default="keep_ratio")
    p.add_argument("--samples-per-shard", type=int, default=10_000)
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", type=int, default=32, help="download threads per process")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per download attempt, in all")
    p.add_argument("--retries", type=int, default=1)
    p.add_argument("--distributor", default="multiprocessing", help="multiprocessing or pyspark")
    p.add_argument("--spark-master", metavar="URL", help="e.g. spark://host:7077 (default: local mode)")
    p.add_argument("--allow-private-hosts", action="store_true",
                   help="fetch private, loopback and link-local addresses too (tests, intranets)")
    p.add_argument("--match-only", action="store_true", help="stop after writing selected/")
    p.set_defaults(run=_run_crawl)


def _run_crawl(args: argparse.Namespace) -> None:
    from wit.crawl.run import CrawlConfig, crawl

    config = CrawlConfig(
        queries=args.queries, out=args.out, candidates=tuple(args.candidates or ()),
        wat=tuple(args.wat or ()), url_col=args.url_col, text_col=args.text_col, cap=args.cap,
        oversample=args.oversample, seed=args.seed, lowercase=args.lowercase,
        allow_private_hosts=args.allow_private_hosts, image_size=args.image_size,
        resize_mode=args.resize_mode, samples_per_shard=args.samples_per_shard,
        processes=args.processes, threads=args.threads, timeout=args.timeout, retries=args.retries,
        distributor=args.distributor, spark_master=args.spark_master, match_only=args.match_only,
    )
    summary = crawl(config)
    counts = summary["counts"]
    downloaded = f", {counts['downloaded']:,} downloaded" if "downloaded" in counts else ""
    print(f"wit crawl: {counts['read']:,} candidates read, {counts['refused_total']:,} refused, "
          f"{counts['matched']:,} matched, {counts['selected']:,} selected{downloaded} -> {args.out}",
          file=sys.stderr)


def _add_shard(commands) -> None:
    p = commands.add_parser("shard", help="downloaded pairs -> final WebDataset shards",
                            description="Balance, de-duplicate and write the final shards of a crawl.")
    p.add_argument("--crawl", required=True, metavar="DIR", help="CRAWL dir (wit crawl)")
    p.add_argument("--out", metavar="DIR", help="SHARDS dir (default: shards/<crawl dir name>)")
    p.add_argument("--cap", type=int, default=20_000, help="final pairs per query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-per-shard", type=int, default=10_000)
    p.add_argument("--dedup", default="uid,sha256", help="keys to de-duplicate by (uid, sha256)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.set_defaults(run=_run_shard)


def _run_shard(args: argparse.Namespace) -> None:
    from wit.shards.build import ShardConfig, default_out, shard

    out = args.out or default_out(args.crawl)
    config = ShardConfig(crawl=args.crawl, out=out, cap=args.cap, seed=args.seed,
                         samples_per_shard=args.samples_per_shard,
                         dedup=tuple(k for k in args.dedup.split(",") if k), workers=args.workers)
    manifest = shard(config)
    counts = manifest["counts"]
    print(f"wit shard: {manifest['total_samples']:,} samples in {len(manifest['shards']):,} shards "
          f"({counts['samples_read']:,} read, {counts.get('duplicates_by_uid', 0) + counts.get('duplicates_by_sha256', 0):,} "
          f"duplicates, {counts['balanced_out']:,} over the cap) -> {out}", file=sys.stderr)


def _add_inspect(commands) -> None:
    p = commands.add_parser("inspect", help="summarise and verify a SHARDS dir")
    p.add_argument("shards", metavar="SHARDS_DIR")
    p.add_argument("--verify", action="store_true", help="re-hash every tar and read every sample")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N samples")
    p.set_defaults(run=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> None:
    from wit.shards.inspect import load, show, summary_lines, verify

    manifest, card = load(args.shards)
    for line in summary_lines(manifest, card) + show(args.shards, manifest, args.show):
        print(line)
    if args.verify:
        result = verify(args.shards, manifest)
        for problem in result.problems:
            print(f"problem: {problem}")
        if result.problems:
            raise WitError(f"{args.shards}: {len(result.problems)} problems found")
        print(f"verified: {result.shards} shards, {result.samples:,} samples, all hashes match")


if __name__ == "__main__":
    sys.exit(main())
