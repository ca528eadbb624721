"""An evaluation suite: zero-shot classification and retrieval sets named in one YAML file
and run as one evaluator task, every rank holding its share of each set.

    root: ~/datacomp_evals             # optional: where the paths start (~ and $VARS expanded;
                                       # relative to this file; default: its directory)
    datasets:
      - name: cifar10                  # a plain name: the row of the table, the metric keys
        path: wds_cifar10_test         # relative to root: an ImageFolder or the WebDataset layout
        task: zeroshot_classification  # or zeroshot_retrieval (default: the set's dataset_type.txt)
        metric: zeroshot_top1          # the reported value (METRICS); default the first of its task
        classnames: cifar10.txt        # used when the set has no classnames.txt of its own
        templates: templates.txt       # likewise for zeroshot_classification_templates.txt
        clip_benchmark: cifar10        # the key of clip-benchmark's lists (default: name)
        split: test                    # the WebDataset split directory
        languages: [en, ja, zh]        # evaluate per language (Wikipedia codes), and their mean
        skip: why                      # listed in the results, not run

Class names come from the set's own classnames.txt, else the entry's `classnames`, else
clip-benchmark's list for the key; templates likewise, else "a photo of a {}.".

With `languages`, a classification set is evaluated once per language, with that
language's class names (the set's own classnames_LANG.txt, for en also classnames.txt,
else the entry's `classnames` with `{lang}` replaced by LANG, else clip-benchmark's list in
that language: it has ar, en, it, ja and zh) and templates (likewise, from
zeroshot_classification_templates_LANG.txt). A retrieval set whose captions carry their
language (LANG.txt members, XM3600) is evaluated per language over that language's captions,
for every language it holds or only those listed. A set's value is then the mean over its
languages; `suite/<name>/<LANG>/<metric>` gives each."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from train.eval import prompt_lists
from train.eval import zeroshot
from train.dist import World
from train.eval.tasks import ZeroShot, retrieval_on_evalset
from train.model.encode import Encoder
from wit.formats.errors import WitError
from wit.formats.evalsets import CLASSIFICATION, CLASSNAMES, RETRIEVAL, TEMPLATES, EvalSet, open_evalset
from wit.formats.languages import LANGUAGE_CODE

TASKS = {"zeroshot_classification": CLASSIFICATION, "zeroshot_retrieval": RETRIEVAL}
METRICS = {CLASSIFICATION: ("zeroshot_top1", "zeroshot_mean_per_class_recall", "zeroshot_top5"),
           RETRIEVAL: ("mean_recall@1", "i2t_r1", "t2i_r1")}
KEYS = ("name", "path", "task", "metric", "classnames", "templates", "clip_benchmark", "split", "languages", "skip")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PREFIX = "suite/"
MEAN = "suite/classification_mean"   # the mean of the classification sets' values


@dataclass(frozen=True)
class Entry:
    name: str
    path: str                  # resolved against the suite file's directory
    task: str | None = None    # a key of TASKS; None: from the set
    metric: str | None = None
    classnames: str | None = None
    templates: str | None = None
    clip_benchmark: str | None = None
    split: str = "test"
    languages: tuple[str, ...] = ()
    skip: str | None = None

    @property
    def key(self) -> str:
        return self.clip_benchmark or self.name


@dataclass(frozen=True)
class Suite:
    path: str
    entries: tuple[Entry, ...]


def read_suite(path: str | Path) -> Suite:
    """The suite file at `path`, checked; a problem is one line naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise WitError(f"{path}: cannot read the suite ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise WitError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), list) or not raw["datasets"]:
        raise WitError(f"{path}: a suite is a mapping with a non-empty list `datasets`")
    unknown = sorted(set(raw) - {"root", "datasets"})
    if unknown:
        raise WitError(f"{path}: unknown key {unknown[0]!r} (valid: root, datasets)")
    root = os.path.expandvars(os.path.expanduser(str(raw.get("root", "."))))
    if "$" in root:
        raise WitError(f"{path}: root {raw['root']!r} names an unset environment variable")
    entries = [_entry(item, number, path, path.parent / root) for number, item in enumerate(raw["datasets"], 1)]
    names = [e.name for e in entries]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise WitError(f"{path}: dataset name {duplicate!r} appears twice")
    return Suite(str(path), tuple(entries))


def _entry(item, number: int, path: Path, root: Path) -> Entry:
    where = f"{path}: dataset {number}"
    if not isinstance(item, dict):
        raise WitError(f"{where} must be a mapping with name and path")
    unknown = sorted(set(item) - set(KEYS))
    if unknown:
        raise WitError(f"{where}: unknown key {unknown[0]!r} (valid: {', '.join(KEYS)})")
    item = {**item, "languages": _languages(item.get("languages", ()), where)}
    bad = next((k for k, v in item.items() if not isinstance(v, str) and k != "languages"), None)
    if bad or not {"name", "path"} <= set(item):
        raise WitError(f"{where}: needs name and path, every value a string" + (f" ({bad} is not)" if bad else ""))
    if not NAME.fullmatch(item["name"]):
        raise WitError(f"{where}: name {item['name']!r} is not a plain name ({NAME.pattern})")
    if item.get("task", "zeroshot_classification") not in TASKS:
        raise WitError(f"{where}: task {item['task']!r} is not one of {', '.join(TASKS)}")
    metric = item.get("metric")
    allowed = METRICS[TASKS[item["task"]]] if "task" in item else sum(METRICS.values(), ())
    if metric is not None and metric not in allowed:
        raise WitError(f"{where}: metric {metric!r} is not one of {', '.join(allowed)}")
    resolved = {k: str(root / v) for k, v in item.items() if k in ("path", "classnames", "templates")}
    return Entry(**{**item, **resolved})


def _languages(value, where: str) -> tuple[str, ...]:
    """`languages`: a list of language codes (or one string of them, split at commas and spaces)."""
    codes = re.split(r"[\s,]+", value.strip()) if isinstance(value, str) else value
    if not isinstance(codes, (list, tuple)) or not all(isinstance(c, str) and LANGUAGE_CODE.fullmatch(c)
                                                      for c in codes):
        raise WitError(f"{where}: languages must be a list of language codes (en, ja, zh_yue, ...)")
    if len(set(codes)) != len(codes):
        raise WitError(f"{where}: a language is listed twice in languages")
    return tuple(codes)


class Dataset:
    """One set of the suite, prepared: its task per language (ZeroShot sharing one set of
    decoded images, or one Retrieval), the metric it reports, where its class names and
    templates came from. The language None stands for a set evaluated as a whole."""

    def __init__(self, entry: Entry, evalset: EvalSet, world: World, tokenize: Callable, image_size: int,
                 max_pixels: int, encoder: Encoder):
        self.entry, self.kind = entry, evalset.kind
        self.metric = entry.metric or METRICS[self.kind][0]
        if self.metric not in METRICS[self.kind]:
            raise WitError(f"{entry.path}: metric {self.metric} is not one of {', '.join(METRICS[self.kind])} "
                           f"(a {self.kind} set)")
        self.sources: dict = {}
        if self.kind == RETRIEVAL:
            self.task = retrieval_on_evalset(evalset, world, tokenize, image_size, max_pixels, encoder)
            absent = [lang for lang in entry.languages if lang not in self.task.languages]
            if absent:
                found = ", ".join(self.task.languages) or "none"
                raise WitError(f"{entry.path}: no captions in {absent[0]} (languages of the set: {found})")
            self.languages = list(entry.languages or self.task.languages)
            return
        self.languages, self.tasks = list(entry.languages), {}
        for lang in self.languages or [None]:
            names, classnames = class_names(entry, evalset, lang)
            templates, templates_from = prompt_templates(entry, evalset, lang)
            if lang is None:
                self.sources = {"classnames": classnames, "templates": templates_from}
            else:
                self.sources.setdefault("classnames", {})[lang] = classnames
                self.sources.setdefault("templates", {})[lang] = templates_from
            if not self.tasks:
                self.tasks[lang] = ZeroShot(evalset, names, templates, world, tokenize, image_size, max_pixels,
                                            encoder)
                continue
            try:
                self.tasks[lang] = next(iter(self.tasks.values())).with_prompts(names, templates, tokenize)
            except WitError as e:
                raise WitError(f"{classnames}: {e}") from None
        self.task = next(iter(self.tasks.values()))

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        if self.kind == RETRIEVAL:
            metrics = self.task.run(model)
            for lang in (None, *self.languages):
                prefix = f"{lang}/" if lang else ""
                metrics[f"{prefix}mean_recall@1"] = (metrics[f"{prefix}i2t_r1"] + metrics[f"{prefix}t2i_r1"]) / 2
        else:
            metrics = {}
            for lang, task in self.tasks.items():
                metrics.update({(f"{lang}/{k}" if lang else k): v for k, v in task.run(model).items()})
        if not self.languages:
            return {**metrics, "value": self._value(metrics, ""), "chance": self.chance(metrics, "")}
        for lang in self.languages:
            metrics[f"{lang}/value"] = self._value(metrics, f"{lang}/")
            metrics[f"{lang}/chance"] = self.chance(metrics, f"{lang}/")
        return {**metrics, "value": float(np.mean([metrics[f"{lang}/value"] for lang in self.languages])),
                "chance": float(np.mean([metrics[f"{lang}/chance"] for lang in self.languages]))}

    def _value(self, metrics: dict, prefix: str) -> float:
        key = f"zeroshot_top{self.task.k}" if self.metric == "zeroshot_top5" else self.metric   # k = min(5, classes)
        return metrics[prefix + key]

    def chance(self, metrics: dict, prefix: str = "") -> float:
        """A random model's expected value of the metric (in one language, with its prefix)."""
        if self.kind == RETRIEVAL:
            return 1 / metrics[f"{prefix}retrieval_images"]   # recall@1 either way, however many captions an image has
        return (self.task.k if self.metric == "zeroshot_top5" else 1) / metrics[f"{prefix}zeroshot_classes"]


def class_names(entry: Entry, evalset: EvalSet, lang: str | None = None) -> tuple[list[str], str]:
    """The set's own class names, else the entry's file, else clip-benchmark's; with their
    source. In a language: its own classnames_LANG.txt (for en also classnames.txt), the
    entry's file with {lang} filled in, clip-benchmark's list in that language."""
    count = len(evalset.folder.classes) if evalset.folder is not None else None
    own = evalset.language_classnames.get(lang) if lang else None
    if own is not None:
        return own, str(Path(evalset.path) / f"classnames_{lang}.txt")
    if evalset.classnames is not None and lang in (None, "en"):
        return evalset.classnames, str(Path(evalset.path) / CLASSNAMES)
    if entry.classnames:
        path = entry.classnames.replace("{lang}", lang or "en")
        return zeroshot.read_classnames(path, count, evalset.path), path
    names = prompt_lists.lookup("classnames", entry.key, lang or "en")
    if names is None:
        where = f" in {lang}" if lang else ""
        raise WitError(f"{evalset.path}: no {CLASSNAMES if not lang else f'classnames_{lang}.txt'}, no classnames "
                       f"in the suite entry, and clip-benchmark has no class names for {entry.key!r}{where} "
                       f"(set clip_benchmark: KEY)")
    if count is not None and len(names) != count:
        raise WitError(f"{evalset.path}: clip-benchmark's {entry.key!r} has {len(names)} class names "
                       f"for {count} class folders")
    return names, f"clip-benchmark:{entry.key}" + (f":{lang}" if lang else "")


def prompt_templates(entry: Entry, evalset: EvalSet, lang: str | None = None) -> tuple[list[zeroshot.Template], str]:
    """The set's own templates, else the entry's file, else clip-benchmark's, else "a photo of a {}."
    (in a language, as class_names; English's default only for en)."""
    own = evalset.language_templates.get(lang) if lang else None
    if own is not None:
        path = str(Path(evalset.path) / f"zeroshot_classification_templates_{lang}.txt")
        return zeroshot.templates_from(own, path), path
    if evalset.templates is not None and lang in (None, "en"):
        own_file = str(Path(evalset.path) / TEMPLATES)
        return zeroshot.templates_from(evalset.templates, own_file), own_file
    if entry.templates:
        path = entry.templates.replace("{lang}", lang or "en")
        return zeroshot.read_templates(path), path
    listed = prompt_lists.lookup("templates", entry.key, lang or "en")
    if listed is not None:
        source = f"clip-benchmark:{entry.key}" + (f":{lang}" if lang else "")
        return zeroshot.templates_from(listed, source), source
    if lang not in (None, "en"):
        raise WitError(f"{evalset.path}: no templates in {lang} (zeroshot_classification_templates_{lang}.txt, "
                       f"the entry's templates with {{lang}}, or clip-benchmark's)")
    return zeroshot.read_templates(None), "default"


class SuiteTask:
    """The sets of a suite; `run` returns `suite/<name>/<metric>` for each and the mean value
    over the classification sets. With `keep` (training) every set is prepared once, here;
    without, each is prepared when it is run and its data dropped after (the command line)."""

    def __init__(self, suite: Suite, present: list[Entry], missing: list[Entry],
                 prepare: Callable[[Entry], Dataset], keep: bool):
        self.suite, self.present, self.missing, self.prepare, self.keep = suite, present, missing, prepare, keep
        self.datasets = [prepare(entry) for entry in present] if keep else []

    def run(self, model: torch.nn.Module) -> dict[str, float]:
        results: dict[str, float] = {}
        if not self.keep:
            self.datasets = []
        for index, entry in enumerate(self.present):
            dataset = self.datasets[index] if self.keep else self.prepare(entry)
            results.update({f"{PREFIX}{entry.name}/{k}": v for k, v in dataset.run(model).items()})
            if not self.keep:
                dataset.task, dataset.tasks = None, {}   # its images and tokens; what the report needs stays
                self.datasets.append(dataset)
        values = [results[f"{PREFIX}{d.entry.name}/value"] for d in self.datasets if d.kind == CLASSIFICATION]
        if values:
            results[MEAN] = float(np.mean(values))
        return results


def build_suite(path: str, world: World, tokenize: Callable, image_size: int, max_pixels: int, encoder: Encoder,
                strict: bool = False, keep: bool = True) -> SuiteTask:
    """The suite at `path` (every rank must call it); a missing set is skipped with a
    warning, or an error when `strict`. `keep`: see SuiteTask."""
    suite = read_suite(path)
    present, missing = [], []
    for entry in suite.entries:
        if entry.skip:
            continue
        if Path(entry.path).exists():
            present.append(entry)
            continue
        if strict:
            raise WitError(f"{entry.path}: no such evaluation set (dataset {entry.name} of {path})")
        if world.rank == 0:
            print(f"warning: {entry.path}: no such evaluation set, {entry.name} skipped", file=sys.stderr)
        missing.append(entry)

    def prepare(entry: Entry) -> Dataset:
        evalset = open_evalset(entry.path, entry.split)
        if entry.task:
            evalset = _as_task(evalset, TASKS[entry.task])
        return Dataset(entry, evalset, world, tokenize, image_size, max_pixels, encoder)

    return SuiteTask(suite, present, missing, prepare, keep)


def _as_task(evalset: EvalSet, kind: str) -> EvalSet:
    """The set read as `kind` (a WebDataset set without dataset_type.txt can be a retrieval set)."""
    if kind == evalset.kind:
        return evalset
    if evalset.layout != "wds":
        raise WitError(f"{evalset.path}: an ImageFolder is a classification set, not a {kind} set")
    return dataclasses.replace(evalset, kind=kind)
