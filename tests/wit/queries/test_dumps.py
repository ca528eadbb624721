import bz2

import pytest

from tests.support.wikidump import WikiPage, write_dump
from wit.formats.errors import WitError
from wit.queries.dumps import iter_pages, open_dump, plan_chunks, read_chunk_xml, check_footer

PAGES = [
    WikiPage(f"Page {i}", f"Text of page {i} & <b>{'word ' * (i * 37 % 200)}</b>", ns=i % 7 == 3 and 4 or 0,
             redirect=f"Page {i + 1}" if i % 5 == 4 else None)
    for i in range(40)
]
LAYOUTS = ["xml", "bz2", "multistream", "split-streams"]


def read_all(path, chunk_bytes):
    dump = open_dump(str(path))
    seen, ids = [], []
    for chunk in plan_chunks(dump, 0, chunk_bytes):
        xml, own = read_chunk_xml(chunk)
        check_footer(chunk, xml)
        ids.append(chunk.chunk_id)
        seen += [(p.title, p.namespace, p.redirect, p.text) for p in iter_pages(chunk, xml, own)]
    return dump, seen, ids


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("chunk_bytes", [1, 700, 5000, 1 << 20])
def test_every_page_read_exactly_once_in_order(tmp_path, layout, chunk_bytes):
    path = write_dump(tmp_path / f"dump.{layout}", PAGES, layout, per_stream=3, stream_bytes=257)
    dump, seen, ids = read_all(path, chunk_bytes)
    expected = [(p.title, p.ns, p.redirect is not None, p.text) for p in PAGES]
    assert seen == expected
    assert ids == sorted(set(ids))
    assert dump.multistream == (layout in ("multistream", "split-streams"))


def test_multistream_chunks_are_planned_up_front(tmp_path):
    path = write_dump(tmp_path / "d.bz2", PAGES, "multistream", per_stream=2)
    dump = open_dump(str(path))
    assert len(dump.stream_offsets) == 22  # header, 20 page streams, footer
    chunks = list(plan_chunks(dump, 3, 1))
    assert len(chunks) == 22 and all(c.data is None for c in chunks)
    assert chunks[0].chunk_id == "003-000000" and chunks[-1].last
    assert [c.start for c in chunks[1:]] == [c.end for c in chunks[:-1]]


def corrupt_middle(path):
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("layout", ["bz2", "multistream"])
@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_bz2_is_an_error_naming_the_file(tmp_path, layout, damage):
    path = write_dump(tmp_path / "d.bz2", PAGES * 5, layout)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    else:
        corrupt_middle(path)
    with pytest.raises(WitError, match=str(path)):
        read_all(path, 2000)


def test_truncated_plain_xml_is_an_error(tmp_path):
    path = write_dump(tmp_path / "d.xml", PAGES, "xml")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(WitError, match="truncated"):
        read_all(path, 2000)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"<html><body>x</body></html>",
                                     bz2.compress(b"<rss>not a wiki</rss>")])
def test_not_a_mediawiki_export(tmp_path, content):
    path = tmp_path / "notwiki.xml"
    path.write_bytes(content)
    with pytest.raises(WitError, match=f"{path}: not a MediaWiki XML export"):
        open_dump(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(WitError, match="missing.xml.bz2: cannot read"):
        open_dump(str(tmp_path / "missing.xml.bz2"))
