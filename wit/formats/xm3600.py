"""The Crossmodal-3600 (XM3600) layout: 3,600 images, captions in 36 languages.

    ROOT/images/<key>.jpg
    ROOT/captions.jsonl                          # Google's release: one line per image,
                                                 # {"image/key": K, "<lang>": {"caption": [...]}, ...}
    ROOT/crossmodal3600_captions-<lang>.json     # or CLIP_benchmark's files, one per language:
                                                 # {"image_paths": [...], "annotations": [...]}

With captions.jsonl, every caption of every language is read from it (CLIP_benchmark's
files are then ignored). Without it, each language's file gives its captions (a string or a
list per image); an image is found by its file name in `images/`, wherever the file says it
was, so no path in a caption file chooses what is read. An image listed but missing is a
one-line error."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from wit.formats.errors import WitError
from wit.formats.languages import LANGUAGE_CODE

CAPTIONS = "captions.jsonl"
PER_LANGUAGE = "crossmodal3600_captions-"
IMAGES = "images"
KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Xm3600:
    root: Path
    images: tuple[Path, ...]                                # in the captions' order
    captions: tuple[tuple[tuple[str, str], ...], ...]       # per image: (language, caption) pairs

    @property
    def languages(self) -> list[str]:
        return sorted({lang for pairs in self.captions for lang, _ in pairs})


def is_xm3600(root: Path) -> bool:
    return (root / CAPTIONS).is_file() or any(root.glob(f"{PER_LANGUAGE}*.json"))


def read_xm3600(root: str | Path) -> Xm3600:
    root = Path(root)
    found = _from_jsonl(root / CAPTIONS) if (root / CAPTIONS).is_file() else _from_per_language(root)
    if not found:
        raise WitError(f"{root}: no captions in the XM3600 layout ({CAPTIONS} or {PER_LANGUAGE}<lang>.json)")
    images = tuple(root / IMAGES / f"{key}.jpg" for key in found)
    missing = [path for path in images if not path.is_file()]
    if missing:
        raise WitError(f"{missing[0]}: missing ({len(missing)} of the {len(images)} images the captions list)")
    return Xm3600(root, images, tuple(tuple(pairs) for pairs in found.values()))


def _from_jsonl(path: Path) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise WitError(f"{path}: cannot read the captions ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise WitError(f"{path}:{number}: not JSON ({e})") from None
        key = item.get("image/key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise WitError(f"{path}:{number}: no plain image/key (letters, digits, _ and -)")
        if key in found:
            raise WitError(f"{path}:{number}: image/key {key!r} appears twice")
        found[key] = [(lang, text.strip()) for lang, value in sorted(item.items())
                      if LANGUAGE_CODE.fullmatch(lang) and isinstance(value, dict)
                      for text in _texts(value.get("caption"), f"{path}:{number}: {lang}")]
    return found


def _from_per_language(root: Path) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(root.glob(f"{PER_LANGUAGE}*.json")):
        lang = path.stem[len(PER_LANGUAGE):]
        if not LANGUAGE_CODE.fullmatch(lang):
            raise WitError(f"{path}: {lang!r} is not a language code")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            paths, annotations = data["image_paths"], data["annotations"]
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
            raise WitError(f"{path}: not a caption file with image_paths and annotations ({e})") from None
        if not isinstance(paths, list) or not isinstance(annotations, list) or len(paths) != len(annotations):
            raise WitError(f"{path}: image_paths and annotations must be lists of one length")
        for image, texts in zip(paths, annotations):
            name = str(image).replace("\\", "/").rsplit("/", 1)[-1]
            key = name[:-4] if name.lower().endswith(".jpg") else ""
            if not KEY.fullmatch(key):
                raise WitError(f"{path}: image {str(image)[:80]!r} is not <key>.jpg")
            found.setdefault(key, []).extend((lang, t.strip()) for t in _texts(texts, f"{path}: {key}"))
    return found


def _texts(value, where: str) -> list[str]:
    """A caption or a list of captions; blank ones dropped."""
    texts = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise WitError(f"{where}: a caption must be a string or a list of strings")
    return [t for t in texts if t.strip()]
