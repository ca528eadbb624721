"""Zero-shot classification as in the CLIP paper: class names put into prompt templates,
the prompt embeddings of each class ensembled into one classifier row, top-k accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import open_clip
import torch
import torch.nn.functional as F

from wit.formats.errors import WitError


Template = Callable[[str], str]
DEFAULT_TEMPLATES = ("a photo of a {}.",)
OPENCLIP_LISTS = "imagenet"   # the name that selects OpenCLIP's ImageNet class names / templates


def read_classnames(spec: str, count: int | None, folder: str | Path) -> list[str]:
    """One class name per line, in the order of the sorted class folders of `folder`
    (`imagenet`: OpenCLIP's ImageNet class names); `count` of them, unless it is None."""
    if spec == OPENCLIP_LISTS:
        names = list(open_clip.IMAGENET_CLASSNAMES)
    else:
        names = [line.strip() for line in _read_lines(spec, "class names")]
        for number, name in enumerate(names, 1):
            if not name:
                raise WitError(f"{spec}: line {number} is empty (one class name per line)")
    if count is not None and len(names) != count:
        raise WitError(f"{spec}: {len(names)} class names for the {count} class folders of {folder}")
    return names


def read_templates(spec: str | None) -> list[Template]:
    """Prompt templates, one per line, each with `{}` (or CLIP_benchmark's `{c}`) where the
    class name goes (blank lines skipped); `imagenet`: OpenCLIP's 80 ImageNet templates;
    None: "a photo of a {}."."""
    if spec == OPENCLIP_LISTS:
        return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
    return templates_from(DEFAULT_TEMPLATES if spec is None else _read_lines(spec, "templates"), str(spec))


def templates_from(lines: list[str] | tuple[str, ...], source: str) -> list[Template]:
    """Templates from text lines with `{}` or `{c}` for the class name; `source` names them in errors."""
    templates = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        slot = "{c}" if "{c}" in text else "{}"
        if slot not in text:
            raise WitError(f"{source}: line {number} has no {{}} or {{c}} for the class name: {text!r}")
        templates.append(lambda name, text=text, slot=slot: text.replace(slot, name))
    if not templates:
        raise WitError(f"{source}: no templates")
    return templates


def _read_lines(path: str, what: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise WitError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WitError(f"{path}: cannot read the {what}: {e}") from None


def prompts(classnames: list[str], templates: list[Template]) -> list[str]:
    """Every template filled with every class name, class-major: [c0 t0, c0 t1, ..., c1 t0, ...]."""
    return [template(name) for name in classnames for template in templates]


def classifier(prompt_features: torch.Tensor, classes: int) -> torch.Tensor:
    """Prompt ensembling: the class-major prompt features [C*T, D] -> [C, D], each row the
    re-normalised mean of its class's L2-normalised prompt features."""
    per_class = F.normalize(prompt_features.float(), dim=-1).view(classes, -1, prompt_features.shape[-1])
    return F.normalize(per_class.mean(dim=1), dim=-1)


def correct_at(image_features: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor,
               ks: tuple[int, ...]) -> dict[int, int]:
    """{k: images whose class is among the k highest scores}; a tie with another class counts
    against the true class, so the result does not depend on the order of classes."""
    scores = image_features.float() @ weights.float().T
    true = scores.gather(1, labels.view(-1, 1))
    rank = (scores >= true).sum(dim=1) - 1          # classes scoring at least as high, itself excluded
    return {k: int((rank < k).sum()) for k in ks}


def class_hits(image_features: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> tuple[list, list]:
    """(top-1 hits per class, images per class), ties counted against the true class: the
    parts of the mean per-class recall (DataComp's main metric on some sets)."""
    classes = len(weights)
    if not len(labels):
        return [0] * classes, [0] * classes
    scores = image_features.float() @ weights.float().T
    hit = (scores >= scores.gather(1, labels.view(-1, 1))).sum(dim=1) == 1
    return (torch.bincount(labels[hit], minlength=classes).tolist(), torch.bincount(labels, minlength=classes).tolist())


def topk(classes: int) -> int:
    """The k of the top-k accuracy reported besides top-1: 5, or fewer with fewer classes."""
    return min(5, classes)
