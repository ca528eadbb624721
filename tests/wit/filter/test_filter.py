"""`wit filter` on SHARDS dirs built by `wit shard` from planted crawls: near-duplicates,
decontamination, text rules, CLIP score, reruns and bad input."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageEnhance

from tests.support.crawls import Sample, write_download
from tests.support.images import encode, photo
from tests.support.witcli import assert_one_line_error, run_wit
from wit.filter.neardup import HashIndex, first_kept
from wit.formats.embeddings import SUMMARY, embedding_file, manifest_sha256, read_embeddings, schema
from wit.formats.shards import read_manifest
from wit.formats.tars import read_member, scan_tar, write_tar
from wit.formats.uids import url_uid
from wit.shards.build import ShardConfig, run as shard

UNRELATED, GROUPS = 150, 30
KINDS = ("resized", "recompressed", "cropped", "jitter")


def variant(image: bytes, kind: str, seed: int) -> bytes:
    """A near copy: resized to 40-70%, recompressed at quality 20-40, cropped by 1-3% a side,
    or colour-jittered (brightness, contrast, saturation)."""
    rng = random.Random(seed)
    im = Image.open(io.BytesIO(image)).convert("RGB")
    w, h = im.size
    if kind == "resized":
        s = rng.uniform(0.4, 0.7)
        return encode(im.resize((int(w * s), int(h * s)), Image.BICUBIC))
    if kind == "recompressed":
        return encode(im, quality=rng.randint(20, 40))
    if kind == "cropped":
        c = rng.uniform(0.01, 0.03)
        return encode(im.crop((int(w * c), int(h * c), int(w * (1 - c)), int(h * (1 - c)))))
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.8, 1.2))
    return encode(ImageEnhance.Color(im).enhance(rng.uniform(0.7, 1.3)))


def build(root: Path, samples: list[Sample], per_shard: int = 64) -> Path:
    """A SHARDS dir made by `wit shard` from an img2dataset-style crawl of the samples."""
    crawl = write_download(root / "crawl", [samples[i:i + 100] for i in range(0, len(samples), 100)], queries=100)
    out = root / "shards"
    manifest = shard(ShardConfig(crawl=str(crawl), out=str(out), samples_per_shard=per_shard, workers=2, cap=1000))
    assert manifest["total_samples"] == len(samples)
    return out


def filter_(*args):
    result = run_wit("filter", *map(str, args), "--workers", "2")
    assert result.returncode == 0, result.stderr
    return result


def removed(out: Path) -> list[dict]:
    return pq.read_table(out / "removed.parquet").to_pylist()


def output_uids(out: Path) -> list[str]:
    uids = []
    for entry in read_manifest(str(out))["shards"]:
        uids += [key for key, _ in scan_tar(str(out / entry["name"])).samples]
    return uids


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Unrelated photos, GROUPS originals each with one copy of every kind, two evaluation
    sets (an ImageFolder and a WebDataset dir), and SHARDS dirs without and with copies of
    evaluation images planted (under other urls and texts)."""
    root = tmp_path_factory.mktemp("filter")
    base = [Sample(f"http://u.example/{i}.jpg", f"an unrelated photo {i}", [i % 5], photo(i))
            for i in range(UNRELATED)]
    groups = []
    for g in range(GROUPS):
        original = photo(10_000 + g)
        members = [Sample(f"http://o.example/{g}.jpg", f"the original photo {g}", [g % 5], original)]
        members += [Sample(f"http://c.example/{kind}/{g}.jpg", f"a copy {kind} {g}", [5], variant(original, kind, g))
                    for kind in KINDS]
        groups.append(members)
        base += members
    imagefolder = root / "folder_eval"
    folder_images = []
    for label in range(2):
        (imagefolder / f"class{label}").mkdir(parents=True)
        for i in range(5):
            image = photo(20_000 + 10 * label + i)
            (imagefolder / f"class{label}" / f"{i}.jpg").write_bytes(image)
            folder_images.append(image)
    wds = root / "wds_eval"
    (wds / "test").mkdir(parents=True)
    wds_images = [photo(30_000 + i) for i in range(8)]
    with open(wds / "test" / "0.tar", "wb") as f:
        write_tar(f, [(f"s{i:04d}", [("jpg", im), ("cls", str(i % 2).encode())]) for i, im in enumerate(wds_images)])
    planted = [Sample(f"http://leak.example/f{i}.jpg", f"a leaked photo {i}", [6], variant(folder_images[i], kind, i))
               for i, kind in zip((0, 3, 5, 9), KINDS)]
    planted += [Sample(f"http://leak.example/w{i}.jpg", f"another leak {i}", [6], variant(wds_images[i], kind, i))
                for i, kind in zip((1, 2, 7), KINDS)]
    return {"clean": build(root / "clean", base), "contaminated": build(root / "contaminated", base + planted),
            "groups": groups, "planted": planted, "folder": imagefolder, "wds": wds, "root": root}


# ---- near-duplicates -----------------------------------------------------------------------


@pytest.mark.slow
def test_near_dup_finds_planted_copies_and_nothing_else(world, tmp_path):
    out = tmp_path / "out"
    result = filter_("--shards", world["clean"], "--out", out, "--near-dup")
    rows = removed(out)
    group_of = {s.uid: g for g, members in enumerate(world["groups"]) for s in members}
    assert {r["filter"] for r in rows} == {"near_dup"} and {r["reason"] for r in rows} == {"phash"}
    true_positives = [r for r in rows if r["uid"] in group_of and group_of[r["match"]] == group_of[r["uid"]]]
    precision = len(true_positives) / len(rows)
    recall = len(true_positives) / (GROUPS * len(KINDS))
    assert precision == 1.0 and recall >= 0.95, (precision, recall)
    assert all(r["value"] <= 8 for r in rows)
    for kind_index, kind in enumerate(KINDS):   # each transformation on its own
        copies = {members[1 + kind_index].uid: members for members in world["groups"]}
        found = sum(1 for r in rows if r["uid"] in copies or any(  # the copy removed, or the original for it
            r["uid"] == members[0].uid and r["match"] == members[1 + kind_index].uid for members in copies.values()))
        assert found / GROUPS >= 0.9, (kind, found)
    kept = output_uids(out)
    assert set(kept) == set(read_uids(world["clean"])) - {r["uid"] for r in rows}
    assert all(any(s.uid in kept for s in members) for members in world["groups"])   # one of each group stays
    # a group keeps its first member in uid order
    for members in world["groups"]:
        assert min(s.uid for s in members) in kept
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["manifest_sha256"] == manifest_sha256(str(world["clean"]))
    assert manifest["near_dup"] is True and manifest["hamming"] == 8
    card = json.loads((out / "datacard.json").read_text())
    assert card["removed"]["near_dup"] == len(rows) and card["totals"]["kept_samples"] == len(kept)
    assert dict(zip(card["per_query"]["query_id"], card["per_query"]["after"]))[5] == GROUPS * len(KINDS) - len(rows) \
        + sum(1 for r in rows if r["uid"] in {m[0].uid for m in world["groups"]})
    assert f"{len(kept):,} of" in result.stderr


def read_uids(shards: Path) -> list[str]:
    return [key for entry in read_manifest(str(shards))["shards"] for key, _ in scan_tar(str(shards / entry["name"])).samples]


@pytest.mark.slow
def test_output_is_a_byte_for_byte_subset_and_reruns_are_identical(world, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        filter_("--shards", world["clean"], "--out", out, "--near-dup", "--samples-per-shard", "50")
    names = sorted(p.name for p in first.iterdir() if p.name != ".wit")
    assert names == sorted(p.name for p in second.iterdir() if p.name != ".wit")
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    source = {}
    for entry in read_manifest(str(world["clean"]))["shards"]:
        path = world["clean"] / entry["name"]
        with open(path, "rb") as f:
            for key, members in scan_tar(str(path)).samples:
                source[key] = {ext: read_member(f, m) for ext, m in members.items()}
    manifest = read_manifest(str(first))
    assert all(s["samples"] == 50 for s in manifest["shards"][:-1])
    for entry in manifest["shards"]:
        with open(first / entry["name"], "rb") as f:
            for key, members in scan_tar(str(first / entry["name"])).samples:
                assert {ext: read_member(f, m) for ext, m in members.items()} == source[key]
    again = filter_("--shards", world["clean"], "--out", first, "--near-dup", "--samples-per-shard", "50")
    assert "nothing to do" in again.stderr or again.returncode == 0
    assert json.loads((first / "sizes.json").read_text()) == {s["name"]: s["samples"] for s in manifest["shards"]}


def test_hash_index_is_exact():
    """Multi-index hashing finds exactly what a brute-force comparison finds."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (5000, 8), dtype=np.uint8)
    near = codes[:500].copy()
    bits = np.unpackbits(near, axis=1)
    for row, flips in zip(bits, rng.integers(0, 12, 500)):
        row[rng.choice(64, flips, replace=False)] ^= 1
    codes = np.concatenate([codes, np.packbits(bits, axis=1)])
    rows, labels, distances = HashIndex(codes, 8).search(codes)
    unpacked = np.unpackbits(codes, axis=1).astype(np.int16)
    brute = set()
    for start in range(0, len(codes), 500):
        d = (unpacked[start:start + 500, None, :] != unpacked[None, :, :]).sum(-1)
        brute |= {(start + int(i), int(j)) for i, j in zip(*np.nonzero(d <= 8))}
    assert set(zip(rows.tolist(), labels.tolist())) == brute
    by, _ = first_kept(codes, 8)
    assert (by[500:] >= 0).sum() >= 500 * 0.6 and (by[:500] == -1).all()


# ---- decontamination -----------------------------------------------------------------------


def test_decontamination_removes_planted_evaluation_images(world, tmp_path):
    out = tmp_path / "out"
    filter_("--shards", world["contaminated"], "--out", out, "--decontaminate", world["folder"], world["wds"])
    report = json.loads((out / "contamination.json").read_text())
    folder_uids = sorted(s.uid for s in world["planted"][:4])
    wds_uids = sorted(s.uid for s in world["planted"][4:])
    assert report["folder_eval"]["images"] == 10 and report["folder_eval"]["matched_images"] == 4
    assert report["folder_eval"]["removed_uids"] == folder_uids
    assert report["wds_eval"]["images"] == 8 and report["wds_eval"]["matched_images"] == 3
    assert report["wds_eval"]["removed_uids"] == wds_uids
    rows = removed(out)
    assert sorted(r["uid"] for r in rows) == sorted(folder_uids + wds_uids)
    matches = {r["uid"]: r["match"] for r in rows}
    assert matches[url_uid("http://leak.example/f3.jpg")] == "folder_eval:3"
    assert matches[url_uid("http://leak.example/w7.jpg")] == "wds_eval:7"
    assert not set(folder_uids + wds_uids) & set(output_uids(out))


def test_decontamination_without_planted_images_removes_nothing(world, tmp_path):
    out = tmp_path / "out"
    filter_("--shards", world["clean"], "--out", out, "--decontaminate", world["folder"], world["wds"])
    report = json.loads((out / "contamination.json").read_text())
    assert {k: (v["matched_images"], v["removed_uids"]) for k, v in report.items()} == \
        {"folder_eval": (0, []), "wds_eval": (0, [])}
    assert removed(out) == [] and len(output_uids(out)) == len(read_uids(world["clean"]))


# ---- text rules and CLIP score -------------------------------------------------------------


TEXTS = [
    ("http://t.example/a.jpg", "one", "min_words"),
    ("http://t.example/b.jpg", "two words", "min_words"),
    ("http://t.example/c.jpg", "a caption " * 10, "max_length"),
    ("http://t.example/d.jpg", "IMG_0001.JPG", "file_name"),
    ("http://t.example/dir/holiday_beach_2019.png", "holiday_beach_2019", "file_name"),
    ("http://t.example/e.jpg", "see https://example.com/some/page.html for more", None),
    ("http://t.example/f.jpg", "https://example.com/some/page", "url"),
    ("http://t.example/g.jpg", "www.example.org/a/b", "url"),
    ("http://t.example/h.jpg", "a perfectly ordinary caption here", None),
    ("http://t.example/i.jpg", "another fine caption of words", None),
]


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    return build(root, [Sample(url, text, [i], photo(40_000 + i)) for i, (url, text, _) in enumerate(TEXTS)], 4)


def test_text_rules_are_counted_per_rule(texts, tmp_path):
    out = tmp_path / "out"
    filter_("--shards", texts, "--out", out, "--min-words", "3", "--max-length", "60", "--drop-file-names",
            "--drop-urls")
    reasons = {r["uid"]: r["reason"] for r in removed(out)}
    assert reasons == {url_uid(url): reason for url, _, reason in TEXTS if reason}
    card = json.loads((out / "datacard.json").read_text())
    assert card["removed_by_reason"]["text"] == {"file_name": 2, "max_length": 1, "min_words": 2, "url": 2}
    assert sorted(output_uids(out)) == sorted(url_uid(url) for url, _, reason in TEXTS if reason is None)
    assert card["queries_with_samples"] == {"before": 10, "after": 3}


def write_embed(embed: Path, shards: Path, cosines: dict[str, float | None]) -> None:
    """An EMBED dir as `wit embed` writes it, with the image and text vectors of each uid at
    the given cosine (None: the image could not be embedded)."""
    embed.mkdir()
    manifest = read_manifest(str(shards))
    listed = []
    for entry in manifest["shards"]:
        uids = [key for key, _ in scan_tar(str(shards / entry["name"])).samples]
        text = [[1.0, 0.0, 0.0, 0.0]] * len(uids)
        image = [None if cosines[u] is None else [cosines[u], float(np.sqrt(1 - cosines[u] ** 2)), 0.0, 0.0]
                 for u in uids]
        pq.write_table(pa.table({"uid": uids, "image": image, "text": text}, schema=schema(4)),
                       embed / embedding_file(entry["name"]))
        listed.append({"name": entry["name"], "samples": len(uids)})
    (embed / SUMMARY).write_text(json.dumps({"tool": "wit embed", "model": "test", "dim": 4, "shards_dir": str(shards),
                                             "manifest_sha256": manifest_sha256(str(shards)), "shards": listed}))


def test_clip_score_min_score_and_keep_fraction(texts, tmp_path):
    uids = sorted(url_uid(url) for url, _, _ in TEXTS)
    cosines = {u: round(0.1 * i, 2) for i, u in enumerate(uids)}
    cosines[uids[0]] = None
    write_embed(tmp_path / "embed", texts, cosines)
    filter_("--shards", texts, "--out", tmp_path / "min", "--clip-score", "--embeddings", tmp_path / "embed",
            "--min-score", "0.45")
    rows = {r["uid"]: r for r in removed(tmp_path / "min")}
    assert {u: r["reason"] for u, r in rows.items()} == {uids[0]: "no_image_embedding",
                                                         **{u: "min_score" for u in uids[1:5]}}
    assert rows[uids[3]]["value"] == pytest.approx(0.3)
    filter_("--shards", texts, "--out", tmp_path / "top", "--clip-score", "--embeddings", tmp_path / "embed",
            "--keep-fraction", "0.34")
    assert sorted(output_uids(tmp_path / "top")) == uids[-3:]   # 0.34 of the 9 with a score
    card = json.loads((tmp_path / "top" / "datacard.json").read_text())
    assert card["removed_by_reason"]["clip_score"] == {"keep_fraction": 6, "no_image_embedding": 1}


# ---- bad input -----------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors(texts, world, tmp_path):
    out = tmp_path / "out"
    cases = [
        (["--shards", tmp_path, "--out", out, "--near-dup"], ["manifest.json"]),
        (["--shards", texts, "--out", out], ["no filter chosen"]),
        (["--shards", texts, "--out", out, "--clip-score", "--min-score", "0.2"], ["--embeddings", "--checkpoint"]),
        (["--shards", texts, "--out", out, "--near-dup", "--checkpoint", tmp_path / "x.pt"], ["--checkpoint", "only"]),
        (["--shards", texts, "--out", out, "--min-score", "0.2", "--near-dup"], ["--min-score", "--clip-score"]),
        (["--shards", texts, "--out", out, "--decontaminate", tmp_path / "nothing"], ["nothing"]),
        (["--shards", texts, "--out", out, "--clip-score", "--embeddings", tmp_path, "--keep-fraction", "0.5"],
         ["embed.json"]),
    ]
    for args, fragments in cases:
        assert_one_line_error(run_wit("filter", *map(str, args)), "filter", *fragments)
        assert not out.exists()
    write_embed(tmp_path / "embed", world["clean"], {u: 0.5 for u in read_uids(world["clean"])})
    assert_one_line_error(run_wit("filter", "--shards", texts, "--out", out, "--clip-score", "--embeddings",
                                  tmp_path / "embed", "--min-score", "0.1"), "filter", "another version")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in texts.iterdir():
        if f.is_file():
            (damaged / f.name).write_bytes(f.read_bytes())
    tar = damaged / read_manifest(str(damaged))["shards"][1]["name"]
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF
    tar.write_bytes(bytes(data))
    assert_one_line_error(run_wit("filter", "--shards", damaged, "--out", out, "--min-words", "2"), "filter",
                          str(tar), "manifest.json")
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


# ---- the model-based paths (--checkpoint) ----------------------------------------------------


@pytest.mark.slow
def test_clip_score_computed_on_the_fly_equals_clip_score_from_wit_embed(texts, tmp_path):
    from tests.support.checkpoints import write_checkpoint

    checkpoint = write_checkpoint(tmp_path / "model.pt")
    embedded = run_wit("embed", "--checkpoint", checkpoint, "--shards", texts, "--out", tmp_path / "embed")
    assert embedded.returncode == 0, embedded.stderr
    filter_("--shards", texts, "--out", tmp_path / "given", "--clip-score", "--embeddings", tmp_path / "embed",
            "--keep-fraction", "0.5")
    filter_("--shards", texts, "--out", tmp_path / "fly", "--clip-score", "--checkpoint", checkpoint,
            "--keep-fraction", "0.5")
    assert removed(tmp_path / "fly") == removed(tmp_path / "given") and len(removed(tmp_path / "fly")) == 5
    assert output_uids(tmp_path / "fly") == output_uids(tmp_path / "given")
    assert not (tmp_path / "fly" / ".wit" / "scratch").exists()   # the embeddings were scratch


@pytest.mark.slow
def test_decontamination_by_embedding_cosine_matches_brute_force(world, tmp_path):
    """With --checkpoint, evaluation images are matched by embedding cosine too: exactly the
    (evaluation image, data image) pairs a brute-force cosine finds at the threshold, each
    removed once and counted per detector. (The tiny test model maps all photos close
    together, so the threshold here sits just above its unrelated pairs; a real CLIP model
    separates them, see the README.)"""
    from tests.support.checkpoints import write_checkpoint
    from train.model.clip import load_model
    from train.model.encode import image_embeddings
    from wit.formats.evalsets import open_evalset

    checkpoint = write_checkpoint(tmp_path / "model.pt")
    embedded = run_wit("embed", "--checkpoint", checkpoint, "--shards", world["contaminated"],
                       "--out", tmp_path / "embed")
    assert embedded.returncode == 0, embedded.stderr
    table = read_embeddings(str(tmp_path / "embed"))
    data = np.array(table["image"].to_pylist(), np.float32)
    evals = np.array(image_embeddings(load_model(str(checkpoint)),
                                      [s.image for s in open_evalset(world["wds"]).samples()]))
    cosines = evals @ data.T
    threshold = float(np.quantile(cosines, 0.995))
    expected = {table["uid"][int(j)].as_py() for j in np.flatnonzero((cosines >= threshold).any(axis=0))}
    assert 0 < len(expected) < 0.05 * len(data)

    out = tmp_path / "out"
    filter_("--shards", world["contaminated"], "--out", out, "--decontaminate", world["wds"],
            "--checkpoint", checkpoint, "--embeddings", tmp_path / "embed", "--eval-cosine", str(threshold))
    report = json.loads((out / "contamination.json").read_text())["wds_eval"]
    assert report["matched_images_by"] == {"phash": 3, "embedding": int((cosines >= threshold).any(axis=1).sum())}
    planted = {s.uid for s in world["planted"][4:]}
    assert set(report["removed_uids"]) == expected | planted
    reasons = {r["uid"]: r["reason"] for r in removed(out)}
    assert {reasons[u] for u in planted} == {"phash"}
    assert {reasons[u] for u in expected - planted} <= {"embedding"}


@pytest.mark.slow
def test_a_full_disk_keeps_the_hashed_shards_and_the_rerun_does_not_hash_again(world, tmp_path):
    import subprocess

    from tests.support.faults import small_filesystem

    reference = tmp_path / "reference"
    filter_("--shards", world["clean"], "--out", reference, "--near-dup")
    inputs = len(read_manifest(str(world["clean"]))["shards"])
    with small_filesystem(tmp_path / "disk", "1m") as disk:
        out = disk / "out"
        failed = run_wit("filter", "--shards", world["clean"], "--out", out, "--near-dup", "--workers", "2")
        assert_one_line_error(failed, "filter", "No space left on device", "run the same command again")
        units = disk / ".out.partial" / ".wit" / "units"
        hashed = {u.name: u.stat().st_mtime_ns for u in units.glob("read-*.json")}
        assert len(hashed) == inputs
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        filter_("--shards", world["clean"], "--out", out, "--near-dup")
        assert {u.name: u.stat().st_mtime_ns for u in (out / ".wit" / "units").glob("read-*.json")} == hashed
        assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == \
            {p.name: p.read_bytes() for p in reference.glob("*.tar")}
        assert removed(out) == removed(reference)
