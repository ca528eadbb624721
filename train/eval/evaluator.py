"""Evaluation of a CLIP model, during training and from `python -m train.evaluate`:
zero-shot classification on an ImageFolder, image-text retrieval on held-out shards, a
suite, and a linear probe.

`build_evaluator` prepares the data once, each rank holding its share of the images and
texts; `run(model)` is called on every rank, which encodes its share, and the features or
counts are gathered so every rank returns the same metrics."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from train.config import EvalConfig
from train.dist import World
from train.eval.suite import build_suite
from train.eval.tasks import retrieval_on_shards, zeroshot_on_imagefolder
from train.model.encode import Encoder, decode_all, inference
from wit.formats.evalsets import read_imagefolder
from wit.formats.errors import WitError


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
                    max_pixels: int, progress: bool = False, strict: bool = False,
                    keep: bool = True) -> Evaluator | NullEvaluator:
    """The evaluator of `cfg` with its data prepared (every rank must call it); `strict`: a
    suite's missing set is an error, not skipped; not `keep`: a suite's sets are prepared
    one at a time when run (a single run)."""
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
    if cfg.suite:
        tasks.append(build_suite(cfg.suite, world, tokenize, image_size, max_pixels, encoder, strict, keep))
    return Evaluator(tasks)


def probe_imagefolders(model: torch.nn.Module, train_dir: str, test_dir: str, image_size: int, max_pixels: int,
                       encoder: Encoder) -> dict[str, float]:
    """Linear probe on the frozen, L2-normalised image features of two ImageFolders with the same classes."""
    from train.eval import linear_probe   # scikit-learn: imported only when probing, not by the trainer
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
