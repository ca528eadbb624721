"""A torchvision-style ImageFolder: one subdirectory per class, classes in sorted order,
image files found recursively (sorted) with torchvision's extensions."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wit.formats.errors import WitError


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
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
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
