"""`wit build-queries --lang CODE`: one language of a worldwide list from that language's
dump, page views and Open Multilingual Wordnet, as MetaCLIP 2's build_metadata.py:
namespaces from the dump's siteinfo, segmentation of languages without spaces, joined
bigrams, per-source caps, punctuation-only and over-long entries dropped."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.support.wikidump import WikiPage, site_header, write_dump
from tests.support.witcli import assert_one_line_error, wit_in_process
from wit.queries.assemble import NUMBERS
from wit.queries.build import BuildConfig, run as build_queries
from wit.queries.segment import segmenter

JA_PAGES = [
    WikiPage("東京", "東京は日本の首都です。東京には多くの人が住んでいます。\n東京タワーは有名な観光地です。"
                     "[[ファイル:Tokyo.jpg|thumb|隠れた説明文]] [[Category:日本の都市]] [[ノート:東京|議論]]"),
    WikiPage("猫", "猫は小型の哺乳類です。猫はペットとして人気があります。黒い猫と白い猫がいます。"
                   "犬と猫はよく比べられます。"),
    WikiPage("犬", "犬は人間の友達です。犬と猫は人気のあるペットです。公園で犬が走っています。"),
    WikiPage("大阪", "大阪は日本の都市です。大阪城は有名です。"),
]
JA_NAMESPACES = {-2: "メディア", 6: "ファイル", 14: "Category", 1: "ノート"}
LONG_TITLE = "長" * 300


def ja_inputs(tmp_path: Path) -> dict:
    dump = write_dump(tmp_path / "jawiki.xml", JA_PAGES, header=site_header("ja", JA_NAMESPACES))
    views = tmp_path / "pageviews-20240101-000000"
    views.write_text("ja 東京 50 0\nja.m 東京 10 0\nja 猫 30 0\nja 犬 20 0\nja 大阪 15 0\nja ！！ 90 0\n"
                     f"ja {LONG_TITLE} 80 0\nen Tokyo 999 0\nja.d 猫 500 0\nja 未知 0 0\n")
    omw = tmp_path / "omw" / "jpn"
    omw.mkdir(parents=True)
    (omw / "wn-data-jpn.tab").write_text("# Japanese Wordnet\n02121620-n\tjpn:lemma\t猫\n02121620-n\tjpn:lemma\tネコ\n"
                                         "02084071-n\tjpn:lemma\t犬\n02084071-n\tjpn:def\t定義の文\n"
                                         "00001740-n\tjpn:lemma\t実_体\n", encoding="utf-8")
    return {"wiki_dumps": (str(dump),), "pageviews": (str(views),), "omw": str(tmp_path / "omw")}


def segmented_counts(pages: list[WikiPage]) -> tuple[Counter, Counter]:
    """Unigram and adjacent-pair counts of the visible prose, segmented by the same segmenter."""
    prose = {"東京": ["東京は日本の首都です。東京には多くの人が住んでいます。", "東京タワーは有名な観光地です。", "議論"]}
    words, pairs = Counter(), Counter()
    cut = segmenter("ja")
    for page in pages:
        for line in prose.get(page.title, [page.text]):
            tokens = cut(line).split(" ")
            for sentence in " ".join(tokens).split("。"):
                found = sentence.split()
                words.update(found)
                pairs.update(zip(found, found[1:]))
    return words, pairs


def test_a_language_without_spaces_is_segmented_capped_and_its_bigrams_joined(tmp_path):
    stats = build_queries(BuildConfig(out=str(tmp_path / "q"), lang="ja", titles="all", min_pmi=0.0,
                                      min_bigram_count=1, workers=1, **ja_inputs(tmp_path)))
    entries = json.loads((tmp_path / "q" / "metadata.json").read_text())
    sources = stats["sources"]
    assert stats["lang"] == "ja" and stats["segmenter"] == "fugashi"
    # MetaCLIP 2's order: the numbers, WordNet, unigrams, bigrams, titles
    assert entries[:100] == list(NUMBERS)
    # WordNet: the lemma lines of the language (not its definitions), "_" to " ", sorted
    assert entries[100:104] == ["ネコ", "実 体", "犬", "猫"] and sources["wordnet"]["listed"] == 4
    wordnet = set(entries[100:104])
    # unigrams: words of the segmented prose (the hidden File: caption is not prose), the top 10%
    words, pairs = segmented_counts(JA_PAGES)
    assert "隠れた" not in words and stats["vocabulary"] == len(words)
    unigram_cap = int(len(words) * 0.10)
    assert sources["unigram"] == {"qualified": len(words), "listed": unigram_cap, "cap": unigram_cap}
    start = 100 + sources["wordnet"]["listed"]
    unigrams = entries[start:start + unigram_cap]
    ranked = sorted(words.items(), key=lambda kv: (-kv[1], kv[0]))
    assert unigrams == [w for w, _ in ranked if w not in wordnet][:unigram_cap]
    # bigrams: joined without a space, at most 40% of the unigrams listed
    bigram_cap = int(unigram_cap * 0.40)
    assert sources["bigram"]["cap"] == bigram_cap and 0 < sources["bigram"]["listed"] <= bigram_cap
    bigrams = entries[start + unigram_cap:start + unigram_cap + sources["bigram"]["listed"]]
    joined = {a + b for a, b in pairs}
    assert all(" " not in b and b in joined for b in bigrams)
    # titles: the ja and ja.m lines only, by views; the top 76%; "！！" and the 300-character one dropped
    titles = entries[len(entries) - sources["title"]["listed"]:]
    assert sources["title"]["qualified"] == 6 and sources["title"]["cap"] == int(6 * 0.76)
    assert titles == [t for t in ["東京", "猫", "犬", "大阪"] if t not in set(entries[:-len(titles)])][:len(titles)]
    assert LONG_TITLE not in entries and "！！" not in entries and "Tokyo" not in entries
    assert len(entries) == len(set(entries))


DE_PAGES = [
    WikiPage("Hund", "Der Hund bellt laut. Der Hund schläft.\n[[Datei:Hund.jpg|mini|Bildtext Wort]] "
                     "[[Kategorie:Tiere]] Der schwarze Hund."),
    WikiPage("Katze", "Die Katze schläft. Die schwarze Katze jagt. Der Hund und die Katze."),
    WikiPage("Zahlen", " ".join(f"Wort{i}" for i in range(50)) + "."),
]


def test_a_language_with_spaces_keeps_its_bigrams_spaced_and_reads_its_own_views(tmp_path, capsys):
    dump = write_dump(tmp_path / "dewiki.xml", DE_PAGES,
                      header=site_header("de", {-2: "Medium", 6: "Datei", 14: "Kategorie"}))
    views = tmp_path / "pageviews-20240101-000000"
    views.write_text("de Hund 40 0\nde.m Katze 30 0\nen Dog 999 0\nde.d Hund 999 0\n")
    done = wit_in_process(capsys, "build-queries", "--wiki-dump", dump, "--pageviews", views, "--lang", "de",
                          "--min-pmi", "0", "--min-bigram-count", "2", "--workers", "1", "--out", tmp_path / "q")
    assert done.returncode == 0, done.stderr
    stats = json.loads((tmp_path / "q" / "stats.json").read_text())
    # the summary line names the language and what each source listed under its cap
    listed = ", ".join(f"{s} {v['listed']:,}" for s, v in stats["sources"].items())
    assert f"{stats['queries']:,} queries in de ({listed}) from 3 articles" in done.stderr.splitlines()[-1]
    entries = json.loads((tmp_path / "q" / "metadata.json").read_text())
    assert "segmenter" in stats and stats["segmenter"] is None
    assert "Bildtext" not in entries and "Tiere" not in entries   # Datei: and Kategorie: from the siteinfo
    bigrams = entries[100 + stats["sources"]["unigram"]["listed"]:][:stats["sources"]["bigram"]["listed"]]
    assert bigrams and all(b.count(" ") == 1 for b in bigrams)
    assert stats["sources"]["title"]["qualified"] == 2 and "Dog" not in entries
    assert stats["pageview_lines"] == 4


@pytest.mark.parametrize("args, fragments", [
    (["--lang", "km"], ["--lang km", "without spaces", "segmented: ja"]),
    (["--lang", "de", "--wordnet", "/usr/share/wordnet"], ["--wordnet", "--omw"]),
    (["--omw", "x.tab"], ["--omw", "only with --lang"]),
    (["--lang", "de-AT"], ["--lang", "not a Wikipedia language code"]),
    (["--lang", "ko", "--omw", "x.tab"], ["--omw", "no 'ko' list"]),
])
def test_bad_language_arguments_are_one_line_errors(tmp_path, capsys, args, fragments):
    dump = write_dump(tmp_path / "w.xml", DE_PAGES)
    (tmp_path / "x.tab").write_text("x\tkor:lemma\ty\n")
    result = wit_in_process(capsys, "build-queries", "--wiki-dump", dump, "--out", tmp_path / "q",
                            *[str(tmp_path / a) if a.endswith(".tab") else a for a in args])
    assert_one_line_error(result, "build-queries", *fragments)
    assert not (tmp_path / "q").exists()


def test_lists_built_per_language_merge_into_a_worldwide_list(tmp_path):
    inputs = ja_inputs(tmp_path)
    build_queries(BuildConfig(out=str(tmp_path / "ja"), lang="ja", workers=1, **inputs))
    dump = write_dump(tmp_path / "dewiki.xml", DE_PAGES)
    build_queries(BuildConfig(out=str(tmp_path / "de"), wiki_dumps=(str(dump),), lang="de", workers=1))
    build_queries(BuildConfig(out=str(tmp_path / "world"), merge=(str(tmp_path / "ja"), f"de={tmp_path / 'de'}")))
    for lang in ("ja", "de"):
        assert json.loads((tmp_path / "world" / f"{lang}.json").read_text()) == \
            json.loads((tmp_path / lang / "metadata.json").read_text())
