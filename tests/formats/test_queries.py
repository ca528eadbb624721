"""Reading a query list in each format users have, and the entries that are refused."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wit.formats.errors import WitError
from wit.formats.queries import duplicates, never_matching, read_queries, write_queries

QUERIES = ["dog", "red dog", "café", "dog", " leading", "U.S."]


def test_every_format_gives_the_same_list(tmp_path):
    built = tmp_path / "built"
    built.mkdir()
    write_queries(str(built), {"query": QUERIES, "sources": [["unigram"]] * 6, "count": [1] * 6,
                               "pmi": [None] * 6, "views": [None] * 6})
    metaclip = tmp_path / "metaclip"
    metaclip.mkdir()
    (metaclip / "metadata.json").write_text(json.dumps(QUERIES, ensure_ascii=False))
    lines = tmp_path / "queries.txt"
    lines.write_bytes("\r\n".join(QUERIES).encode() + b"\r\n")
    no_final_newline = tmp_path / "list"
    no_final_newline.write_text("\n".join(QUERIES))
    for path, kind in ((built, "queries.parquet"), (built / "metadata.json", "metadata.json"),
                       (metaclip, "metadata.json"), (metaclip / "metadata.json", "metadata.json"),
                       (lines, "lines"), (no_final_newline, "lines")):
        read = read_queries(str(path))
        assert (read.queries, read.format) == (QUERIES, kind), path
        assert read.sha256 == hashlib.sha256(open(read.path, "rb").read()).hexdigest()


@pytest.mark.parametrize("content, problem", [
    (b"", "the query list is empty"),
    (b"dog\n\ncat\n", "entry 1 is empty"),
    (b"dog\n   \n", "entry 1 is only spaces"),
    (b"dog\ncat\tdog\n", "entry 1 ('cat\\tdog') holds the control character U+0009"),
    ("dog\ncat\u0085\n".encode(), "U+0085"),
    (b"dog\x00cat\n", "holds NUL bytes, not a text file"),
    (b"\xff\xfedog", "not UTF-8 text (byte 0)"),
])
def test_refused_line_files(tmp_path, content, problem):
    path = tmp_path / "queries.txt"
    path.write_bytes(content)
    with pytest.raises(WitError, match=str(path)) as error:
        read_queries(str(path))
    assert problem in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("content, problem", [
    ('{"dog": 1}', "not a JSON list of strings"),
    ('["dog", 3]', "not a JSON list of strings"),
    ('["dog", ', "not JSON"),
    ('["dog", ""]', "entry 1 is empty"),
    ('["dog", "a\\u0000b"]', "U+0000"),
])
def test_refused_json_lists(tmp_path, content, problem):
    path = tmp_path / "metadata.json"
    path.write_text(content)
    with pytest.raises(WitError) as error:
        read_queries(str(path))
    assert problem in str(error.value)


def test_refused_paths_name_the_formats_that_work(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.md").write_text("hi")
    for path in (tmp_path / "other", tmp_path / "missing.json"):
        with pytest.raises(WitError, match="give a QUERIES dir .*metadata.json.*one query per line"):
            read_queries(str(path))
    broken = tmp_path / "queries.parquet"
    pq.write_table(pa.table({"query_id": pa.array([1], pa.int32()), "query": ["dog"]}), broken)
    with pytest.raises(WitError, match="query_id must run densely from 0"):
        read_queries(str(broken))


def test_duplicates_and_entries_that_never_match():
    assert duplicates(QUERIES) == [[0, 3]]
    assert never_matching(QUERIES + ["rock , paper", "...", "a.b c"]) == [5, 7, 8]
