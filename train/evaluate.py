"""Evaluation of a CLIP model: zero-shot classification on an ImageFolder, image-text
retrieval on held-out shards, and (from the command line) a linear probe.

During training `build_evaluator` prepares the data once, each rank holding its share of
the images and texts; `run(model)` is called on every rank, which encodes its share, and
the features or counts are gathered so every rank returns the same metrics.

    python -m train.evaluate --checkpoint RUN/checkpoints/latest.pt \\
        --imagefolder imagenet/val --classnames imagenet --templates imagenet
    python -m train.evaluate --checkpoint CKPT --shards held-out/ --out metrics.json
"""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Callable, Iterator

import numpy as np
import torch

from train import retrieval, zeroshot
from train.config import EvalConfig, TrainConfig
from train.data import Sample, read_samples, span
from train.dist import World, gather_objects
from train.features import Encoder, decode_all, gather_rows, inference, share
from train.model import load
from train.shards import Shard, list_shards
from wit.formats import atomic
from wit.formats.evalsets import CLASSIFICATION, EvalSet, read_imagefolder
from wit.formats.errors import WitError

PROG = "python -m train.evaluate"


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


class Retrieval:
    """Image->text and text->image recall@1/5/10 over this rank's images, each with one or
    more captions; an image that does not decode is skipped (counted) with its captions."""

    def __init__(self, source: str, items: list[tuple[bytes, list[str]]], skipped: int, world: World,
                 tokenize: Callable, image_size: int, max_pixels: int, encoder: Encoder, error: str | None = None):
        self.world, self.encoder = world, encoder
        self.pixels, kept = decode_all([image for image, _ in items], image_size, max_pixels, encoder.progress)
        captions = [(k, text) for k, i in enumerate(kept) for text in items[i][1]]
        self.tokens = tokenize([text for _, text in captions])
        totals = _sum_over_ranks({"images": len(kept), "texts": len(captions),
                                  "skipped": skipped + len(items) - len(kept)}, world, error)
        if totals["images"] == 0:
            raise WitError(f"{source}: no sample with a decodable image and a text among the first "
                           f"{totals['skipped']}")
        offset = sum(gather_objects(len(kept), world)[:world.rank])
        self.text_image = gather_rows(torch.tensor([offset + k for k, _ in captions], dtype=torch.long), world)
        self.images, self.texts, self.skipped = totals["images"], totals["texts"], totals["skipped"]

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        image_features = gather_rows(self.encoder.images(model, self.pixels), self.world)
        text_features = gather_rows(self.encoder.texts(model, self.tokens), self.world)
        return {**retrieval.recall_at_k(image_features, text_features, self.text_image),
                "retrieval_pairs": self.texts, "retrieval_images": self.images, "retrieval_skipped": self.skipped}


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
    return Retrieval(spec, [(s.image, [s.text]) for s in samples], len(mine) - len(samples), world, tokenize,
                     image_size, max_pixels, encoder, error)


def retrieval_on_evalset(evalset: EvalSet, world: World, tokenize: Callable, image_size: int, max_pixels: int,
                         encoder: Encoder) -> Retrieval:
    """Retrieval on a WebDataset retrieval set (several captions per image), each rank reading
    every world.size-th sample; a sample without a caption is skipped (counted)."""
    error, samples = None, []
    try:
        samples = list(evalset.samples(select=lambda i: i % world.size == world.rank))
    except WitError as e:
        error = str(e)
    items = [(s.image, s.captions) for s in samples if s.captions]
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


class Evaluator:
    """Zero-shot and/or retrieval, spread over all ranks."""

    def __init__(self, tasks: list):
        self.tasks = tasks

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        """Every task's metrics, the same on every rank (every rank must call it)."""
        results: dict[str, float] = {}
        with inference(model):
            for task in self.tasks:
                results.update(task.run(model))
        return results


class NullEvaluator:
    """What a run without evaluation data evaluates: nothing."""

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        return {}


def build_evaluator(cfg: EvalConfig, world: World, tokenize: Callable, image_size: int, mean: tuple, std: tuple,
                    max_pixels: int, progress: bool = False) -> Evaluator | NullEvaluator:
    """The evaluator of `cfg` with its data prepared (every rank must call it)."""
    if not cfg.enabled:
        return NullEvaluator()
    encoder = Encoder(world.device, cfg.batch_size, mean, std, progress)
    tasks: list = []
    if cfg.imagefolder:
        tasks.append(zeroshot_on_imagefolder(cfg.imagefolder, cfg.classnames, cfg.templates, world, tokenize,
                                             image_size, max_pixels, encoder))
    if cfg.shards:
        tasks.append(retrieval_on_shards(cfg.shards, cfg.max_samples, world, tokenize, image_size, max_pixels,
                                         encoder))
    return Evaluator(tasks)


def probe_imagefolders(model: torch.nn.Module, train_dir: str, test_dir: str, image_size: int, max_pixels: int,
                       encoder: Encoder) -> dict[str, float]:
    """Linear probe on the frozen, L2-normalised image features of two ImageFolders with the same classes."""
    from train import linear_probe   # scikit-learn: imported only when probing, not by the trainer
    train, test = read_imagefolder(train_dir), read_imagefolder(test_dir)
    if train.classes != test.classes:
        raise WitError(f"{test_dir}: its class folders differ from those of {train_dir}")
    features, labels, undecodable = [], [], 0
    for folder in (train, test):
        pixels, kept = decode_all(folder.files, image_size, max_pixels, encoder.progress)
        with inference(model):
            features.append(encoder.images(model, pixels).numpy())
        labels.append(np.array([folder.labels[i] for i in kept]))
        undecodable += len(folder.files) - len(kept)
    if not len(labels[1]):
        raise WitError(f"{test_dir}: none of its images could be decoded")
    try:
        result = linear_probe.probe(features[0], labels[0], features[1], labels[1])
    except WitError as e:
        raise WitError(f"{train_dir}: {e}") from None
    return {"linear_probe_top1": result.top1, "linear_probe_C": result.C, "linear_probe_val_top1": result.val_top1,
            "linear_probe_train_images": len(labels[0]), "linear_probe_test_images": len(labels[1]),
            "linear_probe_undecodable": undecodable}


def evaluate(args: argparse.Namespace) -> dict:
    """The CLI's work: load the checkpoint, run the requested evaluations, return the report."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load(args.checkpoint, device)
    world = World(0, 1, 0, device)
    zeroshot_folder = args.imagefolder if args.classnames else None
    cfg = EvalConfig(imagefolder=zeroshot_folder, classnames=args.classnames, templates=args.templates,
                     shards=args.shards, batch_size=args.batch_size, max_samples=args.max_samples)
    evaluator = build_evaluator(cfg, world, loaded.tokenizer, loaded.image_size, loaded.mean, loaded.std,
                                args.max_pixels, progress=True)
    metrics = evaluator.run(loaded.model)
    if args.linear_probe:
        encoder = Encoder(device, args.batch_size, loaded.mean, loaded.std, progress=True)
        metrics.update(probe_imagefolders(loaded.model, args.train_imagefolder, args.imagefolder,
                                          loaded.image_size, args.max_pixels, encoder))
    return {"checkpoint": str(args.checkpoint), "model": loaded.name, "step": loaded.step, "metrics": metrics}


def summary(report: dict) -> str:
    m = report["metrics"]
    lines = [f"{report['checkpoint']}: {report['model']} at step {report['step']}"]
    if "zeroshot_top1" in m:
        k = zeroshot.topk(m["zeroshot_classes"])
        topk = f"  top-{k} {m[f'zeroshot_top{k}']:.2%}" if k > 1 else ""
        lines.append(f"zero-shot     top-1 {m['zeroshot_top1']:.2%}{topk}  chance {m['zeroshot_chance']:.2%}  "
                     f"({m['zeroshot_images']} images, {m['zeroshot_classes']} classes, "
                     f"{m['zeroshot_undecodable']} undecodable)")
    if "i2t_r1" in m:
        for name, key in (("image->text", "i2t"), ("text->image", "t2i")):
            recalls = "  ".join(f"R@{k} {m[f'{key}_r{k}']:.2%}" for k in retrieval.KS)
            lines.append(f"{name:<13} {recalls}")
        lines.append(f"{'':<13} ({m['retrieval_pairs']} pairs, {m['retrieval_skipped']} samples skipped)")
    if "linear_probe_top1" in m:
        lines.append(f"linear probe  top-1 {m['linear_probe_top1']:.2%}  C {m['linear_probe_C']:.3g}  "
                     f"(validation {m['linear_probe_val_top1']:.2%}; {m['linear_probe_train_images']} train, "
                     f"{m['linear_probe_test_images']} test images, {m['linear_probe_undecodable']} undecodable)")
    return "\n".join(lines)


def write_json(path: str, data: dict) -> None:
    """Write `data` to `path` atomically (a temporary file beside it, then a rename)."""
    try:
        atomic.write_json(path, data)
    except OSError as e:
        raise WitError(f"{path}: cannot write the metrics ({e.strerror or e})") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a trainer checkpoint (RUN/checkpoints/*.pt)")
    parser.add_argument("--imagefolder", help="zero-shot (and linear probe test) images: one subdirectory per class")
    parser.add_argument("--classnames", help="one class name per line, in sorted class folder order; "
                                             "'imagenet' for OpenCLIP's ImageNet class names")
    parser.add_argument("--templates", help="prompt templates, one per line with {} for the class name; "
                                            "'imagenet' for the paper's 80 (default: 'a photo of a {}.')")
    parser.add_argument("--shards", help="held-out shards for retrieval: a SHARDS dir or a brace pattern")
    parser.add_argument("--max-samples", type=int, default=EvalConfig.max_samples,
                        help="retrieval uses the first N samples (default %(default)s)")
    parser.add_argument("--linear-probe", action="store_true",
                        help="also fit a linear probe (needs --train-imagefolder)")
    parser.add_argument("--train-imagefolder", help="the linear probe's training images, same class folders")
    parser.add_argument("--batch-size", type=int, default=EvalConfig.batch_size)
    parser.add_argument("--max-pixels", type=int, default=TrainConfig.max_pixels, help="larger images are skipped")
    parser.add_argument("--out", help="write the metrics to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.imagefolder and not args.shards:
        parser.error("give --imagefolder DIR --classnames FILE, and/or --shards GLOB")
    if args.imagefolder and not args.classnames and not args.linear_probe:
        parser.error("--imagefolder needs --classnames (or --linear-probe)")
    if args.linear_probe and not (args.imagefolder and args.train_imagefolder):
        parser.error("--linear-probe needs --train-imagefolder and --imagefolder (the test images)")
    if args.batch_size < 1 or args.max_samples < 1:
        parser.error("--batch-size and --max-samples must be at least 1")
    try:
        report = evaluate(args)
        if args.out:
            write_json(args.out, report)
    except WitError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
