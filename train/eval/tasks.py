"""The evaluation tasks: zero-shot classification and image-text retrieval, each built on
every rank with that rank's share of the data, decoded and tokenized once; `run(model)`
encodes the share and gathers features or counts, so every rank returns the same metrics."""

from __future__ import annotations

import copy
import itertools
from typing import Callable, Iterator

import numpy as np
import torch

from train.eval import retrieval
from train.eval import zeroshot
from train.data.stream import Sample, read_samples, span
from train.dist import World, gather_objects
from train.model.encode import Encoder, decode_all, gather_rows, share
from train.data.shards import Shard, list_shards
from wit.formats.errors import WitError
from wit.formats.evalsets import CLASSIFICATION, EvalSet, read_imagefolder


class ZeroShot:
    """Zero-shot top-1 / top-k and mean per-class recall on a classification set; this rank's
    share of the images (every world.size-th) and of the prompts is decoded and tokenized
    once, at construction."""

    def __init__(self, evalset: EvalSet, names: list[str], templates: list[zeroshot.Template], world: World,
                 tokenize: Callable, image_size: int, max_pixels: int, encoder: Encoder):
        self.world, self.encoder = world, encoder
        texts = zeroshot.prompts(names, templates)
        self.classes = len(names)
        self.tokens = tokenize([texts[i] for i in share(len(texts), world)])
        error, samples = None, []
        try:   # an unreadable file is seen by one rank only: agree on the error before raising
            samples = list(evalset.samples(select=lambda i: i % world.size == world.rank))
            bad = next((s.label for s in samples if s.label >= self.classes), None)
            if bad is not None:
                error = f"{evalset.path}: label {bad} but only {self.classes} class names"
        except WitError as e:
            error = str(e)
        self.pixels, kept = decode_all([s.image for s in samples], image_size, max_pixels, encoder.progress)
        self.labels = torch.tensor([samples[i].label for i in kept], dtype=torch.long)
        totals = _sum_over_ranks({"images": len(kept), "undecodable": len(samples) - len(kept)}, world, error)
        if totals["images"] == 0:
            raise WitError(f"{evalset.path}: none of its {totals['undecodable']} images could be decoded")
        self.images, self.undecodable = totals["images"], totals["undecodable"]
        self.k = zeroshot.topk(self.classes)

    def with_prompts(self, names: list[str], templates: list[zeroshot.Template], tokenize: Callable) -> "ZeroShot":
        """The same images with other class names and templates (another language's): nothing
        is decoded again. The names must be as many as this task's."""
        if len(names) != self.classes:
            raise WitError(f"{len(names)} class names where the set has {self.classes}")
        other = copy.copy(self)
        texts = zeroshot.prompts(names, templates)
        other.tokens = tokenize([texts[i] for i in share(len(texts), self.world)])
        return other

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        weights = zeroshot.classifier(gather_rows(self.encoder.texts(model, self.tokens), self.world), self.classes)
        features = self.encoder.images(model, self.pixels) if len(self.labels) else torch.empty(0, weights.shape[1])
        ks = (1, self.k)
        correct = zeroshot.correct_at(features, weights, self.labels, ks) if len(self.labels) else dict.fromkeys(ks, 0)
        hits, counts = zeroshot.class_hits(features, weights, self.labels)
        totals = _sum_over_ranks({**correct, "hits": np.array(hits), "counts": np.array(counts)}, self.world)
        present = totals["counts"] > 0
        return {"zeroshot_top1": totals[1] / self.images, f"zeroshot_top{self.k}": totals[self.k] / self.images,
                "zeroshot_mean_per_class_recall": float((totals["hits"][present] / totals["counts"][present]).mean()),
                "zeroshot_chance": 1 / self.classes, "zeroshot_images": self.images,
                "zeroshot_classes": self.classes, "zeroshot_undecodable": self.undecodable}


def zeroshot_on_imagefolder(folder: str, classnames: str, templates: str | None, world: World, tokenize: Callable,
                            image_size: int, max_pixels: int, encoder: Encoder) -> ZeroShot:
    """Zero-shot on an ImageFolder with class names and templates given as files (or `imagenet`)."""
    found = read_imagefolder(folder)
    names = zeroshot.read_classnames(classnames, len(found.classes), folder)
    evalset = EvalSet(str(folder), "imagefolder", CLASSIFICATION, None, None, folder=found)
    return ZeroShot(evalset, names, zeroshot.read_templates(templates), world, tokenize, image_size, max_pixels,
                    encoder)


Item = tuple[bytes, list[str], "list[str | None] | None"]   # an image, its captions and their languages


class Retrieval:
    """Image->text and text->image recall@1/5/10 over this rank's images, each with one or
    more captions; an image that does not decode is skipped (counted) with its captions.
    Captions may carry a language: each language is then also evaluated on its own, over
    its captions and the images that have one (`LANG/i2t_r1`, ...)."""

    def __init__(self, source: str, items: list[Item], skipped: int, world: World,
                 tokenize: Callable, image_size: int, max_pixels: int, encoder: Encoder, error: str | None = None):
        self.world, self.encoder = world, encoder
        self.pixels, kept = decode_all([item[0] for item in items], image_size, max_pixels, encoder.progress)
        captions = [(k, text, (items[i][2] or [None] * len(items[i][1]))[j])
                    for k, i in enumerate(kept) for j, text in enumerate(items[i][1])]
        self.tokens = tokenize([text for _, text, _ in captions])
        totals = _sum_over_ranks({"images": len(kept), "texts": len(captions),
                                  "skipped": skipped + len(items) - len(kept)}, world, error)
        if totals["images"] == 0:
            raise WitError(f"{source}: no sample with a decodable image and a text among the first "
                           f"{totals['skipped']}")
        offset = sum(gather_objects(len(kept), world)[:world.rank])
        self.text_image = gather_rows(torch.tensor([offset + k for k, _, _ in captions], dtype=torch.long), world)
        self.languages = sorted(set().union(*gather_objects({lang for _, _, lang in captions if lang}, world)))
        codes = {lang: code for code, lang in enumerate(self.languages)}
        self.text_language = gather_rows(torch.tensor([codes.get(lang, -1) for _, _, lang in captions],
                                                      dtype=torch.long), world)
        self.images, self.texts, self.skipped = totals["images"], totals["texts"], totals["skipped"]

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        image_features = gather_rows(self.encoder.images(model, self.pixels), self.world)
        text_features = gather_rows(self.encoder.texts(model, self.tokens), self.world)
        metrics = {**retrieval.recall_at_k(image_features, text_features, self.text_image),
                   "retrieval_pairs": self.texts, "retrieval_images": self.images, "retrieval_skipped": self.skipped}
        for code, lang in enumerate(self.languages):
            texts = (self.text_language == code).nonzero().squeeze(1)
            images = torch.unique(self.text_image[texts])     # sorted: the language's images, in order
            position = torch.full((self.images,), -1, dtype=torch.long)
            position[images] = torch.arange(len(images))
            found = retrieval.recall_at_k(image_features[images], text_features[texts],
                                          position[self.text_image[texts]])
            metrics.update({f"{lang}/{k}": v for k, v in found.items()})
            metrics.update({f"{lang}/retrieval_pairs": len(texts), f"{lang}/retrieval_images": len(images)})
        return metrics


def retrieval_on_shards(spec: str, max_samples: int, world: World, tokenize: Callable, image_size: int,
                        max_pixels: int, encoder: Encoder) -> Retrieval:
    """Retrieval on the first `max_samples` samples of SHARDS (one caption each), each rank
    reading its contiguous share; a sample without an image or a text is skipped (counted)."""
    shards = list_shards(spec)
    mine = share(min(max_samples, sum(s.samples for s in shards)), world)
    error, samples = None, []
    try:   # a missing shard is seen by one rank only: agree on the error before raising
        samples = [s for s in read_range(shards, mine.start, mine.stop) if s.image is not None and s.text is not None]
    except WitError as e:
        error = str(e)
    return Retrieval(spec, [(s.image, [s.text], None) for s in samples], len(mine) - len(samples), world, tokenize,
                     image_size, max_pixels, encoder, error)


def retrieval_on_evalset(evalset: EvalSet, world: World, tokenize: Callable, image_size: int, max_pixels: int,
                         encoder: Encoder) -> Retrieval:
    """Retrieval on a WebDataset retrieval set (several captions per image), each rank reading
    every world.size-th sample; a sample without a caption is skipped (counted). Captions
    keep their language where the set gives one (LANG.txt members, XM3600)."""
    error, samples = None, []
    try:
        samples = list(evalset.samples(select=lambda i: i % world.size == world.rank))
    except WitError as e:
        error = str(e)
    items = [(s.image, s.captions, s.languages) for s in samples if s.captions]
    return Retrieval(evalset.path, items, len(samples) - len(items), world, tokenize, image_size, max_pixels,
                     encoder, error)


def read_range(shards: list[Shard], start: int, stop: int) -> Iterator[Sample]:
    """Samples number start..stop-1 of the shards laid end to end (fewer if a shard is short)."""
    for segment in span(shards, start, stop - start):
        yield from itertools.islice(read_samples(segment.url, skip=segment.first), segment.count)


def _sum_over_ranks(counts: dict, world: World, error: str | None = None) -> dict:
    """`counts` summed over all ranks, on every rank; raises any rank's `error` on every rank."""
    reports = gather_objects((counts, error), world)
    errors = [e for _, e in reports if e]
    if errors:
        raise WitError(errors[0])
    return {key: sum(c[key] for c, _ in reports) for key in counts}
