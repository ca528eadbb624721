import random

import pytest

from wit.crawl.match import QueryMatcher
from tests.support import metaclip2
from wit.formats.text import spaced


def metaclip_reference(queries, texts, lowercase=False):
    """MetaCLIP's loop (metaclip1/substr_matching.py): entry id i matches when f" {entry} "
    is in spacing(text); every id of a duplicated entry is reported."""
    entries = [f" {q.lower() if lowercase else q} " for q in queries]
    result = []
    for text in texts:
        haystack = spaced(text.lower() if lowercase else text)
        result.append([i for i, entry in enumerate(entries) if entry in haystack])
    return result


def match(queries, texts, lowercase=False):
    return QueryMatcher(queries, lowercase).match(texts).to_pylist()


def test_punctuation_is_spaced_like_metaclip():
    queries = ["dog", "red dog", "U.S.", "end"]
    texts = ["A red dog, sleeping.", "dog.", "(dog)", "dogs", "hot-dog", "the end!", "U.S. army", "red\tdog"]
    assert match(queries, texts) == [[0, 1], [0], [], [], [], [3], [], [0, 1]]


def test_case_sensitive_by_default_and_lowercase_option():
    queries = ["Apple", "apple", "New York"]
    texts = ["I ate an apple", "Apple Inc", "NEW YORK city", "new york"]
    assert match(queries, texts) == [[1], [0], [], []]
    assert match(queries, texts, lowercase=True) == [[0, 1], [0, 1], [2], [2]]


def test_multi_word_overlapping_and_nested_queries():
    queries = ["New York", "York City", "New York City", "City", "a a"]
    texts = ["New York City", "a a a", "New York and York City"]
    assert match(queries, texts) == [[0, 1, 2, 3], [4], [0, 1, 3]]


def test_unicode():
    queries = ["café", "東京", "Zürich", "naïve art"]
    texts = ["un café noir", "東京 タワー", "in Zürich, today", "naïve art.", "cafe", "\ud800 café\ud800 东京"]
    assert match(queries, texts) == metaclip_reference(queries, texts) == [[0], [1], [2], [3], [], []]
    assert match(["\ud800x"], ["a \ud800x b"]) == [[0]]   # a lone surrogate is a character like any


def test_empty_texts_and_nul_inside_a_text():
    """A NUL in a text is a character of its word, as in MetaCLIP (not a space)."""
    texts = ["", "dog", "x\x00dog", "\x00", "dog \x00 cat", "x\x01dog"]
    assert match(["dog", "cat"], texts) == metaclip_reference(["dog", "cat"], texts) == \
        [[], [0], [], [], [0, 1], []]
    assert match(["dog"], []) == []


def test_the_entries_metaclip_treats_specially():
    """Duplicates (every id), spaces at the ends or inside, and punctuation that spacing
    makes unmatchable, on texts that contain them: as MetaCLIP's own loop."""
    queries = ["dog", "cat", "dog", " dog", "dog ", "red  dog", "U.S.", "rock , paper", "dog"]
    texts = ["a dog", "a  dog", "dog  cat", "red  dog", "red dog", "U.S.", "rock, paper", "rock , paper",
             " dog ", "dog\ncat", "cat\t\tdog"]
    assert match(queries, texts) == metaclip_reference(queries, texts)
    assert match(queries, ["a dog"]) == [[0, 2, 8]]


@pytest.mark.parametrize("lowercase", [False, True])
def test_identical_to_metaclip_on_random_texts(lowercase):
    rng = random.Random(7)
    vocab = ["New", "York", "new", "city", "City", "dog", "Dog", "a", "b", "café", ",", ".", "!", "?",
             ";", ":", "`", "\n", "\t", "(", ")", "'s", "-", "U.S."]
    queries = list(dict.fromkeys(
        [rng.choice(vocab) for _ in range(20)]
        + [" ".join(rng.choice(vocab[:12]) for _ in range(rng.randint(2, 3))) for _ in range(30)]
    ))
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 15))) for _ in range(2000)]
    assert match(queries, texts, lowercase) == metaclip_reference(queries, texts, lowercase)


# ---- worldwide lists (MetaCLIP 2) ----------------------------------------------------------


def worldwide(entries, texts, kana=False):
    return QueryMatcher(entries, worldwide=True, kana=kana).match(texts).to_pylist()


def test_worldwide_entries_are_padded_only_on_sides_that_are_not_cjk_like_or_punctuation():
    entries = ["猫", "iPhone手机", "dog", "(film)", "東京タワー", "ねこ", "แมว", "New York", "U.S."]
    texts = ["我爱猫咪", "买iPhone手机", "新 iPhone手机很贵", "hotdog", "a dog!", "Heat(film)2", "東京タワーは高い",
             "かわいいねこだ", "ねこ だ", "แมวดำ", "New York，东京", "New York 东京", "the U.S. army"]
    got = worldwide(entries, texts)
    assert got == [metaclip2.substr_match(metaclip2.automaton(entries), t) for t in texts]
    # "東京タワー" ends in a kana (ー) and "New York" in a letter: padded on the right, neither
    # is found before a character that is not a space (は, the full-width comma)
    assert got == [[0], [], [1], [], [2], [3], [], [], [5], [6], [], [7], []]


def test_kana_as_cjk_like_is_an_option():
    entries = ["ねこ", "タワー"]
    texts = ["かわいいねこだ", "東京タワーは高い", "ねこ だ"]
    assert worldwide(entries, texts) == [[], [], [0]]
    assert worldwide(entries, texts, kana=True) == [[0], [1], [0]]


def test_worldwide_duplicates_keep_the_last_id_as_the_automaton_does():
    entries = ["猫", "dog", "猫", "dog"]
    assert worldwide(entries, ["猫 dog"]) == [[2, 3]]


@pytest.mark.parametrize("seed", range(4))
def test_worldwide_is_identical_to_metaclip2_on_random_mixed_script_texts(seed):
    rng = random.Random(seed)
    # two-, three- and four-byte characters: é, ideographs of the BMP and of Extension B (𠀀, CJK-like),
    # an emoji and a mathematical letter (above the BMP, not CJK-like)
    alphabet = list("ab cé") + list("猫狗手机𠀀𠂉") + list("ねこ") + list(",.()'-!`，。「」—") + ["ก", "ข", "😀", "𝐀", "\t", "  ", "\n"]
    entries = [e for e in ("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))).strip("\t\n")
                           for _ in range(200)) if e.strip(" ")]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    built = metaclip2.automaton(entries)
    assert worldwide(entries, texts) == [metaclip2.substr_match(built, t) for t in texts]
