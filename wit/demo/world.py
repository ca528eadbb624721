"""A procedural image-text world: coloured shapes on a light background, with captions.

Each scene is one to four objects of one shape and one colour, grouped on the left, right,
top or bottom (or in the centre, or spread out), with jitter in size, place, rotation,
colour and background tint. Its caption says what is there in words, in one of several
phrasings ("a red circle", "two blue squares on the left", "a photo of a green star"), so
that a small CLIP has to learn the words, and can then classify held-out images zero-shot
by "<colour> <shape>" names.

Everything is a deterministic function of a seed: `write_shards` writes a SHARDS dir
(DESIGN.md) whose bytes depend only on its arguments, and `write_imagefolder` a
torchvision ImageFolder of held-out class images plus `classnames.txt`.

    python -m wit.demo.world shards OUT --samples 5000 [--seed 0] [--per-shard 1000]
    python -m wit.demo.world imagefolder OUT --per-class 20 [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from wit.demo.drawing import EXTENT, SHAPES, SUPERSAMPLE, draw_object, jpeg
from wit.demo.phrases import LANGUAGES, NUMBERS, caption
from wit.formats.atomic import atomic_path, remove_temporaries, write_json
from wit.formats.errors import WitError
from wit.formats.tars import write_tar

COLOURS = {  # nominal sRGB; far apart from each other and from the light background
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (235, 200, 25),
    "green": (40, 160, 60),
    "blue": (35, 80, 215),
    "purple": (135, 55, 185),
    "black": (25, 25, 25),
}
COUNTS = (1, 2, 3, 4)
POSITIONS = ("left", "right", "top", "bottom", "centre")
# Where the whole of an object lies, for each position (x0, y0, x1, y1 in image units);
# None: anywhere. "left" objects lie entirely in the left half, and so on.
_REGIONS = {
    "left": (0.03, 0.10, 0.50, 0.90),
    "right": (0.50, 0.10, 0.97, 0.90),
    "top": (0.10, 0.03, 0.90, 0.50),
    "bottom": (0.10, 0.50, 0.90, 0.97),
    None: (0.03, 0.03, 0.97, 0.97),
}
_ROTATES = {"square", "triangle", "star", "cross"}  # small random rotation
_SINGLE_RADIUS = (0.11, 0.15)  # object radius, in image units
_GROUP_RADIUS = (0.065, 0.085)
_GRIDS = {"left": (2, 3), "right": (2, 3), "top": (3, 2), "bottom": (3, 2), None: (3, 3)}  # columns, rows
_CENTRE = 0.06  # how far a centred object's centre may lie from the middle
_GAP = 0.02  # empty margin inside each grid cell of a group: objects never touch
_BACKGROUND = (242, 240, 234)

RandomLike = random.Random | np.random.Generator | int


@dataclass(frozen=True)
class Scene:
    """One image: `count` objects of one shape and colour, and a caption describing it.
    `objects` holds (x, y, radius, rotation in degrees) per object, x and y in [0, 1] from
    the top left; `rgb` is the jittered fill of the named colour, `background` the tint."""

    shape: str
    colour: str
    count: int
    position: str | None  # one of POSITIONS, or None: spread over the image
    caption: str
    objects: tuple[tuple[float, float, float, float], ...]
    rgb: tuple[int, int, int]
    background: tuple[int, int, int]

    @property
    def name(self) -> str:
        """The scene's class name, e.g. "red circle"."""
        return f"{self.colour} {self.shape}"


def sample_scene(rng: RandomLike, shapes: Sequence[str] = SHAPES, colours: Sequence[str] = tuple(COLOURS),
                 counts: Sequence[int] = COUNTS, positions: Sequence[str] = POSITIONS,
                 exclude: Iterable[str] = (), lang: str = "en") -> Scene:
    """A random scene, captioned in `lang` (wit.demo.phrases). `exclude` lists class names
    ("red circle", or a shape: "star") that must not occur. Several objects are grouped on a
    side (never "centre") or spread out."""
    rng = _as_random(rng)
    _check(shapes, SHAPES, "shape")
    _check(colours, COLOURS, "colour")
    _check(counts, NUMBERS, "count")
    _check(positions, POSITIONS, "position")
    excluded = set(exclude)
    pairs = [(s, c) for s in shapes for c in colours if s not in excluded and f"{c} {s}" not in excluded]
    if not pairs:
        raise WitError("sample_scene: every shape and colour combination is excluded")
    shape, colour = rng.choice(pairs)
    count = rng.choice(list(counts))
    if count == 1:
        position = rng.choice(list(positions)) if positions else None
    else:
        position = rng.choice([p for p in positions if p != "centre"] + [None])
    return _scene(rng, shape, colour, count, position, lang)


def classes(shapes: Sequence[str] = SHAPES, colours: Sequence[str] | None = tuple(COLOURS)) -> list[str]:
    """The zero-shot class names: "<colour> <shape>" for every combination (shapes only
    when `colours` is None or empty), sorted as their ImageFolder directories sort."""
    _check(shapes, SHAPES, "shape")
    _check(colours or (), COLOURS, "colour")
    names = [f"{c} {s}" for c in colours for s in shapes] if colours else list(shapes)
    return sorted(names, key=class_dir)


def class_dir(name: str) -> str:
    """The directory name of a class: "red circle" -> "red_circle"."""
    return name.replace(" ", "_")


def class_scene(name: str, rng: RandomLike, colours: Sequence[str] = tuple(COLOURS)) -> Scene:
    """A single object of class `name` ("red circle"; for a shape-only name, a colour from
    `colours`) at a random position, as a held-out evaluation image."""
    rng = _as_random(rng)
    shape, colour = _parse(name)
    if colour is None:
        _check(colours, COLOURS, "colour")
        colour = rng.choice(list(colours))
    return _scene(rng, shape, colour, 1, rng.choice(POSITIONS))


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw the scene as a `size` x `size` RGB image."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), scene.background)
    draw = ImageDraw.Draw(image)
    for x, y, radius, rotation in scene.objects:
        draw_object(draw, scene.shape, x * big, y * big, radius * big, rotation, scene.rgb)
    return image.reduce(SUPERSAMPLE)  # a box filter


def write_shards(out_dir: str | Path, samples: int, seed: int, samples_per_shard: int, image_size: int = 64,
                 held_out: set[str] | None = None, *, shapes: Sequence[str] = SHAPES,
                 colours: Sequence[str] = tuple(COLOURS), languages: Sequence[str] = ()) -> dict:
    """Write `samples` random scenes of `shapes` and `colours` as a SHARDS dir (NNNNNN.tar,
    sizes.json, manifest.json), leaving out the classes in `held_out` ("red circle", or a
    shape: "star"). Each sample's caption is KEY.txt, in English; with `languages` it is
    captioned in each of them instead, as KEY.LANG.txt (a retrieval set in several
    languages, train.evaluate's layout). The same arguments give byte-identical files.
    Returns a summary: out, shards, samples, bytes, seconds."""
    started = time.perf_counter()
    if samples < 1 or samples_per_shard < 1 or image_size < 8:
        raise WitError("write_shards: samples and samples_per_shard must be at least 1, "
                       "image_size at least 8")
    excluded = sorted(held_out or ())
    for name in excluded:
        _parse(name)
    shapes, colours, languages = list(shapes), list(colours), list(languages)
    _check(languages, LANGUAGES, "language")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)
    shards = []
    for index, start in enumerate(range(0, samples, samples_per_shard)):
        rng = random.Random(f"wit.demo.shards:{seed}:{index}")  # one stream per shard
        keys = range(start, min(start + samples_per_shard, samples))
        scenes = (sample_scene(rng, shapes, colours, exclude=excluded) for _ in keys)
        shards.append(_write_shard(out / f"{index:06d}.tar", zip(keys, scenes), seed, image_size, languages))
    names = {s["name"] for s in shards}
    for stale in out.glob("[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        if stale.name not in names:  # from an earlier run with more shards
            stale.unlink()
    sizes = {s["name"]: s["samples"] for s in shards}
    write_json(out / "sizes.json", sizes)
    write_json(out / "manifest.json", {
        "tool": "wit.demo.world", "seed": seed, "samples_per_shard": samples_per_shard,
        "image_size": image_size, "shapes": shapes, "colours": colours, "held_out": excluded,
        **({"languages": languages} if languages else {}), "shards": shards,
        "total_samples": samples, "total_bytes": sum(s["bytes"] for s in shards),
    })
    return {"out": str(out), "shards": len(shards), "samples": samples,
            "bytes": sum(s["bytes"] for s in shards), "seconds": round(time.perf_counter() - started, 3)}


def write_imagefolder(out_dir: str | Path, per_class: int, seed: int, image_size: int = 64,
                      class_names: list[str] | None = None) -> Path:
    """Write `per_class` held-out images of each class (default: `classes()`) as an
    ImageFolder, `out_dir/<class_dir>/NNNNN.jpg`, and `out_dir/classnames.txt` with one
    class name per line in sorted directory order (ImageFolder's class indices).
    The images come from a seed stream apart from `write_shards`'s."""
    if per_class < 1 or image_size < 8:
        raise WitError("write_imagefolder: per_class must be at least 1, image_size at least 8")
    names = sorted(dict.fromkeys(classes() if class_names is None else class_names), key=class_dir)
    for name in names:
        _parse(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = {class_dir(name) for name in names}
    others = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name not in dirs)
    if others:
        raise WitError(f"{out}: holds other directories ({', '.join(others)}), which ImageFolder would "
                       "read as classes; use an empty directory")
    for name in names:
        rng = random.Random(f"wit.demo.imagefolder:{seed}:{name}")
        directory = out / class_dir(name)
        directory.mkdir(exist_ok=True)
        remove_temporaries(directory)
        files = {f"{j:05d}.jpg" for j in range(per_class)}
        for file in sorted(files):
            with atomic_path(directory / file) as tmp:
                Path(tmp).write_bytes(jpeg(render(class_scene(name, rng), image_size)))
        for stale in directory.glob("*.jpg"):
            if stale.name not in files:
                stale.unlink()
    with atomic_path(out / "classnames.txt") as tmp:
        Path(tmp).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    return out


# ---- scenes ----------------------------------------------------------------------------


def _as_random(rng: RandomLike) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, np.random.Generator):
        return random.Random(int(rng.integers(0, 2**63)))
    if isinstance(rng, int):
        return random.Random(rng)
    raise TypeError(f"rng: expected random.Random, numpy.random.Generator or int, not {type(rng).__name__}")


def _check(values: Iterable, valid: Iterable, what: str) -> None:
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise WitError(f"unknown {what} {', '.join(map(str, unknown))} "
                       f"(choose from: {', '.join(map(str, valid))})")


def _parse(name: str) -> tuple[str, str | None]:
    """"red circle" -> ("circle", "red"); "circle" -> ("circle", None)."""
    words = name.split()
    if len(words) == 2 and words[0] in COLOURS and words[1] in SHAPES:
        return words[1], words[0]
    if len(words) == 1 and words[0] in SHAPES:
        return words[0], None
    raise WitError(f"unknown class {name!r}: expected '<colour> <shape>' or '<shape>' with a colour "
                   f"from {', '.join(COLOURS)} and a shape from {', '.join(SHAPES)}")


def _scene(rng: random.Random, shape: str, colour: str, count: int, position: str | None,
           lang: str = "en") -> Scene:
    rgb = tuple(min(255, max(0, c + rng.randint(-15, 15))) for c in COLOURS[colour])
    tint = rng.randint(-8, 8)
    background = tuple(min(255, max(0, c + tint + rng.randint(-6, 6))) for c in _BACKGROUND)
    return Scene(shape=shape, colour=colour, count=count, position=position,
                 caption=caption(rng, lang, shape, colour, count, position),
                 objects=_place(rng, shape, count, position), rgb=rgb, background=background)


def _place(rng: random.Random, shape: str, count: int, position: str | None) -> tuple:
    """Object centres, radii and rotations: wholly inside the position's region, a centred
    object near the middle; a group in distinct cells of a grid over the region, so that
    its objects never touch."""
    if count == 1:
        radius = rng.uniform(*_SINGLE_RADIUS)
        if position == "centre":
            reach = radius * EXTENT[shape] + _CENTRE
            cells = [(0.5 - reach, 0.5 - reach, 0.5 + reach, 0.5 + reach)]
        else:
            cells = [_REGIONS[position]]
    else:
        x0, y0, x1, y1 = _REGIONS[position]
        columns, rows = _GRIDS[position]
        width, height = (x1 - x0) / columns, (y1 - y0) / rows
        cells = rng.sample([(x0 + i * width + _GAP, y0 + j * height + _GAP,
                             x0 + (i + 1) * width - _GAP, y0 + (j + 1) * height - _GAP)
                            for j in range(rows) for i in range(columns)], count)
        radius = min(rng.uniform(*_GROUP_RADIUS), (min(width, height) / 2 - _GAP) / EXTENT[shape])
    objects = []
    for cx0, cy0, cx1, cy1 in cells:
        r = radius * (rng.uniform(0.9, 1.0) if count > 1 else 1.0)
        reach = r * EXTENT[shape]
        x, y = _within(rng, cx0 + reach, cx1 - reach), _within(rng, cy0 + reach, cy1 - reach)
        rotation = rng.uniform(-15, 15) if shape in _ROTATES else 0.0
        objects.append((round(x, 4), round(y, 4), round(r, 4), round(rotation, 2)))
    return tuple(objects)


def _within(rng: random.Random, low: float, high: float) -> float:
    return rng.uniform(low, high) if low < high else (low + high) / 2


# ---- shards ----------------------------------------------------------------------------


def retell(scene: Scene, lang: str, rng: random.Random) -> str:
    """Another true caption of `scene`, in `lang`."""
    return caption(rng, lang, scene.shape, scene.colour, scene.count, scene.position)


def _write_shard(path: Path, scenes: Iterable[tuple[int, Scene]], seed: int, size: int,
                 languages: Sequence[str] = ()) -> dict:
    """Write (key, scene) pairs as one tar, atomically; return its manifest entry. With
    `languages`, the scene's captions in each (from a stream of their own per sample)."""
    written = 0

    def samples():
        nonlocal written
        for key, scene in scenes:
            written += 1
            uid = f"{key:09d}"
            image = jpeg(render(scene, size))
            meta = {"uid": uid, "url": f"http://demo.invalid/{seed}/{uid}.jpg", "query_ids": [],
                    "width": size, "height": size, "original_width": size, "original_height": size,
                    "sha256": hashlib.sha256(image).hexdigest()}
            texts = [("txt", scene.caption)] if not languages else [
                (f"{lang}.txt", retell(scene, lang, random.Random(f"wit.demo.captions:{seed}:{key}:{lang}")))
                for lang in languages]
            yield uid, [("jpg", image), ("json", json.dumps(meta, sort_keys=True).encode()),
                        *((ext, text.encode("utf-8")) for ext, text in texts)]

    tar = io.BytesIO()
    write_tar(tar, samples())
    data = tar.getvalue()
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return {"name": path.name, "samples": written, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wit.demo.world", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    shards = commands.add_parser("shards", help="write a SHARDS dir of random scenes")
    shards.add_argument("out")
    shards.add_argument("--samples", type=int, required=True)
    shards.add_argument("--per-shard", type=int, default=1000)
    shards.add_argument("--held-out", action="append", default=[], metavar="CLASS",
                        help='a class to leave out, e.g. "red circle" (repeatable)')
    folder = commands.add_parser("imagefolder", help="write held-out class images and classnames.txt")
    folder.add_argument("out")
    folder.add_argument("--per-class", type=int, required=True)
    for command in (shards, folder):
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--size", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        if args.command == "shards":
            print(json.dumps(write_shards(args.out, args.samples, args.seed, args.per_shard, args.size,
                                          set(args.held_out))))
        else:
            print(write_imagefolder(args.out, args.per_class, args.seed, args.size))
    except WitError as e:
        parser.exit(1, f"{parser.prog} {args.command}: error: {e}\n")


if __name__ == "__main__":
    main()
