from wit.formats.uids import is_uid, url_uid


def test_a_url_has_one_well_formed_uid():
    uid = url_uid("http://example.com/a.jpg")
    assert is_uid(uid) and uid == url_uid("http://example.com/a.jpg") != url_uid("http://example.com/b.jpg")
    assert url_uid("http://example.com/a.jpg") == "0ac6ec4f17cee1686346a77ceb5e5aab"   # stable across versions


def test_anything_else_is_not_a_uid():
    good = url_uid("x")
    for bad in (good[:31], good + "0", good.upper(), good[:31] + "g", good[:30] + "/a", "../" + good[3:],
                good[:31] + "\0", good[:31] + ".", "..", "", None, 123, [good], " " + good[1:]):
        assert not is_uid(bad), bad
