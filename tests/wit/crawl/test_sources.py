import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.watgen import WatImage, WatPage, truncate_file, write_wat
from wit.crawl.sources import SourceStats, TableColumns, plan_partitions, read_partition
from wit.formats.globs import expand
from wit.formats.errors import WitError

ROWS = [("http://a.example/1.jpg", "a red dog"), ("http://a.example/2.jpg", "two, cats"),
        ("", "no url"), ("http://a.example/4.jpg", None), ("http://a.example/5.jpg", "five")]


def read_all(files, columns=TableColumns(), rows_per_partition=1_000_000, batch_rows=2, wat=False):
    partitions = plan_partitions(files, wat, columns, rows_per_partition)
    stats = SourceStats()
    batches = [b for p in partitions for b in read_partition(p, columns, batch_rows, stats)]
    rows = pa.concat_tables(batches).to_pylist() if batches else []
    return partitions, rows, stats


def write_tables(tmp_path):
    urls, texts = zip(*ROWS)
    table = pa.table({"image": list(urls), "caption": list(texts), "extra": [1, 2, 3, 4, 5]})
    pq.write_table(table, tmp_path / "pool.parquet", row_group_size=2)
    lines = [json.dumps({"image": u, "caption": t, "extra": 1}) for u, t in ROWS]
    with gzip.open(tmp_path / "pool.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    csv = "image,caption,extra\n" + "".join(
        f'{u},"{t}",1\n' if t is not None else f"{u},,1\n" for u, t in ROWS)
    (tmp_path / "pool.csv").write_text(csv)
    (tmp_path / "pool.tsv").write_text(csv.replace(",", "\t").replace('"two\t cats"', '"two, cats"'))


@pytest.mark.parametrize("name", ["pool.parquet", "pool.jsonl.gz", "pool.csv", "pool.tsv"])
def test_table_formats_give_the_same_rows(tmp_path, name):
    write_tables(tmp_path)
    path = str(tmp_path / name)
    _, rows, stats = read_all([path], TableColumns("image", ("caption",)))
    assert [(r["url"], r["text"]) for r in rows] == [ROWS[0], ROWS[1], ROWS[4]]
    assert all(r["source_file"] == path for r in rows)
    assert stats.missing_url_or_text == 2


def test_parquet_is_split_by_row_groups(tmp_path):
    write_tables(tmp_path)
    partitions, rows, _ = read_all([str(tmp_path / "pool.parquet")], TableColumns("image", ("caption",)),
                                   rows_per_partition=2)
    assert [p.row_groups for p in partitions] == [(0,), (1,), (2,)]
    assert [p.partition_id for p in partitions] == ["00000-00000", "00000-00001", "00000-00002"]
    assert len(rows) == 3


def test_fsspec_urls(tmp_path):
    write_tables(tmp_path)
    files = expand([f"file://{tmp_path}/pool.*"], "candidate")
    assert len(files) == 4 and all(f.startswith("file://") for f in files)
    _, rows, _ = read_all([f for f in files if f.endswith(".parquet")], TableColumns("image", ("caption",)))
    assert len(rows) == 3


def test_errors_name_the_file(tmp_path):
    write_tables(tmp_path)
    with pytest.raises(WitError, match="no candidate file matches"):
        expand([str(tmp_path / "none-*.parquet")], "candidate")
    with pytest.raises(WitError, match=r"pool.parquet: no column 'url'"):
        plan_partitions([str(tmp_path / "pool.parquet")], False, TableColumns(), 10)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(WitError, match="bad.parquet: cannot read candidate file"):
        plan_partitions([str(bad)], False, TableColumns(), 10)
    with pytest.raises(WitError, match="unknown candidate format"):
        plan_partitions([str(tmp_path / "pool.txt")], False, TableColumns(), 10)


PAGES = [
    WatPage("http://site.example/dir/page.html", [
        WatImage("img/a.jpg", alt="a red dog"),
        WatImage("/b.png", alt="two cats", title="Cats"),
        WatImage("c.jpg", alt=None),
        WatImage("d.jpg", alt="   "),
        WatImage("https://cdn.example/e.jpg", alt="absolute"),
        WatImage("f.jpg", alt=" two\r\nlines ", title="two lines", data_image_title="F image"),
        WatImage("g.jpg", title="title only"),
    ], other_links=[("A@/href", "/about"), ("IMG@/data-src", "lazy.jpg")]),
    WatPage("http://other.example/x/y.html", [WatImage("z.jpg", alt="with base")],
            base="http://static.example/assets/"),
    WatPage("http://third.example/", [WatImage("t.jpg", alt="third page")]),
]


def test_wat_extraction(tmp_path):
    path = write_wat(tmp_path / "a.warc.wat.gz", PAGES, corrupt_json_after={0})
    _, rows, stats = read_all([str(path)], wat=True)
    page = "http://site.example/dir/page.html"
    assert [(r["url"], r["text"], r["text_attr"], r["page_url"]) for r in rows] == [
        ("http://site.example/dir/img/a.jpg", "a red dog", "alt", page),
        ("http://site.example/b.png", "two cats", "alt", page),
        ("https://cdn.example/e.jpg", "absolute", "alt", page),
        ("http://site.example/dir/f.jpg", "two  lines", "alt", page),
        ("http://static.example/assets/z.jpg", "with base", "alt", "http://other.example/x/y.html"),
        ("http://third.example/t.jpg", "third page", "alt", "http://third.example/"),
    ]
    assert stats.corrupt_records == 1
    assert stats.records == 6  # 3 pages, 1 corrupt, 1 non-HTML response, 1 request


def test_wat_texts_of_every_attribute(tmp_path):
    """MetaCLIP 2's set: alt, title and data-image-title, each cleaned, distinct per link."""
    path = write_wat(tmp_path / "a.warc.wat.gz", PAGES[:1])
    _, rows, _ = read_all([str(path)], TableColumns(text_attrs=("alt", "title", "data-image-title")), wat=True)
    assert [(r["url"].rsplit("/", 1)[1], r["text"], r["text_attr"]) for r in rows] == [
        ("a.jpg", "a red dog", "alt"), ("b.png", "two cats", "alt"), ("b.png", "Cats", "title"),
        ("e.jpg", "absolute", "alt"), ("f.jpg", "two  lines", "alt"), ("f.jpg", "two lines", "title"),
        ("f.jpg", "F image", "data-image-title"), ("g.jpg", "title only", "title")]


def test_a_link_urljoin_refuses_does_not_cost_its_page(tmp_path):
    """urljoin raises on `//[bad`: that link is kept as it is (the url policy refuses it as
    malformed), the page's other links are read, the record is not corrupt."""
    page = WatPage("https://site.example/p.html", [WatImage("//[bad/a.jpg", alt="bad host"),
                                                   WatImage("b.jpg", alt="good")])
    _, rows, stats = read_all([str(write_wat(tmp_path / "a.warc.wat.gz", [page]))], wat=True)
    assert [(r["url"], r["text"]) for r in rows] == [("//[bad/a.jpg", "bad host"),
                                                     ("https://site.example/b.jpg", "good")]
    assert stats.corrupt_records == 0


def test_several_text_columns(tmp_path):
    pq.write_table(pa.table({"url": ["u1", "u2", "u3"], "alt": ["dog", None, "cat"],
                             "title": ["Dog", "bird", "cat"]}), tmp_path / "pool.parquet")
    _, rows, stats = read_all([str(tmp_path / "pool.parquet")], TableColumns(texts=("alt", "title")))
    assert [(r["url"], r["text"], r["text_attr"]) for r in rows] == [
        ("u1", "dog", "alt"), ("u1", "Dog", "title"), ("u2", "bird", "title"),   # in batches of 2 rows
        ("u3", "cat", "alt")]                                                   # u3's title repeats its alt
    assert stats.missing_url_or_text == 1   # u2's missing alt


def test_truncated_wat_is_not_fatal(tmp_path):
    pages = [WatPage(f"http://p{i}.example/", [WatImage("a.jpg", alt=f"page {i}")]) for i in range(200)]
    path = write_wat(tmp_path / "t.warc.wat.gz", pages, include_non_html=False)
    _, rows, stats = read_all([str(path)], wat=True)
    assert (len(rows), stats.corrupt_records) == (200, 0)
    whole = path.read_bytes()
    for fraction in (0.02, 0.5, 0.9999):   # in the middle of a member, or in its last bytes
        path.write_bytes(whole)
        truncate_file(path, fraction)
        _, rows, stats = read_all([str(path)], wat=True)
        assert len(rows) <= 200   # a cut in the last member's trailer loses no record
        assert [r["text"] for r in rows] == [f"page {i}" for i in range(len(rows))]
        assert stats.corrupt_records == 1, fraction   # the member cut short, not a silent end
