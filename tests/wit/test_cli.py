"""The `wit` parser: a subcommand's flags are built, and its stage imported, only when needed."""

from __future__ import annotations

import subprocess
import sys

from wit.cli import _parser

COMMANDS = ("build-queries", "crawl", "shard", "merge-crawl", "embed", "filter", "inspect")


def _subparser(parser, command):
    return next(a for a in parser._actions if a.choices and command in a.choices).choices[command]


def test_one_command_parser_equals_the_full_one():
    full = _parser()
    for command in COMMANDS:
        assert _subparser(_parser(command), command).format_help() == _subparser(full, command).format_help()
    assert _parser("no-such-command").format_help() == full.format_help()


def test_a_command_imports_only_its_stage():
    code = ("import sys; from wit.cli import _parser; _parser('crawl'); "
            "print(sorted(m for m in ('wit.embed.run', 'wit.filter.run', 'wit.queries.build', 'wit.shards.build', "
            "'wit.crawl.merge') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
