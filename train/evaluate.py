"""Evaluation of a CLIP model: zero-shot classification on an ImageFolder, image-text
retrieval on held-out shards, and (from the command line) a linear probe.

The command's work; the evaluations themselves are `train.eval` (`evaluator.py`), which
the trainer runs during training too.

    python -m train.evaluate --checkpoint RUN/checkpoints/latest.pt \\
        --imagefolder imagenet/val --classnames imagenet --templates imagenet
    python -m train.evaluate --checkpoint CKPT --shards held-out/ --out metrics.json
    python -m train.evaluate --checkpoint CKPT --suite pipelines/evals/datacomp.yaml --out DIR

A suite (train/eval/suite.py) prints one table (dataset, metric, value, chance) and the mean
over its classification sets, and writes DIR/results.json and DIR/suite.png.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from train.config import EvalConfig, TrainConfig
from train.dist import World
from train.eval import report as suite_report, retrieval, zeroshot
from train.eval.evaluator import build_evaluator, probe_imagefolders
from train.model.clip import load
from train.model.encode import Encoder
from wit.formats import atomic
from wit.formats.errors import WitError
from wit.formats.flags import option, run_command

PROG = "python -m train.evaluate"


def evaluate(args: EvaluateConfig) -> dict:
    """The CLI's work: load the checkpoint, run the requested evaluations, return the report."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load(args.checkpoint, device)
    world = World(0, 1, 0, device)
    zeroshot_folder = args.imagefolder if args.classnames else None
    cfg = EvalConfig(imagefolder=zeroshot_folder, classnames=args.classnames, templates=args.templates,
                     shards=args.shards, batch_size=args.batch_size, max_samples=args.max_samples, suite=args.suite)
    evaluator = build_evaluator(cfg, world, loaded.tokenizer, loaded.image_size, loaded.mean, loaded.std,
                                args.max_pixels, progress=True, strict=args.strict, keep=False)
    metrics = evaluator.run(loaded.model)
    if args.linear_probe:
        encoder = Encoder(device, args.batch_size, loaded.mean, loaded.std, progress=True)
        metrics.update(probe_imagefolders(loaded.model, args.train_imagefolder, args.imagefolder,
                                          loaded.image_size, args.max_pixels, encoder))
    report = {"checkpoint": str(args.checkpoint), "model": loaded.name, "step": loaded.step}
    if args.suite:
        return {**report, **suite_report.results(evaluator.tasks[0], metrics)}
    return {**report, "metrics": metrics}


def write_suite(report: dict, out: Path) -> None:
    """OUT/results.json and OUT/suite.png."""
    write_json(str(out / "results.json"), report)
    try:
        suite_report.plot(report, out / "suite.png")
    except OSError as e:
        raise WitError(f"{out / 'suite.png'}: cannot write the plot ({e.strerror or e})") from None


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


@dataclass(frozen=True)
class EvaluateConfig:
    """One `python -m train.evaluate` run."""

    checkpoint: str = option(help="a trainer checkpoint (RUN/checkpoints/*.pt, or an fsdp run's step dir)",
                             metavar="CKPT")
    imagefolder: str | None = option(None, "zero-shot (and linear probe test) images: one subdirectory per class")
    classnames: str | None = option(None, "one class name per line, in sorted class folder order; 'imagenet' for "
                                          "OpenCLIP's ImageNet class names")
    templates: str | None = option(None, "prompt templates, one per line with {} for the class name; 'imagenet' for "
                                         "the paper's 80 (default: 'a photo of a {}.')")
    shards: str | None = option(None, "held-out shards for retrieval: a SHARDS dir or a brace pattern")
    max_samples: int = option(EvalConfig.max_samples, "retrieval uses the first N samples")
    linear_probe: bool = option(False, "also fit a linear probe (needs --train-imagefolder)")
    train_imagefolder: str | None = option(None, "the linear probe's training images, same class folders")
    batch_size: int = option(EvalConfig.batch_size, "images or texts per model call")
    max_pixels: int = option(TrainConfig.max_pixels, "larger images are skipped")
    suite: str | None = option(None, "an evaluation suite (SUITE.yaml, see train/eval/suite.py); not with the flags "
                                     "above")
    strict: bool = option(False, "a suite's missing dataset is an error (default: skipped)")
    out: str | None = option(None, "write the metrics to this JSON file (with --suite: a directory for results.json "
                                   "and suite.png, default eval-<suite name>)")

    def __post_init__(self) -> None:
        if self.suite and (self.imagefolder or self.shards or self.linear_probe):
            raise WitError("--suite runs alone: not with --imagefolder, --shards or --linear-probe")
        if not self.imagefolder and not self.shards and not self.suite:
            raise WitError("give --imagefolder DIR --classnames FILE, and/or --shards GLOB, or --suite SUITE.yaml")
        if self.imagefolder and not self.classnames and not self.linear_probe:
            raise WitError("--imagefolder needs --classnames (or --linear-probe)")
        if self.linear_probe and not (self.imagefolder and self.train_imagefolder):
            raise WitError("--linear-probe needs --train-imagefolder and --imagefolder (the test images)")
        if self.batch_size < 1 or self.max_samples < 1:
            raise WitError("--batch-size and --max-samples must be at least 1")


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, __doc__, EvaluateConfig, _run, argv)


def _run(args: EvaluateConfig) -> int:
    try:
        report = evaluate(args)
        if args.suite:
            out = Path(args.out or f"eval-{Path(args.suite).stem}")
            write_suite(report, out)
        elif args.out:
            write_json(args.out, report)
    except WitError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    if args.suite:
        print(f"{report['checkpoint']}: {report['model']} at step {report['step']}\n{suite_report.table(report)}\n"
              f"results: {out / 'results.json'}, plot: {out / 'suite.png'}")
    else:
        print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
