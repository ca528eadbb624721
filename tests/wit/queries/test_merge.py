"""`wit build-queries --merge`: per-language lists into one worldwide list in MetaCLIP 2's
layout, read back by `read_worldwide`; one-line errors for a language given twice and a
malformed LANG=LIST."""

from __future__ import annotations

import json

import pytest

from tests.support.witcli import assert_one_line_error, wit_in_process
from wit.formats.queries import is_worldwide, read_queries, read_worldwide


@pytest.fixture
def lists(tmp_path):
    (tmp_path / "ja.json").write_text(json.dumps(["猫", "東京タワー", "写真"], ensure_ascii=False))
    (tmp_path / "de.txt").write_text("Hund\nKatze\nroter Hund\n")
    return tmp_path


def test_merge_writes_one_file_per_language_in_metaclip2s_layout(lists, tmp_path, capsys):
    out = tmp_path / "worldwide"
    done = wit_in_process(capsys, "build-queries", "--merge", f"ja={lists / 'ja.json'}", "--merge",
                          f"de={lists / 'de.txt'}", "--out", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["de.json", "ja.json", "stats.json"]
    assert json.loads((out / "ja.json").read_text()) == ["猫", "東京タワー", "写真"]
    assert is_worldwide(str(out))
    worldwide = read_worldwide(str(out))
    assert {lang: q.queries for lang, q in worldwide.lists.items()} == \
        {"de": ["Hund", "Katze", "roter Hund"], "ja": ["猫", "東京タワー", "写真"]}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["languages"] == 2 and stats["queries"] == 6
    assert stats["inputs"]["de"]["sha256"] == read_queries(str(lists / "de.txt")).sha256

    more = tmp_path / "more"   # a worldwide dir merged again, with one more language
    (lists / "th.txt").write_text("แมว\n")
    done = wit_in_process(capsys, "build-queries", "--merge", f"*={out}", "--merge", f"th={lists / 'th.txt'}",
                          "--out", more)
    assert done.returncode == 0, done.stderr
    assert sorted(read_worldwide(str(more)).lists) == ["de", "ja", "th"]


def test_merge_errors_are_one_line_and_leave_nothing(lists, tmp_path, capsys):
    out = tmp_path / "W"
    cases = [
        (("--merge", f"ja={lists / 'ja.json'}", "--merge", f"ja={lists / 'de.txt'}"), ["language ja given twice"]),
        (("--merge", f"Japanese={lists / 'ja.json'}"), ["give LANG=LIST"]),
        (("--merge", f"ja={lists / 'nope.json'}"), [lists / "nope.json", "no such query list"]),
        (("--merge", f"*={lists / 'ja.json'}"), ["not a worldwide dir"]),
        (("--merge", f"ja={lists / 'ja.json'}", "--import", lists / "de.txt"), ["not with --import"]),
    ]
    for args, fragments in cases:
        result = wit_in_process(capsys, "build-queries", *args, "--out", out)
        assert_one_line_error(result, "build-queries", *fragments)
        assert not any(p.name.startswith((".W", "W")) for p in tmp_path.iterdir())
