"""WordNet 3.0 synsets' head lemmas, read from the database files (`man 5 wndb`).

Reads `data.noun`, `data.verb`, `data.adj` and `data.adv` directly, from a WordNet
database directory (Debian's `/usr/share/wordnet`, Princeton's `dict/`) or an NLTK data
directory (`corpora/wordnet/` or `corpora/wordnet.zip`); NLTK itself is not needed.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass

from wit.formats.errors import WitError

DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_SUBDIRS = ("", "dict", "wordnet", os.path.join("corpora", "wordnet"))
_ZIPS = (os.path.join("corpora", "wordnet.zip"), "wordnet.zip")
_ADJECTIVE_MARKER = re.compile(r"\((?:a|p|ip)\)$")


@dataclass
class WordNetLemmas:
    lemmas: list[str]  # one per synset, in file order: noun, verb, adj, adv
    source: str

    @property
    def synsets(self) -> int:
        return len(self.lemmas)


def read_wordnet(directory: str) -> WordNetLemmas:
    """The head lemma of every synset: underscores to spaces, lower-cased."""
    if not os.path.isdir(directory):
        raise WitError(f"{directory}: WordNet directory does not exist")
    for sub in _SUBDIRS:
        root = os.path.join(directory, sub)
        if os.path.isfile(os.path.join(root, DATA_FILES[0])):
            return WordNetLemmas(_read_dir(root), root)
    for name in _ZIPS:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return WordNetLemmas(_read_zip(path), path)
    raise WitError(f"{directory}: not a WordNet database (no data.noun, data.verb, data.adj, data.adv)")


def _read_dir(root: str) -> list[str]:
    lemmas: list[str] = []
    for name in DATA_FILES:
        path = os.path.join(root, name)
        try:
            with open(path, "rb") as f:
                lemmas.extend(_head_lemmas(f, path))
        except OSError as e:
            raise WitError(f"{path}: cannot read WordNet data file ({e.strerror or e})") from None
    return lemmas


def _read_zip(path: str) -> list[str]:
    lemmas: list[str] = []
    try:
        with zipfile.ZipFile(path) as archive:
            members = {os.path.basename(n): n for n in archive.namelist()}
            for name in DATA_FILES:
                if name not in members:
                    raise WitError(f"{path}: WordNet archive has no {name}")
                with archive.open(members[name]) as f:
                    lemmas.extend(_head_lemmas(f, f"{path}:{name}"))
    except (OSError, zipfile.BadZipFile) as e:
        raise WitError(f"{path}: cannot read WordNet archive ({e})") from None
    return lemmas


def _head_lemmas(lines, path: str) -> list[str]:
    """Data lines are `offset lex_filenum ss_type w_cnt word lex_id ...`; lines that
    start with a space are the licence header."""
    lemmas = []
    for number, line in enumerate(lines, 1):
        if line.startswith(b" "):
            continue
        fields = line.split(b" ", 5)
        if len(fields) < 6 or not fields[0].isdigit():
            raise WitError(f"{path}: line {number} is not a WordNet data line")
        word = _ADJECTIVE_MARKER.sub("", fields[4].decode("utf-8"))
        lemmas.append(word.replace("_", " ").lower())
    if not lemmas:
        raise WitError(f"{path}: WordNet data file holds no synsets")
    return lemmas
