"""The demo world: scenes, captions, rendering, and the SHARDS dir and ImageFolder it writes."""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import re
import tarfile
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from torchvision.datasets import ImageFolder

from wit.demo.phrases import NUMBERS, POSITION_PHRASES
from wit.demo.world import (COLOURS, COUNTS, POSITIONS, SHAPES, Scene, class_dir, class_scene, classes, jpeg,
                            render, sample_scene, write_imagefolder, write_shards)
from wit.formats.errors import WitError

PLURALS = {shape + ("es" if shape.endswith("s") else "s"): shape for shape in SHAPES}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def foreground(array: np.ndarray, background, threshold: int = 60) -> np.ndarray:
    """Pixels that differ clearly from the background colour."""
    return np.abs(array - np.asarray(background, dtype=np.int16)).max(axis=2) > threshold


def nearest_colour(rgb) -> str:
    return min(COLOURS, key=lambda name: sum((float(a) - b) ** 2 for a, b in zip(rgb, COLOURS[name])))


def components(mask: np.ndarray) -> int:
    """Number of 8-connected regions of a boolean mask."""
    seen = np.zeros_like(mask)
    found = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        found += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return found


def read_shards(out: Path) -> dict[str, list[dict]]:
    """Every sample of every tar, per tar name, read back with webdataset."""
    return {path.name: list(wds.WebDataset(str(path), shardshuffle=False)) for path in sorted(out.glob("*.tar"))}


def tree(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


# ---- shards --------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_shards_another_seed_different_ones(tmp_path):
    first = write_shards(tmp_path / "a", 250, seed=3, samples_per_shard=100)
    write_shards(tmp_path / "b", 250, seed=3, samples_per_shard=100)
    write_shards(tmp_path / "c", 250, seed=4, samples_per_shard=100)
    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert first["shards"] == 3 and first["samples"] == 250
    assert sorted(a) == ["000000.tar", "000001.tar", "000002.tar", "manifest.json", "sizes.json"]
    assert a == b
    assert sorted(c) == sorted(a)
    assert all(a[name] != c[name] for name in a if name.endswith(".tar"))
    write_shards(tmp_path / "a", 250, seed=3, samples_per_shard=100)  # a rerun writes the same bytes
    assert tree(tmp_path / "a") == a
    write_shards(tmp_path / "a", 60, seed=3, samples_per_shard=100)  # fewer shards: the stale ones go
    assert sorted(tree(tmp_path / "a")) == ["000000.tar", "manifest.json", "sizes.json"]


def test_shards_follow_the_shards_dir_contract(tmp_path):
    out = tmp_path / "shards"
    summary = write_shards(out, 230, seed=1, samples_per_shard=100, image_size=48)
    samples = read_shards(out)
    sizes = json.loads((out / "sizes.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert sizes == {name: len(rows) for name, rows in samples.items()}
    assert sum(sizes.values()) == 230 == manifest["total_samples"] == summary["samples"]
    assert list(sizes.values())[-1] < 100 and all(n == 100 for n in list(sizes.values())[:-1])
    for shard in manifest["shards"]:
        data = (out / shard["name"]).read_bytes()
        assert shard == {"name": shard["name"], "samples": sizes[shard["name"]], "bytes": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["total_bytes"] == summary["bytes"] == sum(s["bytes"] for s in manifest["shards"])

    keys = [row["__key__"] for rows in samples.values() for row in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all(key.isdigit() and len(key) == len(keys[0]) for key in keys)
    for rows in samples.values():
        for row in rows:
            meta = json.loads(row["json"])
            assert set(meta) == {"uid", "url", "query_ids", "width", "height", "original_width",
                                 "original_height", "sha256"}
            assert meta["sha256"] == hashlib.sha256(row["jpg"]).hexdigest()
            assert meta["uid"] == row["__key__"] and "." not in meta["uid"]
            assert meta["url"].startswith("http://demo.invalid/") and meta["query_ids"] == []
            with Image.open(io.BytesIO(row["jpg"])) as image:
                assert image.format == "JPEG"
                assert image.size == (meta["width"], meta["height"]) == (48, 48)
                assert (meta["original_width"], meta["original_height"]) == image.size
            assert row["txt"].decode("utf-8").strip()
    with tarfile.open(out / "000000.tar") as tar:  # deterministic headers, members grouped by key
        members = tar.getmembers()
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}
        assert [m.name.split(".")[1] for m in members[:3]] == ["jpg", "json", "txt"]
    assert not list(out.glob(".*.tmp"))


def test_held_out_classes_never_appear_in_the_shards(tmp_path):
    write_shards(tmp_path, 400, seed=0, samples_per_shard=400, held_out={"red circle", "star"})
    captions = [set(re.findall(r"[a-z]+", row["txt"].decode())) for rows in read_shards(tmp_path).values()
                for row in rows]
    assert not [c for c in captions if "red" in c and c & {"circle", "circles"}]
    assert not [c for c in captions if c & {"star", "stars"}]
    assert any("red" in c for c in captions) and any(c & {"circle", "circles"} for c in captions)
    with pytest.raises(WitError, match="unknown class 'pink circle'"):
        write_shards(tmp_path / "bad", 10, seed=0, samples_per_shard=10, held_out={"pink circle"})


def test_shard_subsets_of_shapes_and_colours(tmp_path):
    write_shards(tmp_path, 200, seed=0, samples_per_shard=200, shapes=["circle", "square"], colours=["red", "blue"])
    words = set(re.findall(r"[a-z]+", " ".join(row["txt"].decode() for row in read_shards(tmp_path)["000000.tar"])))
    assert words & set(COLOURS) == {"red", "blue"}
    assert {PLURALS.get(w, w) for w in words} & set(SHAPES) == {"circle", "square"}


# ---- scenes and captions -------------------------------------------------------------


def test_scenes_are_deterministic_for_random_numpy_and_int_seeds():
    assert sample_scene(random.Random(5)) == sample_scene(random.Random(5)) == sample_scene(5)
    assert sample_scene(np.random.default_rng(5)) == sample_scene(np.random.default_rng(5))
    rng = random.Random(6)
    scenes = [sample_scene(rng) for _ in range(20)]
    assert len({s.objects for s in scenes}) == 20
    assert np.array_equal(pixels(render(scenes[0], 64)), pixels(render(sample_scene(random.Random(6)), 64)))
    assert not np.array_equal(pixels(render(scenes[0], 64)), pixels(render(scenes[1], 64)))


def test_captions_describe_their_scenes_in_several_phrasings():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(3000)]
    templates = set()
    for scene in scenes:
        words = re.findall(r"[a-z]+", scene.caption)
        assert {w for w in words if w in COLOURS} == {scene.colour}, scene
        assert {PLURALS.get(w, w) for w in words} & set(SHAPES) == {scene.shape}, scene
        numbers = {n for n, word in NUMBERS.items() if word in words}
        assert numbers == {scene.count} if scene.count > 1 else numbers <= {1}, scene
        plural = any(w in PLURALS for w in words)
        assert plural == (scene.count > 1), scene
        said = {p for p, phrases in POSITION_PHRASES.items() if any(ph in scene.caption for ph in phrases)}
        assert said <= {scene.position}, scene
        template = scene.caption
        for phrase in POSITION_PHRASES.get(scene.position, ()):
            template = template.replace(phrase, "<where>")
        template = re.sub(rf"\b({'|'.join([*COLOURS, *SHAPES, *PLURALS, *NUMBERS.values()])})\b", "<w>", template)
        templates.add(template.rstrip("."))
    assert len(templates) >= 20, templates
    assert {s.colour for s in scenes} == set(COLOURS) and {s.shape for s in scenes} == set(SHAPES)
    assert {s.count for s in scenes} == set(COUNTS) and {s.position for s in scenes} == {*POSITIONS, None}
    placed = [s for s in scenes if s.position]
    mentioned = [s for s in placed if any(ph in s.caption for ph in POSITION_PHRASES[s.position])]
    assert 0.5 < len(mentioned) / len(placed) < 1


def test_sample_scene_respects_its_choices_and_rejects_unknown_values():
    rng = random.Random(1)
    scenes = [sample_scene(rng, shapes=["ring"], colours=["green", "black"], counts=[3], exclude=["black ring"])
              for _ in range(50)]
    assert {(s.name, s.count, len(s.objects)) for s in scenes} == {("green ring", 3, 3)}
    with pytest.raises(WitError, match="unknown shape hexagon"):
        sample_scene(rng, shapes=["hexagon"])
    with pytest.raises(WitError, match="excluded"):
        sample_scene(rng, shapes=["ring"], exclude=["ring"])
    with pytest.raises(WitError, match="unknown class 'pink circle'.*red, orange"):
        class_scene("pink circle", rng)


# ---- rendering -----------------------------------------------------------------------


@pytest.mark.parametrize("colour", COLOURS)
def test_objects_have_their_named_colour_after_jpeg(colour):
    rng = random.Random(colour)
    for shape in SHAPES:
        scene = class_scene(f"{colour} {shape}", rng)
        array = pixels(Image.open(io.BytesIO(jpeg(render(scene, 64)))))
        mask = foreground(array, scene.background)
        assert mask.sum() > 20, scene
        mean = array[mask].mean(axis=0)
        assert nearest_colour(mean) == colour, (scene, mean)
        assert np.abs(array[0, 0] - scene.background).max() < 12  # the corner is background


@pytest.mark.parametrize("position", POSITIONS)
def test_objects_lie_where_the_position_says(position):
    rng = random.Random(position)
    scenes = [s for s in (sample_scene(rng, positions=[position]) for _ in range(300)) if s.position == position]
    assert len(scenes) > 50
    for scene in scenes:
        mask = foreground(pixels(render(scene, 64)), scene.background, threshold=20)
        ys, xs = np.nonzero(mask)
        inside = {"left": xs < 32, "right": xs >= 32, "top": ys < 32, "bottom": ys >= 32,
                  "centre": (abs(xs - 31.5) < 24) & (abs(ys - 31.5) < 24)}[position]
        assert inside.all(), scene
        if position == "centre":
            assert math.hypot(xs.mean() - 31.5, ys.mean() - 31.5) < 8, scene


def test_objects_are_as_many_as_the_count_says():
    rng = random.Random(2)
    for count in COUNTS:
        for _ in range(40):
            scene = sample_scene(rng, counts=[count])
            mask = foreground(pixels(render(scene, 64)), scene.background, threshold=40)
            assert components(mask) == count, scene


def test_shapes_differ_measurably():
    def mask(shape: str) -> np.ndarray:
        scene = Scene(shape, "black", 1, "centre", f"a black {shape}", ((0.5, 0.5, 0.15, 0.0),), (0, 0, 0),
                      (255, 255, 255))
        return foreground(pixels(render(scene, 128)), scene.background, threshold=127)

    masks = {shape: mask(shape) for shape in SHAPES}
    radius = 0.15 * 128
    disc = math.pi * radius ** 2
    assert abs(masks["circle"].sum() / disc - 1) < 0.05
    assert 0.5 < masks["ring"].sum() / disc < 0.8 and not masks["ring"][64, 64] and masks["circle"][64, 64]
    for a in SHAPES:
        for b in SHAPES:
            if a < b:
                overlap = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
                assert overlap < 0.9, (a, b, overlap)
    # the diamond is taller than wide, the square as tall as wide; the triangle is widest at its base
    ys, xs = np.nonzero(masks["diamond"])
    assert np.ptp(ys) > 1.2 * np.ptp(xs)
    ys, xs = np.nonzero(masks["square"])
    assert abs(np.ptp(ys) - np.ptp(xs)) <= 1
    rows = masks["triangle"].sum(axis=1)
    top, bottom = np.nonzero(rows)[0][[0, -1]]
    assert rows[bottom - 2] > 3 * rows[top + 2]


# ---- imagefolder ---------------------------------------------------------------------


def test_imagefolder_classes_agree_with_classnames_and_images(tmp_path):
    out = write_imagefolder(tmp_path / "eval", per_class=2, seed=0)
    names = (out / "classnames.txt").read_text().splitlines()
    directories = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == classes() and len(names) == len(SHAPES) * len(COLOURS)
    assert [class_dir(name) for name in names] == directories
    dataset = ImageFolder(str(out))
    assert dataset.classes == directories
    assert all(dataset.class_to_idx[class_dir(name)] == i for i, name in enumerate(names))
    assert len(dataset) == 2 * len(names)
    for path, label in dataset.samples:
        image = pixels(Image.open(path))
        assert image.shape == (64, 64, 3)
        mask = foreground(image, image[0, 0])
        colour = names[label].split()[0]
        assert nearest_colour(image[mask].mean(axis=0)) == colour, path

    again = write_imagefolder(tmp_path / "again", per_class=2, seed=0)
    assert all(p.read_bytes() == (again / p.relative_to(out)).read_bytes() for p in out.rglob("*.jpg"))

    shard_dir = tmp_path / "shards"
    write_shards(shard_dir, 500, seed=0, samples_per_shard=250)
    shard_images = {hashlib.sha256(row["jpg"]).hexdigest() for rows in read_shards(shard_dir).values()
                    for row in rows}
    held_out = {hashlib.sha256(p.read_bytes()).hexdigest() for p in out.rglob("*.jpg")}
    assert len(held_out) == len(dataset) and not held_out & shard_images


def test_imagefolder_of_chosen_classes_and_a_foreign_directory(tmp_path):
    out = write_imagefolder(tmp_path, per_class=3, seed=1, image_size=32, class_names=["star", "circle", "blue ring"])
    assert (out / "classnames.txt").read_text().splitlines() == ["blue ring", "circle", "star"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["blue_ring", "circle", "star"]
    assert all(len(list((out / d).glob("*.jpg"))) == 3 for d in ("blue_ring", "circle", "star"))
    (tmp_path / "junk").mkdir()
    with pytest.raises(WitError, match="junk"):
        write_imagefolder(tmp_path, per_class=1, seed=1, class_names=["star"])


def test_demo_web_command_writes_a_site_and_its_wat_for_a_base_url(tmp_path):
    """`python -m wit.demo.web` (the docker-compose web service's content): every
    candidate of the WAT points at the base url and, but for the deliberately broken
    links, at an image the site holds."""
    from wit.crawl.sources import SourceStats, TableColumns, plan_partitions, read_partition
    from wit.demo import web

    web.main([str(tmp_path / "site"), "--base-url", "http://web:8000/", "--wat", str(tmp_path / "d.wat.gz"),
              "--pages", "6", "--images-per-page", "5"])
    [partition] = plan_partitions([str(tmp_path / "d.wat.gz")], True, TableColumns(), 1000)
    rows = [r for batch in read_partition(partition, TableColumns(), 1000, SourceStats()) for r in batch.to_pylist()]
    assert 20 <= len(rows) <= 30   # images with an alt text
    assert all(r["url"].startswith("http://web:8000/img/") for r in rows)
    present = [(tmp_path / "site" / r["url"].removeprefix("http://web:8000/")).exists() for r in rows]
    assert sum(present) >= len(rows) - 3 and all(r["text"] for r in rows)
