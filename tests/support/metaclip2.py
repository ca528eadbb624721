"""MetaCLIP 2's curation functions, as its `metaclip/curation/substr_matching.py` and
`curate.py` define them (read from the paper's released code, restated here for the tests):
the entry padding, the per-text automaton loop, `t_to_p`, `p_to_t` and `count_to_prob`.
The toolkit's own implementations are checked against these."""

from __future__ import annotations

import string

import ahocorasick
import numpy as np

from wit.formats.text import spaced

EXTRA_PUNCTUATION = set("，。、；：？！“”‘’（）【】《》〈〉「」『』～—")
CJK_LIKE = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
            (0x2B820, 0x2CEAF), (0x2CEB0, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2EFF), (0x2F00, 0x2FDF),
            (0x2FF0, 0x2FFF), (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF),
            (0x0F00, 0x0FFF)]


def is_cjk_or_similar(char: str) -> bool:
    point = ord(char)
    return any(low <= point <= high for low, high in CJK_LIKE) or char in string.punctuation \
        or char in EXTRA_PUNCTUATION


def spaced_metadata(entries: list[str]) -> list[tuple[int, str]]:
    out = []
    for i, entry in enumerate(entries):
        padded = entry if is_cjk_or_similar(entry[0]) else f" {entry}"
        padded = padded if is_cjk_or_similar(padded[-1]) else f"{padded} "
        out.append((i, padded))
    return out


def automaton(entries: list[str]) -> ahocorasick.Automaton:
    built = ahocorasick.Automaton()
    for i, key in spaced_metadata(entries):
        built.add_word(key, (i, key))   # a key added twice keeps the last id
    built.make_automaton()
    return built


def substr_match(built: ahocorasick.Automaton, text: str) -> list[int]:
    """The entry ids a text matches, ascending (MetaCLIP 2 returns them as a set's list)."""
    return sorted({i for _, (i, _) in built.iter(spaced(text))})


def t_to_p(counts: np.ndarray, t: float) -> float:
    return float(counts[counts < t].sum() / counts.sum())


def p_to_t(counts: np.ndarray, p: float) -> float:
    ordered = np.sort(counts)
    portion = np.cumsum(ordered) / ordered.sum()
    return ordered[np.abs(portion - p).argmin()]


def count_to_prob(counts: np.ndarray, t: float) -> np.ndarray:
    capped = np.array(counts, dtype=np.float64)
    capped[capped < t] = t
    return t / capped
