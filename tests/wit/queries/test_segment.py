"""Segmentation of languages written without spaces, for counting: real sentences split
into words by the bundled offline segmenters; unsupported languages refused in one line."""

from __future__ import annotations

import pytest

from wit.formats.errors import WitError
from wit.queries.segment import join_bigram, segmenter


@pytest.mark.parametrize("lang, text, words", [
    ("zh", "一只黑猫在红色的沙发上睡觉", ["黑猫", "沙发", "睡觉"]),
    ("ja", "赤いソファの上で黒い猫が寝ています", ["ソファ", "猫"]),
    ("th", "แมวดำนอนหลับอยู่บนโซฟาสีแดง", ["แมว", "โซฟา"]),
])
def test_real_sentences_are_split_into_their_words(lang, text, words):
    segmented = segmenter(lang)(text)
    assert segmented.replace(" ", "") == text
    assert set(words) <= set(segmented.split(" "))


def test_languages_with_spaces_are_left_alone_and_unsupported_ones_refused():
    assert segmenter("de") is None
    for lang in ("km", "lo", "my", "bo"):
        with pytest.raises(WitError, match=f"--lang {lang}: written without spaces"):
            segmenter(lang)
    assert join_bigram("ja", "黒い 猫") == "黒い猫" and join_bigram("de", "roter Hund") == "roter Hund"
