import pytest

from wit.queries.wikitext import wikitext_to_text


def clean(text: str) -> str:
    return " ".join(wikitext_to_text(text).split())


@pytest.mark.parametrize(
    "wikitext, expected",
    [
        ("A {{cite web|url=http://x.org|title=T}} b", "A b"),
        ("A {{outer|{{inner|x}}|y}} b", "A b"),
        ("A {{{param|default}}} b", "A b"),
        ("A <!-- hidden {{x}} --> b", "A b"),
        ("A<ref>Smith 2001, p. 4</ref> b<ref name=\"x\"/> c", "A b c"),
        ('A<ref name="n">{{cite book|title=Z}}</ref> b', "A b"),
        ("A <math>x^2</math> b", "A b"),
        ("[[Dog]]s and [[Canis lupus|wolves]]", "Dogs and wolves"),
        ("[[File:Cat.jpg|thumb|200px|A [[cat]] sitting]] Cats sit.", "Cats sit."),
        ("[[Image:x.png|left|upright=1.2]]Text", "Text"),
        ("Text [[Category:Animals]] [[Category:Pets|Sort]]", "Text"),
        ("Text [[de:Hund]] [[fr:Chien]]", "Text"),
        ("See [[:Category:Dogs]] here", "See Category:Dogs here"),
        ("[[Paris (France)|]] is big", "Paris is big"),
        ("[http://example.com The site] and http://bare.example.org/x y", "The site and y"),
        ("'''Bold''' and ''italic'' and '''''both'''''", "Bold and italic and both"),
        ("== History ==\nOld.\n=== Early ===\nNew.", "History Old. Early New."),
        ("__NOTOC__ Text __FORCETOC__", "Text"),
        ("* one\n# two\n: three\n; four\n----\nfive", "one two three four five"),
        ("A <small>little</small> <span style=\"x\">b</span><br/>c", "A little bc"),
        ("H<sub>2</sub>O", "H2O"),
        ("A &amp; B &nbsp;C &ndash; D", "A & B C \u2013 D"),
        ("{| class=\"wikitable\"\n|-\n! a !! b\n|-\n| 1 || 2\n|}\nAfter", "After"),
        ("{|\n| outer\n{|\n| inner\n|}\n|}\nAfter", "After"),
        ("Unclosed {{template text", "Unclosed template text"),
        ("Stray }} closer", "Stray closer"),
        ("<gallery>\nFile:a.jpg|x\n</gallery>After", "After"),
    ],
)
def test_markup_is_removed_and_prose_kept(wikitext, expected):
    assert clean(wikitext) == expected


def test_non_breaking_space_entity_becomes_a_character():
    assert "\u00a0" in wikitext_to_text("A&nbsp;B")


def test_no_markup_residue_in_a_realistic_article():
    text = (
        "{{Infobox animal|name=Dog|image=Dog.jpg}}\n"
        "The '''dog''' ([[Canis familiaris]]) is a [[domestication|domesticated]] descendant"
        " of the [[wolf]].<ref>{{cite journal|last=Smith|title=Dogs}}</ref>\n"
        "[[File:Dog.jpg|thumb|220px|A [[dog]] in a [[park]]]]\n"
        "== Etymology ==\n<!-- comment -->Dogs were {{convert|5|kg}} heavy.\n"
        "{| class=wikitable\n| row\n|}\n[[Category:Dogs]]"
    )
    out = wikitext_to_text(text)
    for residue in ("{{", "}}", "[[", "]]", "|", "<ref", "thumb", "px", "<!--", "Category", "=="):
        assert residue not in out, residue
    assert " ".join(out.split()) == (
        "The dog (Canis familiaris) is a domesticated descendant of the wolf. "
        "Etymology Dogs were heavy."
    )
