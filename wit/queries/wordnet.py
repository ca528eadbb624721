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


# ---- Open Multilingual Wordnet (MetaCLIP 2's WordNet entries of other languages) ---------

# Wikipedia code -> OMW's ISO 639-3 code, the languages MetaCLIP 2 takes WordNet entries for
WIKI_TO_OMW = {
    "fi": "fin", "he": "heb", "sl": "slv", "it": "ita", "nn": "nno", "no": "nob", "als": "als", "pl": "pol",
    "hr": "hrv", "nl": "nld", "ro": "ron", "ar": "arb", "is": "isl", "sv": "swe", "pt": "por", "zh": "cmn",
    "ja": "jpn", "da": "dan", "sk": "slk", "lt": "lit", "bg": "bul", "eu": "eus", "ca": "cat", "gl": "glg",
    "es": "spa", "el": "ell", "ms": "zsm", "id": "ind", "fr": "fra", "th": "tha",
}


def read_omw(path: str, lang: str) -> WordNetLemmas:
    """Every lemma of language `lang` in Open Multilingual Wordnet's tab files
    (`wn-data-CODE.tab`: `synset<TAB>CODE:lemma<TAB>lemma` lines, `#` comments), given as
    the file or a dir holding it (e.g. NLTK's `corpora/omw-1.4`): underscores to spaces,
    `+` removed, distinct, sorted (MetaCLIP 2's `build_multilingual_wordnet.py`)."""
    code = WIKI_TO_OMW.get(lang)
    if code is None:
        raise WitError(f"--omw: Open Multilingual Wordnet has no {lang!r} list (it has: "
                       f"{', '.join(sorted(WIKI_TO_OMW))})")
    wanted = f"wn-data-{code}.tab"
    if os.path.isdir(path):
        found = sorted(os.path.join(root, wanted) for root, _, names in os.walk(path) if wanted in names)
        if not found:
            raise WitError(f"{path}: no {wanted} in it (the Open Multilingual Wordnet file of {lang})")
        path = found[0]
    elif not os.path.isfile(path):
        raise WitError(f"{path}: no such Open Multilingual Wordnet file")
    lemmas: set[str] = set()
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.startswith("#") or not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 3:
                    raise WitError(f"{path}: line {number} is not an OMW data line (synset, type, lemma)")
                if fields[1] in (f"{code}:lemma", "lemma"):
                    lemma = fields[2].replace("_", " ").replace("+", "").strip()
                    if lemma:
                        lemmas.add(lemma)
    except UnicodeDecodeError as e:
        raise WitError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise WitError(f"{path}: cannot read Open Multilingual Wordnet file ({e.strerror or e})") from None
    if not lemmas:
        raise WitError(f"{path}: holds no {code}:lemma lines")
    return WordNetLemmas(sorted(lemmas), path)
