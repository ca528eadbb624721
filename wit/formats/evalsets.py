"""Evaluation sets read from local disk: a torchvision-style ImageFolder (one subdirectory
per class, classes in sorted order, image files found recursively, sorted, with
torchvision's extensions), and the WebDataset evaluation layout of CLIP_benchmark and
DataComp. `wit filter --decontaminate` and `train.evaluate` read them through here."""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from wit.formats.errors import WitError
from wit.formats.languages import LANGUAGE_CODE
from wit.formats.tars import IMAGE_EXTENSIONS, StreamedSample, stream_samples
from wit.formats.xm3600 import Xm3600, is_xm3600, read_xm3600


EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageFolder:
    root: Path
    classes: list[str]     # subdirectory names, sorted; label i is classes[i]
    files: list[Path]
    labels: list[int]


def read_imagefolder(root: str | Path) -> ImageFolder:
    """List the classes and image files of `root`; a class folder without images is an error."""
    root = Path(root)
    if not root.is_dir():
        raise WitError(f"{root}: no such directory (expected an ImageFolder: one subdirectory per class)")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise WitError(f"{root}: no class subdirectories (expected an ImageFolder: one subdirectory per class)")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(Path(d) / f for d, _, names in os.walk(root / name, followlinks=True)
                       for f in names if f.lower().endswith(EXTENSIONS))
        if not found:
            raise WitError(f"{root / name}: no image files ({', '.join(EXTENSIONS)})")
        files += found
        labels += [label] * len(found)
    return ImageFolder(root, classes, files, labels)


# ---- evaluation sets in the layouts the field uses -----------------------------------

CLASSIFICATION, RETRIEVAL = "classification", "retrieval"
CLASSNAMES, TEMPLATES, DATASET_TYPE = "classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt"
WDS_PARTS = (*IMAGE_EXTENSIONS, "cls", "txt")   # and LANG.txt: a retrieval sample's captions in LANG


def caption_language(extension: str) -> str | None:
    """LANG for a member `KEY.LANG.txt` (captions in LANG), else None."""
    lang, dot, rest = extension.partition(".")
    return lang if dot and rest == "txt" and LANGUAGE_CODE.fullmatch(lang) else None


def _wds_part(extension: str) -> bool:
    return extension in WDS_PARTS or caption_language(extension) is not None


@dataclass(frozen=True)
class EvalSample:
    index: int                    # position in the set (file order, or tar order)
    image: bytes
    label: int | None             # classification
    captions: list[str] | None    # retrieval
    languages: list[str | None] | None = None   # retrieval: each caption's language, None where not given


@dataclass(frozen=True)
class EvalSet:
    """An evaluation set on local disk: an ImageFolder (classification), the WebDataset
    layout of CLIP_benchmark and DataComp (`SPLIT/*.tar` whose samples hold `cls` or `txt`,
    and for retrieval in several languages `LANG.txt`, with optional `classnames.txt`,
    `zeroshot_classification_templates.txt` and `dataset_type.txt`), or XM3600's layout
    (retrieval, captions per language; wit.formats.xm3600). `classnames` and `templates`
    are the set's own files, if any; `language_classnames` and `language_templates` its
    `classnames_LANG.txt` and `zeroshot_classification_templates_LANG.txt`."""
    path: str
    layout: str                   # "imagefolder" | "wds" | "xm3600"
    kind: str                     # CLASSIFICATION | RETRIEVAL
    classnames: list[str] | None
    templates: list[str] | None
    tars: tuple[str, ...] = ()
    folder: ImageFolder | None = None
    language_classnames: dict[str, list[str]] = field(default_factory=dict)
    language_templates: dict[str, list[str]] = field(default_factory=dict)
    xm3600: Xm3600 | None = None

    def samples(self, select: Callable[[int], bool] | None = None) -> Iterator[EvalSample]:
        """Every sample (or those whose index `select` accepts: an ImageFolder reads no other
        file), in order; an unreadable member or tar is a one-line error."""
        if self.folder is not None or self.xm3600 is not None:
            yield from self._files(select)
            return
        index = 0
        for tar in self.tars:
            try:
                with open(tar, "rb") as stream:
                    for sample in stream_samples(stream, _wds_part):
                        found = self._sample(tar, index, sample)
                        if found is not None:
                            index += 1
                            if select is None or select(found.index):
                                yield found
            except (tarfile.TarError, EOFError, OSError) as e:
                raise WitError(f"{tar}: unreadable evaluation shard ({e})") from None

    def _files(self, select: Callable[[int], bool] | None) -> Iterator[EvalSample]:
        if self.folder is not None:
            items = [(file, label, None) for file, label in zip(self.folder.files, self.folder.labels)]
        else:
            items = [(file, None, pairs) for file, pairs in zip(self.xm3600.images, self.xm3600.captions)]
        for index, (file, label, pairs) in enumerate(items):
            if select is not None and not select(index):
                continue
            try:
                image = file.read_bytes()
            except OSError as e:
                raise WitError(f"{file}: cannot read the image ({e.strerror or e})") from None
            if pairs is None:
                yield EvalSample(index, image, label, None)
            else:
                yield EvalSample(index, image, None, [text for _, text in pairs], [lang for lang, _ in pairs])

    def _sample(self, tar: str, index: int, sample: StreamedSample) -> EvalSample | None:
        image = sample.image
        if image is None:
            return None
        if self.kind == RETRIEVAL:
            captions, languages = [], []
            for extension in sorted(sample.parts, key=lambda e: (e != "txt", e)):
                lang = caption_language(extension)
                if extension == "txt" or lang is not None:
                    found = [c.strip() for c in sample.parts[extension].decode("utf-8", "replace").splitlines()
                             if c.strip()]
                    captions += found
                    languages += [lang] * len(found)
            if not any(e == "txt" or caption_language(e) for e in sample.parts):
                raise WitError(f"{tar}: sample {sample.key!r} has no txt (a retrieval set needs its captions)")
            return EvalSample(index, image, None, captions, languages)
        raw = sample.parts.get("cls", b"").decode("ascii", "replace").strip()
        if not raw.isdigit():
            raise WitError(f"{tar}: sample {sample.key!r} has no integer cls (got {raw[:20]!r})")
        return EvalSample(index, image, int(raw), None)


def open_evalset(path: str | Path, split: str = "test") -> EvalSet:
    """The evaluation set at `path`: the WebDataset layout when `path/SPLIT/` holds tars,
    else an ImageFolder (its `classnames.txt`, when present, is not a class)."""
    root = Path(path)
    if not root.is_dir():
        raise WitError(f"{root}: no such evaluation set directory")
    classnames = _lines(root / CLASSNAMES, "class names")
    templates = _lines(root / TEMPLATES, "templates")
    own = {"language_classnames": _per_language(root, CLASSNAMES, "class names"),
           "language_templates": _per_language(root, TEMPLATES, "templates")}
    if is_xm3600(root):
        return EvalSet(str(root), "xm3600", RETRIEVAL, None, None, xm3600=read_xm3600(root))
    split_dir = root / split
    tars = sorted(split_dir.glob("*.tar"), key=_shard_order) if split_dir.is_dir() else []
    if tars:
        kinds = _lines(root / DATASET_TYPE, "dataset type") or [CLASSIFICATION]
        kind = RETRIEVAL if kinds[0].strip().lower() == RETRIEVAL else CLASSIFICATION
        return EvalSet(str(root), "wds", kind, classnames, templates, tuple(map(str, tars)), **own)
    if split_dir.is_dir():
        raise WitError(f"{split_dir}: no .tar shards (expected the WebDataset evaluation layout)")
    folder = read_imagefolder(root)
    for name, found in [(CLASSNAMES, classnames), *((_language_file(CLASSNAMES, lang), names)
                                                    for lang, names in own["language_classnames"].items())]:
        if found is not None and len(found) != len(folder.classes):
            raise WitError(f"{root / name}: {len(found)} class names for {len(folder.classes)} class folders")
    return EvalSet(str(root), "imagefolder", CLASSIFICATION, classnames, templates, folder=folder, **own)


def _language_file(name: str, lang: str) -> str:
    """classnames.txt -> classnames_LANG.txt"""
    stem, _, suffix = name.rpartition(".")
    return f"{stem}_{lang}.{suffix}"


def _per_language(root: Path, name: str, what: str) -> dict[str, list[str]]:
    """{LANG: lines} of the set's `name` files per language (classnames_LANG.txt)."""
    stem, _, suffix = name.rpartition(".")
    found = {}
    for path in sorted(root.glob(f"{stem}_*.{suffix}")):
        lang = path.name[len(stem) + 1:-len(suffix) - 1]
        if LANGUAGE_CODE.fullmatch(lang):
            found[lang] = _lines(path, f"{what} in {lang}")
    return found


def _shard_order(path: Path) -> tuple:
    """0.tar, 1.tar, ..., 10.tar in number order (CLIP_benchmark's names), others by name."""
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def _lines(path: Path, what: str) -> list[str] | None:
    """The non-blank lines of an optional text file, stripped; None if there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise WitError(f"{path}: cannot read the {what} ({e})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise WitError(f"{path}: empty {what} file")
    return lines
