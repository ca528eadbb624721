"""The `wit` command: one subcommand per stage, its flags generated from the stage's config."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from functools import partial

from wit import __version__
from wit.formats.flags import add_flags, config_from
from wit.formats.errors import WitError
from wit.formats.processes import lead


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    return lead(f"wit {args.command}", partial(_run, args), resumes=args.command not in ("inspect", "view"))


def _run(args: argparse.Namespace) -> int:
    """The stage, its errors as one line each (SIGINT and SIGTERM: see wit.formats.processes)."""
    try:
        args.run(args)
    except WitError as e:
        return _fail(args.command, str(e))
    except OSError as e:   # a full disk, a read-only dir, a vanished file: one line, naming the file
        config = getattr(args, "config", None)
        where = e.filename or getattr(config, "out", None) or "output"
        hint = "; free some space and run the same command again to resume" if e.errno == errno.ENOSPC else ""
        return _fail(args.command, f"{where}: {e.strerror or e}{hint}")
    return 0


def _fail(command: str, message: str) -> int:
    print(f"wit {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `wit` parser; when `command` names a subcommand, only its flags are built (the
    other stages' modules are not imported: some take a while)."""
    parser = argparse.ArgumentParser(prog="wit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stages = [
        ("build-queries", "wit.queries.build:BuildConfig", _build_queries,
         "Wikipedia dump + page views + WordNet -> the query list"),
        ("crawl", "wit.crawl.config:CrawlConfig", _crawl,
         "candidate pool -> substring matching -> balancing -> download"),
        ("shard", "wit.shards.build:ShardConfig", _shard, "downloaded pairs -> final WebDataset shards"),
        ("merge-crawl", "wit.crawl.merge:MergeConfig", _merge_crawl,
         "the parts of a crawl (wit crawl --part I/N) -> one CRAWL dir"),
        ("embed", "wit.embed.run:EmbedConfig", _embed,
         "SHARDS dir -> image and text embeddings of every sample (any OpenCLIP model)"),
        ("filter", "wit.filter.run:FilterConfig", _filter, "SHARDS dir -> filtered SHARDS dir (near-duplicates, "
                                                           "test-set overlap, CLIP score, text rules)"),
        ("view", "wit.view.run:ViewConfig", _view,
         "a local, read-only web page over a SHARDS dir (and its EMBED and FILTER outputs)"),
    ]
    if command not in {name for name, *_ in stages} | {"inspect"}:
        command = None
    parsers = [(commands.add_parser(name, help=description, description=description), name, where, run)
               for name, where, run, description in stages]
    parsers.append((commands.add_parser("inspect", help="summarise and verify a SHARDS dir"), "inspect",
                    "wit.shards.inspect:InspectConfig", _inspect))
    for p, name, where, run in parsers:
        if command in (None, name):
            module, _, attr = where.partition(":")
            config = getattr(importlib.import_module(module), attr)
            add_flags(p, config)
            p.set_defaults(run=partial(_run_stage, config, run))
    return parser


def _run_stage(config: type, run, args: argparse.Namespace) -> None:
    args.config = config_from(args, config)
    run(args.config)


def _build_queries(config) -> None:
    from wit.queries.build import run

    stats = run(config)
    if config.merge:
        print(f"wit build-queries: {stats['queries']:,} queries in {stats['languages']} languages "
              f"({', '.join(stats['inputs'])}) -> {config.out}", file=sys.stderr)
        return
    if config.import_list:
        print(f"wit build-queries: {stats['queries']:,} queries imported from {config.import_list} "
              f"({stats['duplicates']['entries']:,} duplicated, {stats['never_matching']['entries']:,} never "
              f"matching) -> {config.out}", file=sys.stderr)
        return
    listed = "listed" if stats.get("lang") else "first_listed_by"   # --lang: MetaCLIP 2's per-source caps
    sources = ", ".join(f"{s} {v[listed]:,}" for s, v in stats["sources"].items())
    language = f" in {stats['lang']}" if stats.get("lang") else ""
    print(f"wit build-queries: {stats['queries']:,} queries{language} ({sources}) from "
          f"{stats['pages']['articles']:,} articles in {stats['seconds']:.1f}s -> {config.out}",
          file=sys.stderr)


def _crawl(config) -> None:
    from wit.crawl.run import run

    counts = run(config)["counts"]
    downloaded = f", {counts['downloaded']:,} downloaded" if "downloaded" in counts else ""
    print(f"wit crawl: {counts['read']:,} candidates read, {counts['refused_total']:,} refused, "
          f"{counts['matched']:,} matched, {counts['selected']:,} selected{downloaded} -> {config.out}",
          file=sys.stderr)


def _merge_crawl(config) -> None:
    from wit.crawl.merge import run

    summary = run(config)
    counts, download = summary["counts"], summary.get("download")
    downloaded = f", {download['successes']:,} downloaded in {download['shards']:,} shards" if download else ""
    print(f"wit merge-crawl: {summary['parts']:,} parts, {counts['matched']:,} matched, "
          f"{counts['selected']:,} selected{downloaded} -> {config.out}", file=sys.stderr)


def _shard(config) -> None:
    from wit.shards.build import run

    manifest = run(config)
    counts = manifest["counts"]
    duplicates = counts.get("duplicates_by_uid", 0) + counts.get("duplicates_by_sha256", 0)
    print(f"wit shard: {manifest['total_samples']:,} samples in {len(manifest['shards']):,} shards "
          f"({counts['samples_read']:,} read, {duplicates:,} duplicates, {counts['balanced_out']:,} over the cap) "
          f"-> {config.out}", file=sys.stderr)


def _embed(config) -> None:
    from wit.embed.run import run

    summary = run(config)
    print(f"wit embed: {summary['samples']:,} samples in {len(summary['shards']):,} shards "
          f"({summary['undecodable_images']:,} without a usable image, {summary['no_text']:,} without a text), "
          f"{summary['model']} dim {summary['dim']} {summary['precision']} -> {config.out}", file=sys.stderr)


def _filter(config) -> None:
    from wit.filter.run import run

    manifest = run(config)
    counts = manifest["counts"]
    removed = ", ".join(f"{n:,} {name}" for name, n in counts["removed"].items() if n) or "none"
    print(f"wit filter: {manifest['total_samples']:,} of {counts['input_samples']:,} samples kept in "
          f"{len(manifest['shards']):,} shards (removed: {removed}) -> {config.out}", file=sys.stderr)


def _view(config) -> None:
    from wit.view.run import run

    run(config)


def _inspect(config) -> None:
    from wit.shards.inspect import InspectFailed, run

    try:
        lines = run(config)
    except InspectFailed as e:
        print("\n".join(e.lines))
        raise
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
