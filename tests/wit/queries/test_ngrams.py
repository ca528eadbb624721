import random

from wit.queries.ngrams import BREAK, count_ngrams, tokenize
from wit.formats.text import spaced


def as_dicts(texts, lowercase=False):
    unigrams, bigrams = count_ngrams(texts, lowercase)
    words = dict(zip(unigrams.column("word").to_pylist(), unigrams.column("count").to_pylist()))
    pairs = {
        (a, b): n
        for a, b, n in zip(*(bigrams.column(c).to_pylist() for c in ("first", "second", "count")))
    }
    return words, pairs


def test_spacing_is_metaclip():
    assert spaced("a,b.c;d:e?f!g`h\ti\nj\rk") == " a , b . c ; d : e ? f ! g ` h i j k "
    assert " New York " in spaced("I love New York.")
    assert " York " not in spaced("Yorkshire")


def test_exact_counts_and_bigram_breaks():
    words, pairs = as_dicts([
        "The quick fox, the quick dog. The (quick) fox!",
        "fox jumps\nover 'the' dog's bowl -- 3.14 = x",
    ])
    assert words == {
        "The": 2, "the": 2, "quick": 3, "fox": 3, "dog": 1, "jumps": 1, "over": 1,
        "dog's": 1, "bowl": 1, "3": 1, "14": 1, "x": 1,
    }
    assert pairs == {
        ("The", "quick"): 2, ("quick", "fox"): 2, ("the", "quick"): 1, ("quick", "dog"): 1,
        ("fox", "jumps"): 1, ("over", "the"): 1, ("the", "dog's"): 1, ("dog's", "bowl"): 1,
    }  # no pair across ",", ".", "!", a line break, "--", "3.14", "=" or two texts


def test_lowercase_merges_cases():
    words, pairs = as_dicts(["The quick fox, the Quick fox"], lowercase=True)
    assert words == {"the": 2, "quick": 2, "fox": 2}
    assert pairs == {("the", "quick"): 2, ("quick", "fox"): 2}


def test_markup_tokens_and_punctuation_are_not_words():
    words, pairs = as_dicts(["a [[b]] {{c}} d|e <f> g=h - ... _ cat"])
    assert words == {"a": 1, "cat": 1}
    assert pairs == {}


def test_unicode_words():
    words, pairs = as_dicts(["Café Zürich – Straße 東京 ‘quoted’"])
    assert words == {"Café": 1, "Zürich": 1, "Straße": 1, "東京": 1, "quoted": 1}
    assert pairs == {("Café", "Zürich"): 1, ("Straße", "東京"): 1, ("東京", "quoted"): 1}


def test_empty_input():
    words, pairs = as_dicts(["", "  ", ", . !"])
    assert words == {} and pairs == {}


def test_tokenize_marks_breaks():
    assert tokenize("a, b\nc") == ["a", BREAK, "b", BREAK, "c"]


def test_every_counted_ngram_matches_its_text():
    """Counting and matching agree: a counted n-gram is a query that matches the text."""
    rng = random.Random(0)
    vocab = ["cat", "dog", "New", "York", "3", "a-b", "x's", ",", ".", "!", ";", ":", "?", "-", "`"]
    for _ in range(300):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 12)))
        words, pairs = as_dicts([text])
        for word in words:
            assert f" {word} " in spaced(text), (word, text)
        for a, b in pairs:
            assert f" {a} {b} " in spaced(text), (a, b, text)
