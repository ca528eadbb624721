"""`wit shard` and `wit inspect` on crawl outputs written in img2dataset's format by the tests."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.support.crawls import add, pool, write_download
from tests.support.faults import kill_during_overwrite, small_filesystem
from tests.support.images import noise_jpeg
from tests.support.outputs import files
from tests.support.testweb import bomb_png
from tests.support.witcli import assert_one_line_error, run_wit
from wit.formats.balance import draws, uid_keys
from wit.formats.uids import url_uid


wit = run_wit


def test_cap_dedup_and_outputs(tmp_path):
    shards, truth = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    out = tmp_path / "shards"
    result = wit("shard", "--crawl", crawl, "--out", out, "--cap", "50", "--samples-per-shard", "64")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["samples_read"] == 439
    assert counts["duplicates_by_uid"] == truth["dup_uid"] and counts["duplicates_by_sha256"] == truth["dup_sha"]
    assert counts["unique_samples"] == 430

    # Expected: in uid order (ties: input order), the first of each uid, then of each image.
    inputs = [x for shard in shards for x in shard]
    ordered = [s for _, _, s in sorted(((s.uid, n, s) for n, s in enumerate(inputs)), key=lambda t: t[:2])]
    unique, uids, images = [], set(), set()
    for s in ordered:  # first of each uid
        if s.uid not in uids:
            uids.add(s.uid)
            unique.append(s)
    unique = [s for s in unique if not (s.image in images or images.add(s.image))]  # then of each image
    assert len(unique) == 430
    downloaded = np.bincount([q for s in unique for q in s.query_ids], minlength=3)
    keys = uid_keys(pa.array([s.uid for s in unique]))
    keep = [any(draws(keys[i : i + 1], np.array([q]), 0)[0] < 50 / max(downloaded[q], 50) for q in s.query_ids)
            for i, s in enumerate(unique)]
    expected = [s for s, k in zip(unique, keep) if k]
    assert manifest["total_samples"] == len(expected) == counts["final_samples"]
    kept_per_query = np.bincount([q for s in expected for q in s.query_ids], minlength=3)
    assert kept_per_query[1] == 20 and kept_per_query[2] == 10  # under the cap: all kept
    assert abs(kept_per_query[0] - (3 + 400 * 50 / 403)) < 4 * np.sqrt(50)  # head: about the cap

    sizes = json.loads((out / "sizes.json").read_text())
    assert list(sizes) == [f"{i:06d}.tar" for i in range(len(sizes))]
    assert all(n == 64 for n in list(sizes.values())[:-1]) and sum(sizes.values()) == len(expected)
    written = []
    for shard in manifest["shards"]:
        data = (out / shard["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        with tarfile.open(out / shard["name"]) as tar:
            names = tar.getnames()
            assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in tar.getmembers())
            for name in names[2::3]:
                assert name.endswith(".txt")
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    written.append(json.load(tar.extractfile(member)))
    assert [w["uid"] for w in written] == [s.uid for s in expected]  # uid order
    assert set(written[0]) == {"uid", "url", "query_ids", "width", "height", "original_width",
                               "original_height", "sha256"}
    card = json.loads((out / "datacard.json").read_text())
    assert card["head"]["queries"] == 1 and card["tail"]["queries"] == 2
    assert card["per_query"] == {"query_id": [0, 1, 2], "downloaded": downloaded.tolist(),
                                 "kept": kept_per_query.tolist()}
    assert (out / "datacard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_byte_identical_and_idempotent(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    args = ["--crawl", crawl, "--cap", "50", "--samples-per-shard", "40"]
    assert wit("shard", *args, "--out", tmp_path / "a", "--workers", "1").returncode == 0
    assert wit("shard", *args, "--out", tmp_path / "b", "--workers", "2").returncode == 0
    tars = lambda d: {k: v for k, v in files(d).items() if k.endswith(".tar") or k == "sizes.json"}  # noqa: E731
    assert tars(tmp_path / "a") == tars(tmp_path / "b")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    again = wit("shard", *args, "--out", tmp_path / "a")
    assert again.returncode == 0 and "nothing to do" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == before
    fewer = wit("shard", *args[:-1], "400", "--out", tmp_path / "a")  # other settings: refused
    assert_one_line_error(fewer, "shard", tmp_path / "a", "other settings or inputs (samples_per_shard)",
                          "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()} == before
    fewer = wit("shard", *args[:-1], "400", "--out", tmp_path / "a", "--overwrite")  # one shard, not several
    assert fewer.returncode == 0 and sorted(p.name for p in (tmp_path / "a").glob("*.tar")) == ["000000.tar"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "crawl"]


@pytest.mark.slow
def test_kill_and_resume(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    args = ["shard", "--crawl", crawl, "--cap", "1000", "--samples-per-shard", "1", "--workers", "1"]
    assert wit(*args, "--out", tmp_path / "straight").returncode == 0
    out = tmp_path / "killed"
    proc = wit(*args, "--out", out, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    units = tmp_path / ".killed.partial" / ".wit" / "units"
    while time.time() < deadline and len(list(units.glob("*.json"))) < 50:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    resumed = wit(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "written before" in resumed.stderr
    strip = lambda d: {k: v for k, v in files(d).items() if k != "manifest.json"}  # noqa: E731
    assert strip(out) == strip(tmp_path / "straight")
    assert not list(out.rglob(".*.tmp")) and not (out / ".wit" / "scratch").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crawl", "killed", "straight"]


def test_corrupt_tar_and_unsafe_members(tmp_path):
    shards, _ = pool()

    def unsafe(tar: tarfile.TarFile) -> None:
        for key, image in (("html", b"<html>not an image</html>"), ("bomb", bomb_png())):
            add(tar, f"{key}.jpg" if key == "html" else f"{key}.png", image)
            add(tar, f"{key}.txt", b"dog")
            add(tar, f"{key}.json", json.dumps({"uid": url_uid(key), "query_ids": [0]}).encode())
        good = url_uid("good")
        for key, meta in (("textq", {"uid": good, "query_ids": ["x"]}), ("oneq", {"uid": good, "query_ids": 0}),
                          ("farq", {"uid": good, "query_ids": [3]}), ("negq", {"uid": good, "query_ids": [-1]}),
                          ("hugeq", {"uid": good, "query_ids": [2**40]}), ("list", ["uid"]), ("nojson", "{uid"),
                          ("intuid", {"uid": 123}), ("short", {"uid": good[:31]}), ("upper", {"uid": good.upper()}),
                          ("slash", {"uid": good[:30] + "/a"}), ("dots", {"uid": "../" + good[3:]}),
                          ("nul", {"uid": good[:31] + "\0"}), ("dotdot", {"uid": ".."}),
                          ("huge", {"uid": good, "query_ids": [0] * 400_000})):   # 1.2 MB: never parsed
            add(tar, f"{key}.jpg", noise_jpeg(7))
            add(tar, f"{key}.txt", b"dog")
            add(tar, f"{key}.json", meta.encode() if isinstance(meta, str) else json.dumps(meta).encode())
        hdr = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10000 +X 10000\n" + bytes(1000)
        add(tar, "hdr.jpg", hdr)
        add(tar, "hdr.txt", b"dog")
        add(tar, "hdr.json", json.dumps({"uid": url_uid("hdr"), "query_ids": [0]}).encode())
        add(tar, "00000" + "0000.txt", b"a second run of the first sample's key")
        add(tar, "../evil.jpg", b"x")
        add(tar, "/etc/evil.txt", b"x")
        add(tar, "link.jpg", b"", tarfile.SYMTYPE, "/etc/passwd")
        add(tar, "dev.jpg", b"", tarfile.CHRTYPE)

    crawl = write_download(tmp_path / "crawl", shards[:2], extra=unsafe)
    broken = crawl / "download" / "00001.tar"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 4])  # inside its ordinary samples
    out = tmp_path / "shards"
    result = wit("shard", "--crawl", crawl, "--out", out, "--cap", "1000")
    assert result.returncode == 0, result.stderr
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["refused_members"] == {"path_traversal": 1, "absolute_path": 1, "link": 1, "not_a_file": 1,
                                         "duplicate_key": 1}
    assert counts["too_many_pixels"] == 1  # from the intact tar
    assert counts["unsupported_format"] == 2   # the HTML page and the Radiance HDR, neither decoded
    assert counts["malformed_json"] == 8 and counts["malformed_uid"] == 7
    [damaged] = counts["unreadable_tars"]
    assert damaged["tar"] == "00001.tar" and 0 < damaged["samples_recovered"] < 215
    assert 200 < counts["final_samples"] < 200 + 215
    assert "evil" not in str(files(out).keys())


def test_loads_in_webdataset_datasets_and_open_clip(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    out = tmp_path / "shards"
    assert wit("shard", "--crawl", crawl, "--out", out, "--cap", "50", "--samples-per-shard", "64").returncode == 0
    total = json.loads((out / "manifest.json").read_text())["total_samples"]
    tars = sorted(str(p) for p in out.glob("*.tar"))

    import webdataset as wds

    samples = list(wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("jpg", "txt", "json"))
    assert len(samples) == total and samples[0][0].size == (32, 24) and samples[0][2]["uid"]

    from datasets import load_dataset

    dataset = load_dataset("webdataset", data_files={"train": tars}, split="train",
                           cache_dir=str(tmp_path / "hf"))
    assert dataset.num_rows == total and {"jpg", "txt", "json"} <= set(dataset.column_names)

    from open_clip_train.data import get_dataset_size

    pattern = str(out / f"{{000000..{len(tars) - 1:06d}}}.tar")
    assert get_dataset_size(pattern) == (total, len(tars))


def test_inspect_and_verify(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    out = tmp_path / "shards"
    assert wit("shard", "--crawl", crawl, "--out", out, "--cap", "50").returncode == 0
    result = wit("inspect", out, "--verify", "--show", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("shards: 1, samples: ")
    assert "head (> cap): 1 queries" in lines[2]
    assert len([l for l in lines if "queries [" in l]) == 2 and lines[-1].startswith("verified: 1 shards")
    tar = out / "000000.tar"
    data = bytearray(tar.read_bytes())
    data[2000] ^= 0xFF
    tar.write_bytes(bytes(data))
    broken = wit("inspect", out, "--verify")
    assert broken.returncode == 1 and "sha256 differs from the manifest" in broken.stdout


def test_errors(tmp_path):
    empty = tmp_path / "crawl"
    empty.mkdir()
    result = wit("shard", "--crawl", empty, "--out", tmp_path / "out")
    assert result.returncode == 1 and "no downloaded shards" in result.stderr and not (tmp_path / "out").exists()
    result = wit("inspect", tmp_path)
    assert result.returncode == 1 and "manifest.json: missing" in result.stderr
    result = wit("shard", "--crawl", empty, "--dedup", "md5")
    assert result.returncode == 1 and "--dedup: unknown md5" in result.stderr
    result = wit("shard", "--crawl", empty, "--dedup", "sha256")   # two samples of one uid: one key twice
    assert result.returncode == 1 and "--dedup: must include uid" in result.stderr


def shard_outputs(directory: Path) -> dict[str, bytes]:
    """What a SHARDS dir holds, without the run's timing."""
    return {k: v for k, v in files(directory).items() if k != "manifest.json"} if directory.exists() else {}


@pytest.mark.slow
def test_kill_9_during_overwrite_leaves_the_old_or_the_new_output(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    common = ["shard", "--crawl", crawl, "--samples-per-shard", "2", "--workers", "1"]
    kill_during_overwrite([*common, "--cap", "20000"], [*common, "--cap", "5"], tmp_path / "shards",
                          shard_outputs)


def test_out_inside_the_crawl_or_holding_other_files_is_refused(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    before = files(crawl / "download")
    for out in (crawl / "download", crawl, crawl / "download" / "shards", tmp_path):
        assert_one_line_error(wit("shard", "--crawl", crawl, "--out", out), "shard", out,
                              "must not be, contain or lie inside the input")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "holiday.tar").write_bytes(b"the user's own tar")
    assert_one_line_error(wit("shard", "--crawl", crawl, "--out", user, "--overwrite"), "shard", user,
                          "not an output of this toolkit")
    assert files(crawl / "download") == before and files(user) == {"holiday.tar": b"the user's own tar"}


@pytest.mark.slow
def test_full_disk_is_one_line_and_keeps_the_earlier_output(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    with small_filesystem(tmp_path / "disk", "400k") as disk:
        out = disk / "shards"
        assert wit("shard", "--crawl", crawl, "--out", out, "--cap", "5").returncode == 0
        before = shard_outputs(out)
        result = wit("shard", "--crawl", crawl, "--out", out, "--cap", "20000", "--overwrite")
        assert_one_line_error(result, "shard", disk, "No space left on device", "run the same command again")
        assert "Traceback" not in result.stderr and shard_outputs(out) == before
        fresh = wit("shard", "--crawl", crawl, "--out", disk / "fresh", "--cap", "20000")
        assert_one_line_error(fresh, "shard", "No space left on device")
        assert not (disk / "fresh").exists()
