import gzip

import pytest

from tests.support.wikidump import random_corpus, write_dump
from tests.support.witcli import assert_one_line_error, run_wit
from wit.formats.errors import WitError
from wit.formats.globs import expand
from wit.queries.pageviews import read_pageviews

HOUR_1 = (
    "en Albert_Einstein 50 0\n"
    "en.m Albert_Einstein 30 0\n"
    "en.d Albert_Einstein 1000 0\n"  # Wiktionary
    "de Albert_Einstein 999 0\n"
    "en Talk:Albert_Einstein 80 0\n"  # not an article
    "en Dog 10 0\n"
    "en broken_line\n"
    "en Dog many 0\n"
    "\n"
)
HOUR_2 = "en Dog 5 0\nen.m Albert_Einstein 1 0\nen Caf\xc3\xa9 7 0\n"


def write(path, text, compress=True):
    data = text.encode("latin-1")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_views_summed_over_files_english_wikipedia_only(tmp_path):
    write(tmp_path / "pageviews-20240101-000000.gz", HOUR_1)
    write(tmp_path / "pageviews-20240101-010000.gz", HOUR_2)
    views = read_pageviews(expand([str(tmp_path / "pageviews-*.gz")], "page-view"))
    assert dict(views.views) == {"Albert Einstein": 81, "Dog": 15, "Café": 7}
    assert views.lines == 12
    assert views.malformed_lines == 3
    assert len(views.files) == 2


def test_plain_text_files_are_read_too(tmp_path):
    path = write(tmp_path / "views.txt", HOUR_2, compress=False)
    assert read_pageviews([str(path)]).views["Dog"] == 5


def test_glob_matching_nothing_is_an_error(tmp_path):
    with pytest.raises(WitError, match="no page-view file matches"):
        expand([str(tmp_path / "nothing-*.gz")], "page-view")


def test_corrupt_gzip_is_an_error_naming_the_file(tmp_path):
    path = write(tmp_path / "pageviews-1.gz", HOUR_1 * 50)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(WitError, match=f"{path}: cannot read page-view file"):
        read_pageviews([str(path)])


@pytest.mark.parametrize("lines", ["en Dog 9223372036854775808 0\n",                     # 2^63 on one line
                                   "en Dog 9223372036854775000 0\nen Dog 9000 0\n"])    # 2^63 summed
def test_views_beyond_64_bits_are_a_one_line_error_and_leave_no_output(tmp_path, lines):
    pages, _, _ = random_corpus(6, 30)
    dump = write_dump(tmp_path / "dump.xml", pages)
    views = write(tmp_path / "pageviews-1.gz", "en Cat 3 0\n" + lines)
    out = tmp_path / "out"
    result = run_wit("build-queries", "--wiki-dump", dump, "--pageviews", views, "--out", out)
    assert_one_line_error(result, "build-queries", views, "line", "'Dog'", "2^63 - 1")
    assert not out.exists()
