"""Worldwide curation in `wit crawl`, `wit merge-crawl` and `wit shard` (MetaCLIP 2): a
dir of `{lang}.json` lists, each text matched against its language's list only, counts
and t per language, (lang, index) query ids in every file."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.support import metaclip2
from tests.support.crawls import samples, wit_crawl
from tests.support.worldwide import CAPTIONS, ENTRIES, NO_SPACES, pool_rows, reference, write_lists, write_pool
from tests.support.witcli import assert_one_line_error, run_wit, wit_in_process
from wit.formats.balance import language_thresholds

ITALIAN = ["Un gatto nero dorme sul divano rosso", "Due bambini giocano a calcio sulla spiaggia"]   # no it.json


def rows_of(directory: Path, sub: str) -> list[dict]:
    return [row for path in sorted((directory / sub).glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


def match_only(lists, pool, out, *extra):
    result = wit_crawl("--queries", lists, "--candidates", pool, "--out", out, "--match-only", "--cap", "4",
                       "--processes", "1", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads((Path(out) / "crawl.json").read_text())


def test_query_ids_and_each_languages_t_equal_metaclip2s(tmp_path):
    """Texts in nine languages (ja, zh, th without spaces), identified offline, each
    matched against its language's list: the ids of every text equal MetaCLIP 2's
    automaton loop, the counts its per-language counts, each t its t_to_p / p_to_t."""
    assert set(NO_SPACES) <= set(CAPTIONS) and len(CAPTIONS) >= 8
    rows = pool_rows(lambda name: f"http://img.example/{name}.jpg")
    rows += [(f"http://img.example/it-{i}.jpg", text, "it") for i, text in enumerate(ITALIAN * 3)]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    summary = match_only(write_lists(tmp_path / "lists"), pool, tmp_path / "crawl")
    ids, counts, thresholds = reference([r for r in rows if r[2] != "it"], 4 * 1.3)

    candidates = {row["url"]: row for row in rows_of(tmp_path / "crawl", "candidates")}
    assert set(candidates) == {url for url, found in ids.items() if found}
    language = {url: lang for url, _, lang in rows}
    for url, row in candidates.items():
        assert (row["lang"], row["query_ids"]) == (language[url], ids[url]), row["text"]
    entry_counts = pq.read_table(tmp_path / "crawl" / "entry_counts.parquet").to_pylist()
    for lang, expected in counts.items():
        got = [(e["query_id"], e["matched"]) for e in entry_counts if e["lang"] == lang]
        assert got == list(enumerate(expected.tolist())), lang
    languages = summary["languages"]
    assert {lang: entry["t"] for lang, entry in languages.items() if lang != "other"} == pytest.approx(thresholds)
    assert len(set(thresholds.values())) > 2   # the languages are flattened to different t
    assert languages["other"] == {"texts": len(ITALIAN) * 3}
    for lang, entry in languages.items():
        if lang != "other":
            in_lang = [r for r in rows if r[2] == lang]
            assert entry["texts"] == len(in_lang) and entry["queries"] == len(ENTRIES[lang])
            assert entry["matched"] == sum(bool(ids[u]) for u, _, _ in in_lang)
            assert entry["entry_matches"] == counts[lang].sum()
    selected = rows_of(tmp_path / "crawl", "selected")
    assert sum(e.get("selected", 0) for e in languages.values()) == len(selected) == summary["counts"]["selected"]
    assert {r["url"] for r in selected} <= set(candidates)
    # a language's entries below its t keep every text
    for row in candidates.values():
        lang = row["lang"]
        if any(counts[lang][q] <= thresholds[lang] for q in row["query_ids"]):
            assert row["url"] in {r["url"] for r in selected}


def test_the_pools_language_column_overrides_the_identification(tmp_path, capsys):
    japanese = CAPTIONS["ja"][0]   # 赤いソファの上で黒い猫が寝ています
    rows = [("http://img.example/1.jpg", japanese, "ZH"), ("http://img.example/2.jpg", japanese, "ja"),
            ("http://img.example/3.jpg", japanese, "xx"), ("http://img.example/4.jpg", CAPTIONS["en"][0], None)]
    pool = write_pool(tmp_path / "pool.parquet", rows, lang_column="LANGUAGE")
    lists = write_lists(tmp_path / "lists")
    summary = match_only(lists, pool, tmp_path / "crawl", "--lang-col", "LANGUAGE")
    found = {row["url"]: (row["lang"], row["query_ids"]) for row in rows_of(tmp_path / "crawl", "candidates")}
    assert found == {
        "http://img.example/1.jpg": ("zh", metaclip2.substr_match(metaclip2.automaton(ENTRIES["zh"]), japanese)),
        "http://img.example/2.jpg": ("ja", metaclip2.substr_match(metaclip2.automaton(ENTRIES["ja"]), japanese))}
    assert summary["languages"]["other"]["texts"] == 2   # "xx" and no language at all

    # --lang-col needs a worldwide list, and the column
    single = tmp_path / "single.txt"
    single.write_text("cat\n")
    assert_one_line_error(wit_in_process(capsys, "crawl", "--queries", single, "--candidates", pool, "--out",
                                         tmp_path / "e1", "--lang-col", "LANGUAGE"),
                          "crawl", "--lang-col", "single query list")
    assert_one_line_error(wit_in_process(capsys, "crawl", "--queries", lists, "--candidates", pool, "--out",
                                         tmp_path / "e2", "--lang-col", "lang"),
                          "crawl", str(pool), "no column 'lang'")
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()


def selection(directory: Path) -> list[tuple]:
    return sorted((r["uid"], r["text"], r["lang"], tuple(r["query_ids"])) for r in rows_of(directory, "selected"))


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["pair", "image"])
def test_the_selection_does_not_depend_on_partitions_processes_or_engine(tmp_path, unit):
    """Several languages, images found on several pages with texts in several languages
    (--unit image): the same selection with one partition, partitions of 16 rows on two
    processes, and the grouping on Spark; parts merged count and flatten like the whole."""
    rows = pool_rows(lambda name: f"http://img.example/{name}.jpg")
    if unit == "image":   # the same image under captions in three languages
        rows += [(f"http://img.example/en-{c}-0.jpg", CAPTIONS[lang][c], lang)
                 for lang in ("de", "ja") for c in range(2)]
    lists = write_lists(tmp_path / "lists")
    write_pool(tmp_path / "pool-0.parquet", rows[::2])
    write_pool(tmp_path / "pool-1.parquet", rows[1::2])
    whole = match_only(lists, f"{tmp_path}/pool-*.parquet", tmp_path / "whole", "--unit", unit)
    expected = selection(tmp_path / "whole")
    assert {lang for _, _, lang, _ in expected} >= {"en", "de", "ja", "zh", "th"}
    match_only(lists, f"{tmp_path}/pool-*.parquet", tmp_path / "parts16", "--unit", unit,
               "--rows-per-partition", "16", "--processes", "2")
    assert selection(tmp_path / "parts16") == expected
    if unit == "image":
        match_only(lists, f"{tmp_path}/pool-*.parquet", tmp_path / "spark", "--unit", unit,
                   "--distributor", "pyspark", "--bucket-rows", "50")
        assert selection(tmp_path / "spark") == expected
        texts = {r["uid"]: r["texts"] for r in rows_of(tmp_path / "whole", "selected")}
        assert any({t["lang"] for t in image_texts} == {"en", "de", "ja"} for image_texts in texts.values())
    for i in range(2):
        match_only(lists, f"{tmp_path}/pool-*.parquet", tmp_path / f"part-{i}", "--unit", unit, "--part", f"{i}/2")
    result = run_wit("merge-crawl", "--parts", f"{tmp_path}/part-*", "--out", tmp_path / "merged")
    assert result.returncode == 0, result.stderr
    merged = json.loads((tmp_path / "merged" / "crawl.json").read_text())
    assert pq.read_table(tmp_path / "merged" / "entry_counts.parquet").equals(
        pq.read_table(tmp_path / "whole" / "entry_counts.parquet"))
    for lang, entry in whole["languages"].items():
        assert {k: merged["languages"][lang][k] for k in entry if k != "selected"} == \
            {k: v for k, v in entry.items() if k != "selected"}, lang


@pytest.mark.slow
def test_download_and_shards_carry_languages_and_cap_each_language(web, tmp_path):
    rows = pool_rows(lambda name: web.url(f"/img/{name}.jpg"), copies={lang: 2 for lang in CAPTIONS})
    rows[:0] = [(web.url(f"/img/head-{k}.jpg"), CAPTIONS["en"][0], "en") for k in range(12)]   # an English head
    pool = write_pool(tmp_path / "pool.parquet", rows)
    result = wit_crawl("--queries", write_lists(tmp_path / "lists"), "--candidates", pool, "--out", tmp_path / "crawl",
                       "--unit", "image", "--cap", "100", "--allow-private-hosts", "--processes", "1", "--threads", "4",
                       "--samples-per-shard", "40", "--timeout", "5")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "crawl" / "crawl.json").read_text())
    downloaded = samples(tmp_path / "crawl" / "download")
    ok = [s for s in downloaded if s["status"] == "success"]
    assert len(ok) == summary["counts"]["downloaded"] > 0
    language = {url: lang for url, _, lang in rows}
    assert all(s["lang"] == language[s["url"]] and s["texts"][0]["lang"] == s["lang"] for s in ok)
    for lang in CAPTIONS:
        assert summary["languages"][lang]["downloaded"] == sum(s["lang"] == lang for s in ok)

    cap = 3
    result = run_wit("shard", "--crawl", tmp_path / "crawl", "--out", tmp_path / "shards", "--cap", str(cap),
                     "--workers", "1")
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "shards" / "datacard.json").read_text())
    per_query = card["per_query"]
    counts = {lang: np.zeros(len(ENTRIES[lang]), np.int64) for lang in ENTRIES}
    kept = {lang: np.zeros(len(ENTRIES[lang]), np.int64) for lang in ENTRIES}
    for lang, q, d, k in zip(per_query["lang"], per_query["query_id"], per_query["downloaded"], per_query["kept"]):
        counts[lang][q], kept[lang][q] = d, k
    thresholds = language_thresholds(counts, cap)
    assert {lang: card["languages"][lang]["t"] for lang in ENTRIES} == pytest.approx(thresholds)
    for lang in ENTRIES:   # an entry at or under its language's t keeps every sample
        low = (counts[lang] > 0) & (counts[lang] <= thresholds[lang])
        assert np.array_equal(kept[lang][low], counts[lang][low]), lang
    assert kept["en"].max() < counts["en"].max()    # the English head was capped
    assert (tmp_path / "shards" / "languages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    in_shards = []
    for path in sorted((tmp_path / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            in_shards += [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
    assert len(in_shards) == card["totals"]["final_samples"]
    assert sum(card["languages"][lang]["samples"]["kept"] for lang in ENTRIES) == len(in_shards)
    for meta in in_shards:
        assert meta["lang"] in ENTRIES and all(t["lang"] in ENTRIES for t in meta["texts"])
        assert all(0 <= q < len(ENTRIES[meta["lang"]]) for q in meta["query_ids"])
