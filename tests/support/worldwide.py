"""A small worldwide curation for the tests: real captions in nine languages (three of
them written without spaces: ja, zh, th), each language's entry list in MetaCLIP 2's
layout (`{lang}.json`), and pools built from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.support import metaclip2

CAPTIONS = {   # alt texts as people write them; each is identified as its language by lid.176
    "en": ["A black cat sleeping on a red sofa in the afternoon sun",
           "Two children playing football on the beach",
           "The old lighthouse at sunset, seen from the harbour",
           "A red bicycle leaning against a brick wall in Amsterdam",
           "Fresh bread and cheese on a wooden table at the market"],
    "de": ["Eine schwarze Katze schläft auf dem roten Sofa",
           "Zwei Kinder spielen am Strand Fußball",
           "Der alte Leuchtturm bei Sonnenuntergang, vom Hafen aus gesehen",
           "Frisches Brot und Käse auf einem Holztisch auf dem Markt"],
    "fr": ["Un chat noir dort sur le canapé rouge",
           "Deux enfants jouent au football sur la plage",
           "Le vieux phare au coucher du soleil, vu depuis le port"],
    "es": ["Un gato negro duerme en el sofá rojo",
           "Dos niños juegan al fútbol en la playa",
           "El viejo faro al atardecer, visto desde el puerto"],
    "ru": ["Чёрная кошка спит на красном диване",
           "Двое детей играют в футбол на пляже",
           "Старый маяк на закате, вид из гавани"],
    "ja": ["赤いソファの上で黒い猫が寝ています",
           "浜辺でサッカーをする二人の子供",
           "夕暮れの古い灯台、港から見た風景",
           "東京タワーと桜の花、春の午後"],
    "zh": ["一只黑猫在红色的沙发上睡觉",
           "两个孩子在海滩上踢足球",
           "日落时分的旧灯塔，这是从港口拍摄的照片",
           "北京故宫的红墙和屋顶"],
    "th": ["แมวดำนอนหลับอยู่บนโซฟาสีแดง",
           "เด็กสองคนเล่นฟุตบอลที่ชายหาด",
           "ประภาคารเก่าตอนพระอาทิตย์ตก มองจากท่าเรือ"],
    "ko": ["빨간 소파 위에서 검은 고양이가 자고 있다",
           "해변에서 축구를 하는 두 아이",
           "항구에서 본 해질녘의 오래된 등대"],
}

ENTRIES = {   # each language's list: words and titles of its captions, and some that occur nowhere
    "en": ["cat", "black cat", "red", "sofa", "football", "beach", "lighthouse", "sunset", "harbour", "bicycle",
           "Amsterdam", "bread", "cheese", "market", "sun", "children", "zebra", "the", "a"],
    "de": ["Katze", "Sofa", "Fußball", "Strand", "Leuchtturm", "Sonnenuntergang", "Hafen", "Brot", "Käse",
           "Markt", "Kinder", "Zebra"],
    "fr": ["chat", "chat noir", "canapé", "football", "plage", "phare", "soleil", "port", "enfants", "zèbre"],
    "es": ["gato", "sofá", "fútbol", "playa", "faro", "atardecer", "puerto", "niños", "cebra"],
    "ru": ["кошка", "диване", "футбол", "пляже", "маяк", "закате", "гавани", "детей", "зебра"],
    "ja": ["猫", "黒い猫", "ソファ", "サッカー", "子供", "灯台", "港", "夕暮れ", "東京", "東京タワー", "桜",
           "春", "浜辺", "の", "縞馬"],
    "zh": ["猫", "黑猫", "沙发", "足球", "海滩", "灯塔", "港口", "日落", "北京", "故宫", "孩子", "斑马",
           "，"],
    "th": ["แมว", "แมวดำ", "โซฟา", "ฟุตบอล", "ชายหาด", "ประภาคาร", "ท่าเรือ", "เด็ก", "ม้าลาย"],
    "ko": ["고양이", "소파", "축구", "해변에서", "등대", "항구에서", "아이", "얼룩말"],
}
NO_SPACES = ("ja", "zh", "th")


def write_lists(directory: Path, languages=None) -> Path:
    """A worldwide query list: one `{lang}.json` per language."""
    directory.mkdir(parents=True, exist_ok=True)
    for lang in languages or ENTRIES:
        (directory / f"{lang}.json").write_text(json.dumps(ENTRIES[lang], ensure_ascii=False))
    return directory


def pool_rows(base_url, copies=None) -> list[tuple[str, str, str]]:
    """(url, text, language) rows: each caption repeated `copies[lang]` times (default: a
    skew, more for the first captions), under distinct urls."""
    rows = []
    for lang, captions in CAPTIONS.items():
        for c, caption in enumerate(captions):
            for k in range((copies or {}).get(lang, 1 + 3 * (len(captions) - c))):
                rows.append((base_url(f"{lang}-{c}-{k}"), caption, lang))
    return rows


def write_pool(path: Path, rows: list[tuple[str, str, str]], lang_column: str = "language") -> Path:
    pq.write_table(pa.table({"url": [r[0] for r in rows], "text": [r[1] for r in rows],
                             lang_column: [r[2] for r in rows]}), path)
    return path


def reference(rows: list[tuple[str, str, str]], t_en: float) -> tuple[dict, dict, dict]:
    """MetaCLIP 2's own functions on the pool: each text's entry ids (in its language's
    list), the per-language counts and the per-language t (t_to_p of English at t_en,
    then p_to_t)."""
    automata = {lang: metaclip2.automaton(entries) for lang, entries in ENTRIES.items()}
    ids = {}
    counts = {lang: np.zeros(len(entries), np.int64) for lang, entries in ENTRIES.items()}
    for url, text, lang in rows:
        ids[url] = metaclip2.substr_match(automata[lang], text)
        counts[lang][ids[url]] += 1
    p = metaclip2.t_to_p(counts["en"], t_en)
    thresholds = {lang: float(t_en) if lang == "en" else float(metaclip2.p_to_t(c, p)) for lang, c in counts.items()}
    return ids, counts, thresholds
