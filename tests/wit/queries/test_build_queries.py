"""`wit build-queries` end to end on synthetic dumps: exact counts, PMI, titles, order,
size cap, parallel/serial equality, kill and resume, and every bad-input error."""

import gzip
import hashlib
import json
import math
import os
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.faults import kill_during_overwrite, small_filesystem
from tests.support.wikidump import WikiPage, random_corpus, site_header, write_dump
from tests.support.witcli import assert_one_line_error, run_wit
from wit.formats.errors import WitError
from wit.queries.build import BuildConfig, run as build_queries

PAGES = [
    WikiPage("Alpha", "Alpha beta gamma. Alpha beta delta.{{cite|template words}}<ref>ref words</ref>"),
    WikiPage("Beta", "[[Alpha]] beta gamma, zeta eta theta.\n[[File:X.jpg|thumb|caption words]]"),
    WikiPage("Gamma", "#REDIRECT [[Alpha]]", redirect="Alpha"),
    WikiPage("Talk:Alpha", "alpha talk words", ns=1),
]
# Hand count: Alpha 3, beta 3, gamma 2, delta 1, zeta 1, eta 1, theta 1 -> N = 12.
# Bigrams: Alpha beta 3, beta gamma 2, beta delta 1, zeta eta 1, eta theta 1.
N = 12


def small_wordnet(directory: Path) -> Path:
    directory.mkdir()
    lemmas = {"data.noun": ["omega", "beta", "physical_entity"], "data.verb": ["delta"],
              "data.adj": ["Alpha(a)"], "data.adv": ["zeta"]}
    for name, words in lemmas.items():
        lines = [f"{i:08d} 03 n 01 {w} 0 000 | gloss\n" for i, w in enumerate(words)]
        (directory / name).write_text("  1 licence header\n" + "".join(lines))
    return directory


def pageviews(path: Path) -> Path:
    lines = ["en Alpha 50 0", "en.m Alpha 30 0", "en Beta 69 0", "en Nonexistent 500 0",
             "en Gamma 100 0", "en Talk:Alpha 900 0", "garbage", "en Beta x 0"]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    return path


def read_queries(out) -> list[dict]:
    return pq.read_table(Path(out) / "queries.parquet").to_pylist()


def test_hand_computed_list(tmp_path):
    dump = write_dump(tmp_path / "dump.xml", PAGES)
    stats = build_queries(BuildConfig(
        wiki_dumps=(str(dump),), out=str(tmp_path / "q"), pageviews=(str(pageviews(tmp_path / "pv.gz")),),
        wordnet=str(small_wordnet(tmp_path / "wn")), min_count=2, min_pmi=1.0, min_bigram_count=2,
        min_views=70, workers=1, size=7,
    ))
    pmi = math.log2(3 * N / (3 * 3))  # = log2(2 * N / (3 * 2)) = 2
    assert [(q["query"], q["sources"], q["count"], q["pmi"], q["views"]) for q in read_queries(tmp_path / "q")] == [
        ("Alpha", ["unigram", "title"], 3, None, 80),
        ("beta", ["unigram", "wordnet"], 3, None, 0),
        ("gamma", ["unigram"], 2, None, 0),
        ("Alpha beta", ["bigram"], 3, pytest.approx(pmi), 0),
        ("beta gamma", ["bigram"], 2, pytest.approx(pmi), 0),
        ("delta", ["wordnet"], 1, None, 0),  # WordNet ranked by Wikipedia count, then
        ("zeta", ["wordnet"], 1, None, 0),  # file order (verb before adverb); size=7 cuts the rest
    ]
    assert [q["query_id"] for q in read_queries(tmp_path / "q")] == list(range(7))
    metadata = json.loads((tmp_path / "q" / "metadata.json").read_text())
    assert metadata == [q["query"] for q in read_queries(tmp_path / "q")]
    assert stats["tokens"] == N and stats["vocabulary"] == 7
    assert stats["pages"] == {"pages": 4, "articles": 2, "redirects": 1, "other_namespaces": 1,
                              "wikitext_bytes": stats["pages"]["wikitext_bytes"], "input_bytes": dump.stat().st_size}
    assert stats["pageview_malformed_lines"] == 2
    assert stats["sources"]["title"] == {"qualified": 1, "listed": 1, "first_listed_by": 0}
    assert stats["sources"]["wordnet"]["qualified"] == 6 and stats["queries"] == 7
    assert json.loads((tmp_path / "q" / "stats.json").read_text()) == stats
    assert sorted(os.listdir(tmp_path / "q")) == [".wit", "metadata.json", "queries.parquet", "stats.json"]


def test_namespaces_come_from_the_dumps_siteinfo(tmp_path):
    """A German dump's `Datei:` and `Kategorie:` links are not prose, as `File:` and
    `Category:` are not in English (whose names every wiki also takes)."""
    header = site_header("de", {-2: "Medium", 6: "Datei", 14: "Kategorie", 1: "Diskussion"})
    page = WikiPage("Hund", "Der Hund bellt. [[Datei:Hund.jpg|mini|Bildtext Wort]] [[Kategorie:Tiere]] "
                            "[[File:X.jpg|mini|Anderer Text]] [[Diskussion:Hund|Gesprochen]]")
    dump = write_dump(tmp_path / "dewiki.xml", [page], header=header)
    build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(tmp_path / "q"), min_count=1, min_pmi=100,
                              workers=1))
    assert sorted(q["query"] for q in read_queries(tmp_path / "q")) == ["Der", "Gesprochen", "Hund", "bellt"]


def test_pmi_threshold_and_min_bigram_count(tmp_path):
    dump = write_dump(tmp_path / "dump.xml", PAGES)
    build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(tmp_path / "q"), min_count=100,
                              min_pmi=3.0, min_bigram_count=1, workers=1))
    rows = [(q["query"], q["count"], q["pmi"]) for q in read_queries(tmp_path / "q")]
    # beta delta: log2(1*12/(3*1)) = 2 < 3; the two exclusive pairs: log2(12) = 3.585
    assert rows == [("eta theta", 1, pytest.approx(math.log2(N))), ("zeta eta", 1, pytest.approx(math.log2(N)))]


def test_lowercase(tmp_path):
    dump = write_dump(tmp_path / "dump.xml", [WikiPage("Dog", "The dog. the Dog. THE DOG")])
    build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(tmp_path / "q"), min_count=3,
                              min_pmi=100, lowercase=True, workers=1))
    assert [(q["query"], q["count"]) for q in read_queries(tmp_path / "q")] == [("dog", 3), ("the", 3)]


@pytest.mark.parametrize("layout", ["xml", "bz2", "multistream"])
def test_counts_equal_reference_whatever_the_layout_chunking_and_workers(tmp_path, layout):
    pages, unigrams, bigrams = random_corpus(1, 300)
    dump = write_dump(tmp_path / "dump", pages, layout, per_stream=7)
    total = sum(unigrams.values())
    tables = []
    for workers, chunk_mb in [(1, 1.0), (2, 0.002)]:
        out = tmp_path / f"q{workers}"
        stats = build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(out), min_count=1,
                                          min_pmi=-100, min_bigram_count=1, workers=workers, chunk_mb=chunk_mb))
        assert stats["tokens"] == total
        rows = read_queries(out)
        assert {q["query"]: q["count"] for q in rows if "unigram" in q["sources"]} == dict(unigrams)
        got_bigrams = {q["query"]: (q["count"], q["pmi"]) for q in rows if "bigram" in q["sources"]}
        assert got_bigrams == {
            f"{a} {b}": (n, pytest.approx(math.log2(n * total / (unigrams[a] * unigrams[b]))))
            for (a, b), n in bigrams.items()
        }
        tables.append((out / "queries.parquet").read_bytes())
    assert stats["chunks"] > 10
    assert tables[0] == tables[1]


wit = partial(run_wit, "build-queries")


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_outputs(tmp_path):
    pages, _, _ = random_corpus(2, 3000)
    dump = write_dump(tmp_path / "dump.xml.bz2", pages, "bz2")
    common = ["--wiki-dump", dump, "--min-count", "1", "--min-pmi", "0", "--workers", "1", "--chunk-mb", "0.002"]
    assert wit(*common, "--out", tmp_path / "straight").returncode == 0

    out = tmp_path / "killed"
    proc = wit(*common, "--out", out, stderr=subprocess.DEVNULL)
    units = tmp_path / ".killed.partial" / ".wit" / "units"   # built beside the output
    deadline = time.time() + 60
    while time.time() < deadline and len(list(units.glob("*.json"))) < 30:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(units.glob("*.json")))
    assert finished >= 30 and not out.exists()

    result = wit(*common, "--out", out)
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert finished <= stats["chunks_resumed"] < stats["chunks"]
    for name in ("queries.parquet", "metadata.json"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    assert not (out / ".wit" / "scratch").exists() and not units.exists()


def test_other_settings_are_refused_and_overwrite_replaces(tmp_path):
    pages, _, _ = random_corpus(3, 200)
    dump = write_dump(tmp_path / "dump.xml", pages)
    out = tmp_path / "q"
    first = build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(out), workers=1, min_count=1))
    assert build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(out), workers=1, min_count=1)) == first
    before = (out / "queries.parquet").read_bytes()
    with pytest.raises(WitError, match="other settings or inputs \\(min_count\\).*--overwrite"):
        build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(out), workers=1, min_count=50))
    assert (out / "queries.parquet").read_bytes() == before
    stats = build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(out), workers=1, min_count=50,
                                      overwrite=True))
    assert stats["thresholds"]["min_count"] == 50 and stats["queries"] < first["queries"]
    assert json.loads((out / "stats.json").read_text()) == stats
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.xml", "q"]   # nothing left beside it


def bad_inputs(tmp_path):
    pages, _, _ = random_corpus(4, 400)
    good = write_dump(tmp_path / "good.xml", pages)
    truncated = write_dump(tmp_path / "truncated.xml.bz2", pages, "bz2")
    truncated.write_bytes(truncated.read_bytes()[:-500])
    corrupt = write_dump(tmp_path / "corrupt.xml.bz2", pages, "multistream")
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 50] = bytes(50)
    corrupt.write_bytes(bytes(data))
    not_wiki = tmp_path / "page.html"
    not_wiki.write_text("<html><body>hello</body></html>")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    return {
        "missing dump": (["--wiki-dump", tmp_path / "nope.xml"], [tmp_path / "nope.xml"]),
        "truncated bz2": (["--wiki-dump", truncated], [truncated, "truncated"]),
        "corrupt multistream bz2": (["--wiki-dump", corrupt, "--workers", "2", "--chunk-mb", "0.01"], [corrupt, "corrupt"]),
        "not a MediaWiki export": (["--wiki-dump", not_wiki], [not_wiki, "not a MediaWiki"]),
        "unreadable WordNet": (["--wiki-dump", good, "--wordnet", empty_dir], [empty_dir, "not a WordNet"]),
        "no page-view files": (["--wiki-dump", good, "--pageviews", tmp_path / "pv-*.gz"], ["pv-*.gz"]),
    }


@pytest.mark.parametrize("case", ["missing dump", "truncated bz2", "corrupt multistream bz2",
                                  "not a MediaWiki export", "unreadable WordNet", "no page-view files"])
def test_bad_input_one_line_error_and_no_output(tmp_path, case):
    args, fragments = bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    assert_one_line_error(wit(*args, "--out", out), "build-queries", *fragments)
    assert not out.exists()


def test_failed_run_keeps_earlier_outputs(tmp_path):
    pages, _, _ = random_corpus(5, 50)
    good = write_dump(tmp_path / "good.xml", pages)
    out = tmp_path / "out"
    assert wit("--wiki-dump", good, "--out", out, "--min-count", "1").returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = write_dump(tmp_path / "bad.xml.bz2", pages, "bz2")
    bad.write_bytes(bad.read_bytes()[:-100])
    assert_one_line_error(wit("--wiki-dump", bad, "--out", out, "--overwrite"), "build-queries", bad)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xml.bz2", "good.xml", "out"]


def query_outputs(directory: Path) -> dict[str, bytes]:
    return {n: (directory / n).read_bytes() for n in ("queries.parquet", "metadata.json")} \
        if directory.exists() else {}


@pytest.mark.slow
def test_kill_9_during_overwrite_leaves_the_old_or_the_new_output(tmp_path):
    pages, _, _ = random_corpus(7, 2000)
    dump = write_dump(tmp_path / "dump.xml.bz2", pages, "bz2")
    common = ["build-queries", "--wiki-dump", dump, "--min-pmi", "0", "--workers", "1", "--chunk-mb", "0.01"]
    kill_during_overwrite([*common, "--min-count", "1"], [*common, "--min-count", "40"], tmp_path / "q",
                          query_outputs)


def test_full_disk_is_one_line_and_keeps_the_earlier_output(tmp_path):
    pages, _, _ = random_corpus(8, 3000)
    dump = write_dump(tmp_path / "dump.xml", pages)
    with small_filesystem(tmp_path / "disk", "160k") as disk:
        out = disk / "q"
        assert wit("--wiki-dump", dump, "--out", out, "--min-count", "1000000", "--workers", "1").returncode == 0
        before = query_outputs(out)
        result = wit("--wiki-dump", dump, "--out", out, "--min-count", "1", "--min-pmi", "-100",
                     "--min-bigram-count", "1", "--workers", "1", "--chunk-mb", "0.01", "--overwrite")
        assert_one_line_error(result, "build-queries", "No space left on device", "run the same command again")
        assert "Traceback" not in result.stderr and query_outputs(out) == before


def test_titles_all_keeps_redirect_names_and_titles_of_other_dumps(tmp_path):
    """MetaCLIP's rule keeps every page-view title with enough views (the redirect Gamma,
    Nonexistent); the default keeps the dump's non-redirect articles (Alpha)."""
    dump = write_dump(tmp_path / "dump.xml", PAGES)
    views = str(pageviews(tmp_path / "pv.gz"))
    titles = {}
    for rule in ("articles", "all"):
        stats = build_queries(BuildConfig(wiki_dumps=(str(dump),), out=str(tmp_path / rule), pageviews=(views,),
                                          min_count=100, min_pmi=100, min_views=70, workers=1, titles=rule))
        assert stats["thresholds"]["titles"] == rule
        titles[rule] = [(q["query"], q["views"]) for q in read_queries(tmp_path / rule) if "title" in q["sources"]]
    assert titles == {"articles": [("Alpha", 80)], "all": [("Nonexistent", 500), ("Gamma", 100), ("Alpha", 80)]}
    with pytest.raises(WitError, match="--titles: unknown 'redirects'"):
        BuildConfig(wiki_dumps=(str(dump),), out=str(tmp_path / "x"), titles="redirects")


IMPORTED = ["dog", "red dog", "dog", "U.S.", "cat"]


def test_import_a_metaclip_list(tmp_path):
    source = tmp_path / "metadata.json"
    source.write_text(json.dumps(IMPORTED))
    done = run_wit("build-queries", "--import", source, "--out", tmp_path / "q")
    assert done.returncode == 0, done.stderr
    assert "5 queries imported" in done.stderr
    rows = read_queries(tmp_path / "q")
    assert [(r["query_id"], r["query"], r["sources"], r["count"], r["views"]) for r in rows] == \
        [(i, q, ["imported"], None, None) for i, q in enumerate(IMPORTED)]
    stats = json.loads((tmp_path / "q" / "stats.json").read_text())
    assert stats["inputs"]["import"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert stats["inputs"]["import"]["format"] == "metadata.json"
    assert stats["sources"] == {"imported": {"qualified": 5, "listed": 5, "first_listed_by": 5}}
    assert stats["duplicates"] == {"entries": 1, "ids": [[0, 2]]}
    assert stats["never_matching"] == {"entries": 1, "examples": ["U.S."]}
    assert json.loads((tmp_path / "q" / "metadata.json").read_text()) == IMPORTED
    again = run_wit("build-queries", "--import", source, "--out", tmp_path / "q")
    assert again.returncode == 0 and json.loads((tmp_path / "q" / "stats.json").read_text()) == stats

    lines = tmp_path / "queries.txt"
    lines.write_text("dog\n\ncat\n")
    assert_one_line_error(run_wit("build-queries", "--import", lines, "--out", tmp_path / "bad"),
                          "build-queries", str(lines), "entry 1 is empty")
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.partial").exists()
    assert_one_line_error(run_wit("build-queries", "--import", source, "--wiki-dump", source, "--out",
                                  tmp_path / "bad"), "build-queries", "--import", "not with --wiki-dump")
