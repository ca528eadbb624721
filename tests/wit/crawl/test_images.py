"""`wit crawl --unit image` (MetaCLIP 2): one candidate per image with all its texts."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.testweb import TestWeb
from tests.support.watgen import WatImage, WatPage, write_wat
from tests.support.witcli import run_wit
from wit.formats.uids import url_uid


def crawl(queries: Path, out: Path, *args) -> dict:
    done = run_wit("crawl", "--queries", queries, "--out", out, "--allow-network", "127.0.0.0/8",
                   "--processes", "1", "--threads", "4", *args)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "crawl.json").read_text())


def shard_json(shards: Path) -> dict[str, dict]:
    """Every sample's json in a SHARDS dir, by url path."""
    out = {}
    for path in sorted(shards.glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    meta = json.load(tar.extractfile(member))
                    out[meta["url"].split("/", 3)[3]] = meta
    return out


@pytest.mark.slow
def test_an_image_on_several_pages_is_one_candidate_with_all_its_texts(queries_dir, tmp_path):
    """QUERIES: dog, cat, red dog, bird. /img/a.jpg appears on three pages (WAT) with the
    texts "a red dog" (twice), "a cat" (as a title) and "nothing": one image, downloaded
    once, matched[q] over (image, distinct text), every matched text in the shard json."""
    with TestWeb() as server:
        pages = [
            WatPage("http://p1.example/", [WatImage(server.url("/img/a.jpg"), alt="a red dog", title="a cat"),
                                           WatImage(server.url("/img/b.jpg"), alt="a bird")]),
            WatPage("http://p2.example/", [WatImage(server.url("/img/a.jpg"), alt="a red dog"),
                                           WatImage(server.url("/img/c.jpg"), alt="nothing")]),
            WatPage("http://p3.example/", [WatImage(server.url("/img/a.jpg"), alt="nothing here")]),
        ]
        wat = write_wat(tmp_path / "pages.warc.wat.gz", pages)
        summary = crawl(queries_dir, tmp_path / "image", "--wat", wat, "--unit", "image", "--text-attrs",
                        "alt,title,data-image-title")
        assert server.requests().count("/img/a.jpg") == 1
        pairs = crawl(queries_dir, tmp_path / "pair", "--wat", wat, "--text-attrs", "alt,title")
    assert summary["counts"]["matched"] == 4 and pairs["counts"]["matched"] == 4   # matched candidate rows
    assert (summary["counts"]["images"], summary["counts"]["image_texts"]) == (2, 3)
    assert summary["counts"]["selected"] == summary["counts"]["downloaded"] == 2
    matched = {r["query_id"]: r["matched"] for r in pq.read_table(tmp_path / "image" / "entry_counts.parquet")
               .to_pylist()}
    assert matched == {0: 1, 1: 1, 2: 1, 3: 1}          # "a red dog" counted once for a.jpg
    pair_matched = pq.read_table(tmp_path / "pair" / "entry_counts.parquet")["matched"].to_pylist()
    assert pair_matched == [2, 1, 2, 1]                 # pair mode counts every row
    [image_a] = [r for r in pq.read_table(tmp_path / "image" / "candidates").to_pylist()
                 if r["url"].endswith("/img/a.jpg")]
    assert [(t["text"], t["query_ids"], t["text_attr"], t["page_urls"]) for t in image_a["texts"]] == [
        ("a cat", [1], "title", ["http://p1.example/"]),
        ("a red dog", [0, 2], "alt", ["http://p1.example/", "http://p2.example/"])]
    [selected_a] = [r for r in pq.read_table(tmp_path / "image" / "selected").to_pylist()
                    if r["url"].endswith("/img/a.jpg")]
    assert selected_a["uid"] == url_uid(selected_a["url"])
    assert sorted(t["text"] for t in selected_a["texts"]) == ["a cat", "a red dog"]
    assert selected_a["text"] == selected_a["texts"][0]["text"]
    assert selected_a["page_url"] in ("http://p1.example/", "http://p2.example/")

    made = run_wit("shard", "--crawl", tmp_path / "image", "--out", tmp_path / "shards", "--workers", "1")
    assert made.returncode == 0, made.stderr
    samples = shard_json(tmp_path / "shards")
    assert sorted(samples) == ["img/a.jpg", "img/b.jpg"]
    texts = {t["text"]: t["query_ids"] for t in samples["img/a.jpg"]["texts"]}
    assert texts == {"a red dog": [0, 2], "a cat": [1]}
    assert samples["img/a.jpg"]["query_ids"] == texts[selected_a["text"]]


@pytest.mark.slow
def test_grouping_does_not_depend_on_partitions_workers_or_buckets(web, queries_dir, tmp_path):
    """The same selection for 1 and 3 processes, other partition sizes, and buckets far
    smaller than the pool (the pool is then grouped in many pieces)."""
    rows = []
    for i in range(300):
        url = web.url(f"/img/g{i % 120}.jpg")    # 120 images, most on several rows
        rows.append((url, ["a dog", "a cat", "red dog", "a bird", "dog and cat"][i % 5] + f" {i % 7}"))
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"url": [u for u, _ in rows], "text": [t for _, t in rows]}), pool, row_group_size=50)
    selections = {}
    for name, extra in (("one", ["--processes", "1"]),
                        ("three", ["--processes", "3", "--rows-per-partition", "50"]),
                        ("buckets", ["--processes", "2", "--rows-per-partition", "100", "--bucket-rows", "40"])):
        summary = crawl(queries_dir, tmp_path / name, "--candidates", pool, "--unit", "image", "--cap", "20",
                        "--oversample", "1", "--match-only", *extra)
        selections[name] = sorted((r["uid"], r["text"], r["query_ids"], json.dumps(r["texts"]))
                                  for r in pq.read_table(tmp_path / name / "selected").to_pylist())
        counts = pq.read_table(tmp_path / name / "entry_counts.parquet")["matched"].to_pylist()
        assert summary["counts"]["images"] == 120, name
        selections[name].append(tuple(counts))
    assert selections["one"] == selections["three"] == selections["buckets"]
    assert len(selections["one"]) - 1 < 120                                  # the cap dropped some
    assert json.loads((tmp_path / "buckets" / "crawl.json").read_text())["counts"]["buckets"] == 8
