"""The documentation cannot drift from the code. In README.md, ARCHITECTURE.md and docs/*.md:
- every flag shown on a command line (`wit crawl ... --cap 20000`, `python -m train.evaluate
  --suite ...`, `torchrun ... -m wit embed ...`, a stage's sbatch script) is in that command's
  `--help`, and on a page about one command, so is every flag quoted alone (`--min-count`);
- every trainer configuration key it names (the key table of docs/train.md, `--set key=value`,
  train.sbatch's `key=value`) is a field of train/config.py's TrainConfig;
- every repository path it names (a link to a local file, a code word starting with one of the
  repository's top-level entries) exists, and every link to a heading finds that heading;
- the README links every page under docs/."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import typing
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def pages() -> list[Path]:
    return [REPO / "README.md", REPO / "ARCHITECTURE.md", *sorted(DOCS.glob("*.md"))]


# --- markdown: code blocks, inline code spans, links, headings --------------------------------

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def split_markdown(text: str) -> tuple[list[list[str]], str]:
    """(the code blocks, each a list of lines without their block indent; the prose with
    every code block blanked out, line numbers kept)."""
    blocks, prose, lines = [], [], text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        previous_blank = i == 0 or not lines[i - 1].strip()
        if fence:
            close = re.compile(rf"^ {{0,3}}{fence.group(1)[0]}{{{len(fence.group(1))},}}\s*$")
            block, i = [], i + 1
            while i < len(lines) and not close.match(lines[i]):
                block.append(lines[i])
                i += 1
            blocks.append(block)
            prose.extend([""] * (len(block) + 2))
            i += 1
        elif line.startswith("    ") and line.strip() and previous_blank and not _in_list(prose):
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                if not lines[i].strip() and (i + 1 == len(lines) or not lines[i + 1].startswith("    ")):
                    break
                block.append(lines[i][4:])
                i += 1
            blocks.append(block)
            prose.extend([""] * len(block))
        else:
            prose.append(line)
            i += 1
    return blocks, "\n".join(prose)


def _in_list(prose: list[str]) -> bool:
    """Whether the last paragraph before a blank line was a list item (its indented
    continuation is not a code block)."""
    paragraph = []
    for line in reversed(prose):
        if line.strip():
            paragraph.append(line)
        elif paragraph:
            break
    return any(re.match(r"\s*(?:[-*+]|\d+[.)]) ", line) for line in paragraph)


def code_spans(prose: str) -> list[str]:
    """The inline code spans of a text (CommonMark: a run of N backticks up to the next run
    of exactly N), line breaks inside them turned into spaces."""
    spans, i = [], 0
    while True:
        opening = re.compile(r"(?<!`)(`+)(?!`)").search(prose, i)
        if not opening:
            return spans
        ticks = opening.group(1)
        closing = re.compile(rf"(?<!`){ticks}(?!`)").search(prose, opening.end())
        if not closing:
            i = opening.end()
            continue
        spans.append(" ".join(prose[opening.end():closing.start()].split()))
        i = closing.end()


LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(prose: str) -> list[str]:
    return LINK.findall(re.sub(r"`[^`]*`", "", prose))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but `-` and `_` dropped,
    spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    _, prose = split_markdown(path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose, flags=re.M)}


# --- commands and their flags ----------------------------------------------------------------

WIT_STAGES = ("build-queries", "merge-crawl", "crawl", "shard", "inspect", "embed", "filter")
INVOCATION = re.compile(
    r"(?<![\w./-])wit\s+(?P<wit>" + "|".join(WIT_STAGES) + r")(?![\w-])"
    r"|(?<![\w./-])-m\s+(?P<module>train\.evaluate|train\.search|train|wit\.demo\.web)(?![\w.])"
    r"|(?<![\w-])(?P<sbatch>build_queries|merge_crawl|embed|train)\.sbatch(?![\w.])")
SBATCH_RUNS = {"build_queries": "wit build-queries", "merge_crawl": "wit merge-crawl", "embed": "wit embed",
               "train": "train.sbatch"}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
SETTING = re.compile(r"(?<![\w./-])([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)=")

# a page about one command (or a pair): a flag quoted alone there is that command's
PAGE_COMMANDS = {
    "build-queries.md": ("wit build-queries",),
    "crawl.md": ("wit crawl", "wit merge-crawl"),
    "shard.md": ("wit shard", "wit inspect"),
    "embed.md": ("wit embed",),
    "filter.md": ("wit filter",),
    "train.md": ("python -m train",),
    "evaluate.md": ("python -m train.evaluate", "python -m train.search"),
}


def command_of(match: re.Match) -> str:
    if match.group("wit"):
        return f"wit {match.group('wit')}"
    if match.group("module"):
        return f"python -m {match.group('module')}"
    return SBATCH_RUNS[match.group("sbatch")]


def invocations(line: str) -> list[tuple[str, str]]:
    """(command, the text after it up to the next command) for every command on a line."""
    found = list(INVOCATION.finditer(line))
    return [(command_of(m), line[m.end():found[k + 1].start() if k + 1 < len(found) else len(line)])
            for k, m in enumerate(found)]


def command_lines(block: list[str]) -> list[str]:
    """A code block's logical lines: an indented line or one after a trailing backslash
    continues the line before it; `# comments` are dropped."""
    logical: list[str] = []
    continued = False
    for line in block:
        code = re.sub(r"(^|\s)#(\s.*)?$", "", line).rstrip()
        if logical and (continued or (line[:1].isspace() and line.strip())):
            logical[-1] += " " + code.strip().rstrip("\\")
        else:
            logical.append(code.strip().rstrip("\\"))
        continued = code.endswith("\\")
    return logical


def documented(path: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """((command, flag or key=, where) for every flag on a command line, (key, where) for
    every trainer configuration key) of one page."""
    blocks, prose = split_markdown(path.read_text(encoding="utf-8"))
    texts = [(span, f"`{span}`") for span in code_spans(prose)]
    texts += [(line, line) for block in blocks for line in command_lines(block)]
    flags, keys = [], []
    for text, where in texts:
        for command, rest in invocations(text):
            if command == "train.sbatch":   # CONFIG.yaml [key=value ...]: `--set` values
                keys += [(k, where) for k in SETTING.findall(rest)]
                continue
            flags += [(command, flag, where) for flag in FLAG.findall(rest)]
            if command == "python -m train":
                for setting in re.findall(r"--set((?:\s+[^\s-]\S*)+)", rest):
                    keys += [(k, where) for k in SETTING.findall(setting) if k != "key"]   # key=value: a placeholder
        if text.startswith("--") and not invocations(text) and path.name in PAGE_COMMANDS:
            flags += [(PAGE_COMMANDS[path.name], flag, where) for flag in FLAG.findall(text)]
    if path.name == "train.md":
        keys += [(key, f"`{key}` in the key table") for key in key_table(prose)]
    return flags, keys


def key_table(prose: str) -> list[str]:
    """The configuration keys in the first column of the table headed `| key | ...`."""
    keys, in_table = [], False
    for line in prose.split("\n"):
        if re.match(r"\|\s*key\s*\|", line):
            in_table = True
        elif in_table and line.startswith("|"):
            first = line.split("|")[1]
            keys += [span for span in code_spans(first) if not set(span) <= set("-|")]
        elif in_table:
            in_table = False
    return keys


@cache
def help_text(command: str) -> str:
    if command.startswith("wit "):
        from wit.cli import _parser

        subparsers = next(a for a in _parser()._actions if a.choices and command[4:] in a.choices)
        return subparsers.choices[command[4:]].format_help()
    return _module_helps()[command]


@cache
def _module_helps() -> dict[str, str]:
    """`python -m MODULE --help` of every module command, run side by side (importing the
    trainer's evaluation loads torch)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1"}
    modules = ("train", "train.evaluate", "train.search", "wit.demo.web")
    runs = {m: subprocess.Popen([sys.executable, "-m", m, "--help"], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for m in modules}
    helps = {}
    for module, run in runs.items():
        out, _ = run.communicate(timeout=120)
        assert run.returncode == 0, f"python -m {module} --help failed:\n{out}"
        helps[f"python -m {module}"] = out
    return helps


def flag_in(flag: str, commands: tuple[str, ...] | str) -> bool:
    commands = (commands,) if isinstance(commands, str) else commands
    return any(re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text(c)) for c in commands)


def config_key_exists(key: str) -> bool:
    from train.config import TrainConfig

    kind = TrainConfig
    for part in key.split("."):
        if not (dataclasses.is_dataclass(kind) and part in {f.name for f in dataclasses.fields(kind)}):
            return False
        kind = typing.get_type_hints(kind).get(part)
    return True


# --- paths ------------------------------------------------------------------------------------

TOP = ("wit/", "train/", "tests/", "pipelines/", "docs/", ".ci/",
       "Makefile", "pyproject.toml", "ARCHITECTURE.md", "README.md", "Dockerfile", "docker-compose.yml")


def placeholder(token: str) -> bool:
    """A glob, a brace pattern, a variable or a CAPS part (OUT/..., NNNNNN.tar) stands for a
    path, it does not name one."""
    if any(c in token for c in "*?{}<>$[]") or "..." in token:
        return True
    return any(re.fullmatch(r"[A-Z][A-Z0-9_]*", part) or "NNN" in part for part in token.split("/"))


def repo_paths(text: str) -> list[str]:
    """The words of a code span or code line that name a repository file or dir."""
    found = []
    for word in text.split():
        word = word.strip("()[],;:'\"`").rstrip(".")
        if any(word.startswith(top) if top.endswith("/") else word == top for top in TOP) \
                and not placeholder(word):
            found.append(word)
    return found


def _shown(path: Path) -> Path:
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


def broken_paths(path: Path) -> list[str]:
    blocks, prose = split_markdown(path.read_text(encoding="utf-8"))
    problems = []
    for target in links(prose):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):   # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            problems.append(f"link ({target}): {_shown(linked)} does not exist")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            problems.append(f"link ({target}): no heading #{anchor} in {_shown(linked)}")
    texts = code_spans(prose) + [line for block in blocks for line in block]
    for text in texts:
        problems += [f"`{word}` does not exist" for word in repo_paths(text) if not (REPO / word).exists()]
    return problems


# --- the tests --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_documented_flags_exist(page):
    flags, _ = documented(page)
    missing = [f"{where}: {flag} is not in `{' / '.join(c) if isinstance(c, tuple) else c} --help`"
               for c, flag, where in flags if not flag_in(flag, c)]
    assert missing == []


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_documented_config_keys_exist(page):
    _, keys = documented(page)
    assert [f"{where}: {key} is not a TrainConfig field" for key, where in keys if not config_key_exists(key)] == []


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_documented_paths_exist(page):
    assert broken_paths(page) == []


def test_readme_links_every_page():
    _, prose = split_markdown((REPO / "README.md").read_text(encoding="utf-8"))
    linked = {(REPO / target.partition("#")[0]).resolve() for target in links(prose)}
    assert [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked] == []


def test_pages_document_their_commands():
    """Each page about a command shows that command's flags: the checks above have
    something to check."""
    for name, commands in PAGE_COMMANDS.items():
        flags, _ = documented(DOCS / name)
        assert {c for c, _, _ in flags if isinstance(c, str)} >= set(commands), name


def test_checks_can_fail(tmp_path):
    """A flag a command lacks, one quoted alone on a command's page, a config key, a path
    and a heading that do not exist: each is caught; placeholders and globs are not."""
    page = tmp_path / "crawl.md"
    page.write_text("# Crawl\n\nRun `wit crawl --queries Q --no-such-flag` or `--cap 3 --nor-this`.\n\n"
                    "    wit shard --crawl C \\\n        --shard-size 3   # a comment --not-a-flag\n\n"
                    "```\npython -m train --config c.yaml --set lr=1 no_such_key=2\n"
                    "torchrun --nproc-per-node 8 -m wit embed --checkpoint C\n              --batch-size 8 --bogus\n```\n\n"
                    "See `wit/no_such_module.py`, `tests/bench/`, `pipelines/slurm/*.sbatch`, `OUT/.wit`,\n"
                    "[the crawl](crawl.md#crawl), [a page](nowhere.md) and [a heading](crawl.md#nowhere).\n",
                    encoding="utf-8")
    flags, keys = documented(page)
    assert sorted((c if isinstance(c, str) else c[0], f) for c, f, _ in flags if not flag_in(f, c)) == [
        ("wit crawl", "--no-such-flag"),
        ("wit crawl", "--nor-this"),
        ("wit embed", "--bogus"),
        ("wit shard", "--shard-size"),
    ]
    assert [k for k, _ in keys if not config_key_exists(k)] == ["no_such_key"]
    assert config_key_exists("model.grad_checkpointing") and not config_key_exists("model.nothing")
    problems = broken_paths(page)
    assert len(problems) == 3 and "`wit/no_such_module.py`" in problems[-1], problems
    assert any("nowhere.md" in p for p in problems) and any("#nowhere" in p for p in problems)
