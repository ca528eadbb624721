"""One tar reader: `wit shard`, `wit inspect` and the trainer see the same samples of a
hostile tar (the same keys, the same image bytes, the same members refused)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from tests.support.images import jpeg
from tests.support.shards import write_raw_tar
from tests.support.witcli import run_wit
from train.data.stream import read_samples
from wit.formats.shards import shard_name
from wit.formats.uids import url_uid


def picture(value: int) -> bytes:
    """A plain 16x12 JPEG whose colour tells `value`."""
    return jpeg((value, 255 - value, value // 2), (16, 12), quality=75)


def write_hostile_tar(path) -> None:
    """Samples keyed by uid; one key in two dirs, one with png and jpg, one key again later,
    one with a repeated member, members escaping the archive, a link."""
    def sample(key: str, value: int, image: str = "jpg") -> list[tuple[str, bytes]]:
        uid = key.rsplit("/", 1)[-1]
        data = picture(value)
        meta = {"uid": uid, "url": f"http://x/{value}", "query_ids": [0], "width": 16, "height": 12,
                "original_width": 16, "original_height": 12, "sha256": hashlib.sha256(data).hexdigest()}
        return [(f"{key}.{image}", data), (f"{key}.txt", f"text {value}".encode()),
                (f"{key}.json", json.dumps(meta).encode())]

    uids = [url_uid(str(i)) for i in range(8)]
    members = [*sample(uids[0], 10), *sample(f"a/{uids[1]}", 20), *sample(f"b/{uids[1]}", 30)]
    both = sample(uids[2], 40)
    members += [(f"{uids[2]}.png", b"\x89PNG\r\n\x1a\n not the image"), *both]           # jpg wins
    members += [*sample(uids[3], 50), (f"{uids[3]}.txt", b"again")]                       # repeated member
    members += [("../evil.jpg", picture(1)), ("/abs/evil.txt", b"x"), *sample(uids[4], 60)]
    members += [*sample(uids[0], 70)]                                                    # uids[0] again, later
    write_raw_tar(path, members)


def test_shard_inspect_and_trainer_read_the_same_samples(tmp_path):
    crawl = tmp_path / "crawl"
    (crawl / "download").mkdir(parents=True)
    (crawl / "crawl.json").write_text(json.dumps({"queries": 1}))
    tar = crawl / "download" / "00000.tar"
    write_hostile_tar(tar)
    (crawl / "download" / "00000_stats.json").write_text("{}")   # img2dataset's mark of a finished shard
    counts: Counter[str] = Counter()
    trainer = [(s.key, s.image) for s in read_samples(str(tar), 0, counts)]
    assert [k.rsplit("/", 1)[-1] for k, _ in trainer] == [url_uid(str(i)) for i in (0, 1, 1, 2, 4)]
    assert counts["refused_members"] == 5   # duplicate key, duplicate member, ../, /abs, link

    # wit shard: a/K and b/K are two samples of one uid (deduplicated to the first); the rest as read
    out = tmp_path / "shards"
    done = run_wit("shard", "--crawl", crawl, "--out", out, "--cap", "100")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["refused_members"] == {"duplicate_key": 1, "duplicate_member": 1,
                                                     "path_traversal": 1, "absolute_path": 1, "link": 1}
    written = {s.meta and json.loads(s.meta)["uid"]: s.image for s in read_samples(str(out / shard_name(0)))}
    assert written == {k.rsplit("/", 1)[-1]: image for k, image in trainer if not k.startswith("b/")}

    # wit inspect on the same tar as a shard: the same samples shown, the same problems found
    (tmp_path / "as_shards").mkdir()
    hostile = tmp_path / "as_shards" / shard_name(0)
    hostile.write_bytes(tar.read_bytes())
    manifest["shards"] = [{"name": hostile.name, "samples": len(trainer), "bytes": hostile.stat().st_size,
                           "sha256": hashlib.sha256(hostile.read_bytes()).hexdigest()}]
    manifest["total_samples"], manifest["total_bytes"] = len(trainer), hostile.stat().st_size
    (tmp_path / "as_shards" / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / "as_shards" / "sizes.json").write_text(json.dumps({hostile.name: len(trainer)}))
    (tmp_path / "as_shards" / "datacard.json").write_text((out / "datacard.json").read_text())
    shown = run_wit("inspect", tmp_path / "as_shards", "--show", "10")
    assert shown.returncode == 0, shown.stderr
    assert [line.split()[0] for line in shown.stdout.splitlines() if "queries [" in line] == [k for k, _ in trainer]
    verified = run_wit("inspect", tmp_path / "as_shards", "--verify")
    problems = [line for line in verified.stdout.splitlines() if line.startswith("problem:")]
    for reason in ("duplicate_key", "duplicate_member", "path_traversal", "absolute_path", "link"):
        assert sum(reason in p for p in problems) == 1, (reason, problems)
