"""The `wit` command: one subcommand per stage, a thin adapter over each stage's core."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from wit import __version__
from wit.errors import WitError

NOT_YET = ("crawl", "shard")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if args.command in NOT_YET:
        print(f"wit {args.command}: not yet available in this version", file=sys.stderr)
        return 2
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
    for name in NOT_YET:
        commands.add_parser(name, help="(not yet available)")
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


if __name__ == "__main__":
    sys.exit(main())
