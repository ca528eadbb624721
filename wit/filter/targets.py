"""The targets of the image-based clustering filter (`--keep-near`): evaluation sets, whose
images are embedded with the model's image tower, or class lists, whose class names are
embedded with its text tower as zero-shot classifiers (CLIP's prompt templates, each
class's prompts averaged)."""

from __future__ import annotations

import os

import numpy as np

from wit.formats.atomic import file_sha256
from wit.formats.errors import WitError
from wit.formats.evalsets import open_evalset
from wit.formats.inputs import describe_listing

CLIP_BENCHMARK = "clip-benchmark:"
BATCH = 256


def fingerprint(spec: str) -> dict:
    """What decides a target's embeddings: a class list's sha256 or clip-benchmark key, an
    evaluation set's files' names, sizes and mtimes."""
    if spec.startswith(CLIP_BENCHMARK):
        _classes(spec)   # an unknown key fails here, before any work
        return {"spec": spec}
    if os.path.isfile(spec):
        return {"spec": os.path.abspath(spec), "sha256": file_sha256(spec, "class list")}
    evalset = open_evalset(spec)
    return {"spec": os.path.abspath(spec),
            "files": describe_listing(evalset.path, evalset.folder.files if evalset.folder is not None
                                      else evalset.tars)}


def embed(spec: str, loaded) -> np.ndarray:
    """float32[m, dim] L2-normalised embeddings of a target (see the module's doc)."""
    if spec.startswith(CLIP_BENCHMARK) or os.path.isfile(spec):
        return _class_embeddings(spec, loaded)
    from train.model.encode import image_embeddings

    found, batch = [], []
    for sample in open_evalset(spec).samples():
        batch.append(sample.image)
        if len(batch) == BATCH:
            found.append(image_embeddings(loaded, batch))
            batch = []
    if batch:
        found.append(image_embeddings(loaded, batch))
    vectors = np.concatenate(found) if found else np.zeros((0, 1), np.float32)
    vectors = vectors[~np.isnan(vectors[:, 0])] if len(vectors) else vectors
    if not len(vectors):
        raise WitError(f"{spec}: no image of this evaluation set could be embedded")
    return vectors


def _classes(spec: str) -> tuple[list[str], list[str] | None]:
    """(class names, clip-benchmark's templates for them or None)."""
    from train.eval.prompt_lists import lookup
    from train.eval.zeroshot import read_classnames

    if spec.startswith(CLIP_BENCHMARK):
        key = spec[len(CLIP_BENCHMARK):]
        names = lookup("classnames", key)
        if names is None:
            raise WitError(f"--keep-near {spec}: clip-benchmark has no class names for {key!r}")
        return names, lookup("templates", key)
    return read_classnames(spec, None, spec), None


def _class_embeddings(spec: str, loaded) -> np.ndarray:
    import torch

    from train.eval.zeroshot import classifier, prompts, read_templates, templates_from
    from train.model.encode import Encoder, inference

    names, listed = _classes(spec)
    templates = templates_from(listed, spec) if listed else read_templates("imagenet")
    device = next(loaded.model.parameters()).device
    encoder = Encoder(device, BATCH, loaded.mean, loaded.std)
    with inference(loaded.model), torch.inference_mode():
        features = encoder.texts(loaded.model, loaded.tokenizer(prompts(names, templates)))
    return classifier(features, len(names)).numpy().astype(np.float32)
