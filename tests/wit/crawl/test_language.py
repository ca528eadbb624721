"""Language identification of candidate texts: real sentences routed to their language's
list, languages without a list to `other`, the lid.176 codes mapped to Wikipedia's."""

from __future__ import annotations

from wit.formats.languages import LanguageIdentifier
from wit.formats.languages import wiki_language

SENTENCES = {   # captions as people write them
    "en": ["A black cat sleeping on a red sofa in the afternoon sun", "Two children playing football on the beach"],
    "de": ["Eine schwarze Katze schläft auf dem roten Sofa", "Zwei Kinder spielen am Strand Fußball"],
    "fr": ["Un chat noir dort sur le canapé rouge", "Deux enfants jouent au football sur la plage"],
    "es": ["Un gato negro duerme en el sofá rojo", "Dos niños juegan al fútbol en la playa"],
    "ru": ["Чёрная кошка спит на красном диване", "Двое детей играют в футбол на пляже"],
    "ja": ["赤いソファの上で黒い猫が寝ています", "浜辺でサッカーをする二人の子供"],
    "zh": ["一只黑猫在红色的沙发上睡觉", "两个孩子在海滩上踢足球"],
    "th": ["แมวดำนอนหลับอยู่บนโซฟาสีแดง", "เด็กสองคนเล่นฟุตบอลที่ชายหาด"],
    "ko": ["빨간 소파 위에서 검은 고양이가 자고 있다", "해변에서 축구를 하는 두 아이"],
}


def test_real_sentences_go_to_their_languages_list():
    identifier = LanguageIdentifier(set(SENTENCES))
    texts = [s for sentences in SENTENCES.values() for s in sentences]
    expected = [lang for lang, sentences in SENTENCES.items() for _ in sentences]
    assert identifier.identify(texts) == expected


def test_a_language_without_a_list_is_other_and_codes_map_to_wikipedias():
    identifier = LanguageIdentifier({"en", "ja"})
    assert identifier.identify(["Eine schwarze Katze schläft\nauf dem Sofa", "黒い猫が寝ています"]) == ["other", "ja"]
    assert identifier.identify([]) == []
    assert wiki_language("yue", {"zh_yue"}) == "zh_yue" and wiki_language("yue", {"zh"}) == "other"
