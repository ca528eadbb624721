"""Multilingual evaluation suites: a retrieval set whose captions carry their language
(LANG.txt members), the XM3600 layout (captions.jsonl and CLIP_benchmark's per-language
files), classification with class names and templates per language; each language's
numbers against the same set evaluated alone in that language, the mean, two ranks
against one, clip-benchmark's translated lists, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli import assert_one_line_error, run_module
from tests.train.eval.suite_worker import run_ranks
from tests.support.images import COLOURS, drawn_image, write_imagefolder
from train.config import EvalConfig
from train.dist import World
from train.eval import prompt_lists
from train.eval.evaluator import build_evaluator
from train.evaluate import main
from train.model.clip import load
from wit.formats.evalsets import open_evalset
from wit.formats.tars import write_tar

PROG = "python -m train.evaluate"
NAMES = sorted(COLOURS)
ITALIAN = {"blue": "blu", "green": "verde", "red": "rosso", "yellow": "giallo"}
CJK = range(0x3040, 0xA000)


def write_wds(root: Path, samples: list[list[tuple[str, bytes]]], per_shard: int = 4) -> Path:
    (root / "test").mkdir(parents=True)
    for shard, start in enumerate(range(0, len(samples), per_shard)):
        with open(root / "test" / f"{shard}.tar", "wb") as out:
            write_tar(out, [(f"s{start + i:05d}", parts) for i, parts in enumerate(samples[start:start + per_shard])])
    (root / "dataset_type.txt").write_text("retrieval\n")
    return root


def captions(i: int) -> dict[str, list[str]]:
    """Image i's captions per language: English for every image, Italian for most (not 2 and 7)."""
    name = NAMES[i % 4]
    found = {"en": [f"a photo of a {name} colour, {i}.", f"the {name} colour {i}"][:1 + i % 2]}
    if i not in (2, 7):
        found["it"] = [f"una foto del colore {ITALIAN[name]}, {i}."]
    return found


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    rng = np.random.default_rng(5)
    return [drawn_image(COLOURS[NAMES[i % 4]], rng) for i in range(11)]


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory, images) -> Path:
    """A retrieval set: en.txt and it.txt members (and a plain txt, of no language, on two)."""
    samples = []
    for i, image in enumerate(images):
        parts = [("jpg", image), *((f"{lang}.txt", "\n".join(texts).encode()) for lang, texts in captions(i).items())]
        if i % 5 == 0:
            parts.append(("txt", f"picture number {i}".encode()))
        samples.append(parts)
    return write_wds(tmp_path_factory.mktemp("sets") / "multilingual", samples)


def run_suite(capsys, checkpoint, text: str, tmp_path: Path, name: str) -> tuple[dict, str]:
    (tmp_path / f"{name}.yaml").write_text(text)
    assert main(["--checkpoint", str(checkpoint), "--suite", str(tmp_path / f"{name}.yaml"),
                 "--out", str(tmp_path / name)]) == 0
    return json.loads((tmp_path / name / "results.json").read_text()), capsys.readouterr().out


def alone(capsys, checkpoint, images, lang: str, tmp_path: Path) -> dict:
    """The images with captions in `lang`, those captions as plain txt: a one-language set."""
    samples = [[("jpg", image), ("txt", "\n".join(captions(i)[lang]).encode())]
               for i, image in enumerate(images) if lang in captions(i)]
    root = write_wds(tmp_path / f"alone_{lang}", samples)
    report, _ = run_suite(capsys, checkpoint, f"datasets:\n  - {{name: one, path: {root}}}\n", tmp_path, f"one_{lang}")
    [dataset] = report["datasets"]
    return dataset


def test_retrieval_per_language_equals_each_language_evaluated_alone(checkpoint, multilingual, images, tmp_path,
                                                                     capsys):
    report, stdout = run_suite(capsys, checkpoint, f"datasets:\n  - {{name: ml, path: {multilingual}}}\n",
                               tmp_path, "ml")
    [dataset] = report["datasets"]
    assert set(dataset["languages"]) == {"en", "it"}     # every language the set holds
    for lang, found in dataset["languages"].items():
        single = alone(capsys, checkpoint, images, lang, tmp_path)
        metrics = {k: v for k, v in single["metrics"].items() if k != "retrieval_skipped"}
        assert found["metrics"] == pytest.approx(metrics) and found["value"] == pytest.approx(single["value"])
        assert found["chance"] == single["chance"] == 1 / metrics["retrieval_images"]
    assert dataset["languages"]["it"]["metrics"]["retrieval_images"] == 9
    assert dataset["languages"]["en"]["metrics"]["retrieval_pairs"] == 16
    assert dataset["value"] == pytest.approx(np.mean([v["value"] for v in dataset["languages"].values()]))
    whole = dataset["metrics"]    # every caption together, the plain ones included
    assert (whole["retrieval_images"], whole["retrieval_pairs"]) == (11, 16 + 9 + 3)
    assert dataset["languages"]["en"]["metrics"]["i2t_r1"] > 1 / 11   # the model reads English colour names
    for lang in ("en", "it"):
        row = next(line.split() for line in stdout.splitlines() if line.strip().startswith(f"ml/{lang} "))
        assert row[-2:] == [f"{dataset['languages'][lang]['value']:.2%}", f"{dataset['languages'][lang]['chance']:.2%}"]

    listed, _ = run_suite(capsys, checkpoint, f"datasets:\n  - {{name: ml, path: {multilingual}, languages: [it]}}\n",
                          tmp_path, "only_it")
    [only] = listed["datasets"]
    assert list(only["languages"]) == ["it"] and only["value"] == dataset["languages"]["it"]["value"]


def write_xm3600(root: Path, images: list[bytes], first_only: bool = False) -> Path:
    (root / "images").mkdir(parents=True)
    lines = []
    for i, image in enumerate(images):
        key = f"{i:016x}"
        (root / "images" / f"{key}.jpg").write_bytes(image)
        found = {lang: {"caption": texts[:1] if first_only else texts, "caption/tokenized": texts}
                 for lang, texts in captions(i).items()}
        lines.append(json.dumps({"image/key": key, "image/locale": "en", **found}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_xm3600_layout_reads_as_its_captions_in_every_language(checkpoint, multilingual, images, tmp_path, capsys):
    xm = write_xm3600(tmp_path / "xm3600", images)
    wds = write_wds(tmp_path / "wds", [[("jpg", image), *((f"{lang}.txt", "\n".join(t).encode())
                                                          for lang, t in captions(i).items())]
                                       for i, image in enumerate(images)])
    evalset = open_evalset(xm)
    assert (evalset.layout, evalset.kind, evalset.xm3600.languages) == ("xm3600", "retrieval", ["en", "it"])
    samples = list(evalset.samples())
    assert samples[2].captions == captions(2)["en"] and samples[3].languages == ["en", "en", "it"]
    report, _ = run_suite(capsys, checkpoint, f"datasets:\n  - {{name: xm, path: {xm}}}\n"
                                              f"  - {{name: wds, path: {wds}}}\n", tmp_path, "xm")
    xm_result, wds_result = report["datasets"]
    assert xm_result["languages"] == wds_result["languages"] and xm_result["value"] == wds_result["value"]

    # CLIP_benchmark's files, one per language, the first caption of each image, paths from elsewhere
    clip = tmp_path / "clip_benchmark"
    shutil.copytree(xm / "images", clip / "images")
    for lang in ("en", "it"):
        keyed = [(f"/elsewhere/xm3600/images/{i:016x}.jpg", captions(i)[lang][0])
                 for i in range(len(images)) if lang in captions(i)]
        (clip / f"crossmodal3600_captions-{lang}.json").write_text(json.dumps(
            {"image_paths": [p for p, _ in keyed], "annotations": [t for _, t in keyed], "indicies": []}))
    first = write_xm3600(tmp_path / "first", images, first_only=True)
    report, _ = run_suite(capsys, checkpoint, f"datasets:\n  - {{name: clip, path: {clip}}}\n"
                                              f"  - {{name: first, path: {first}}}\n", tmp_path, "clip")
    assert report["datasets"][0]["languages"] == report["datasets"][1]["languages"]

    (first / "images" / f"{3:016x}.jpg").unlink()
    result = run_module("train.evaluate", "--checkpoint", checkpoint, "--suite", tmp_path / "clip.yaml",
                        "--out", tmp_path / "broken")
    assert_one_line_error(result, PROG, first / "images" / f"{3:016x}.jpg", "missing (1 of the 11 images")


def test_classification_per_language_uses_that_languages_names_and_templates(checkpoint, tmp_path, capsys):
    folder = write_imagefolder(tmp_path / "colours", COLOURS, per_class=3, seed=7)
    (folder / "classnames.txt").write_text("".join(f"{n} colour\n" for n in NAMES))
    (folder / "classnames_it.txt").write_text("".join(f"colore {ITALIAN[n]}\n" for n in NAMES))
    (folder / "zeroshot_classification_templates_it.txt").write_text("una foto del {c}.\n")
    report, stdout = run_suite(capsys, checkpoint, f"datasets:\n  - {{name: c, path: {folder}, "
                                                   f"languages: [en, it]}}\n", tmp_path, "both")
    [both] = report["datasets"]
    assert both["classnames"] == {"en": str(folder / "classnames.txt"), "it": str(folder / "classnames_it.txt")}
    assert both["templates"] == {"en": "default", "it": str(folder / "zeroshot_classification_templates_it.txt")}
    for lang, names, templates in (("en", "classnames.txt", None),
                                   ("it", "classnames_it.txt", "zeroshot_classification_templates_it.txt")):
        single = tmp_path / f"single_{lang}"
        shutil.copytree(folder, single, ignore=shutil.ignore_patterns("*_it.txt", "classnames.txt"))
        shutil.copyfile(folder / names, single / "classnames.txt")
        if templates:
            shutil.copyfile(folder / templates, single / "zeroshot_classification_templates.txt")
        result, _ = run_suite(capsys, checkpoint, f"datasets:\n  - {{name: s, path: {single}}}\n", tmp_path, lang)
        [one] = result["datasets"]
        assert both["languages"][lang] == {"value": one["value"], "chance": one["chance"], "metrics": one["metrics"]}
    assert both["languages"]["en"]["value"] >= 0.75 > both["chance"] == 0.25
    assert both["value"] == pytest.approx((both["languages"]["en"]["value"] + both["languages"]["it"]["value"]) / 2)
    assert report["classification_mean"] == both["value"]
    assert "c/it" in stdout and "mean of 2 languages" in stdout

    # the entry's files with {lang}: the same numbers
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("*.txt"))
    for lang, names in (("en", "classnames.txt"), ("it", "classnames_it.txt")):
        shutil.copyfile(folder / names, tmp_path / f"names_{lang}.txt")
    (tmp_path / "templates_en.txt").write_text("a photo of a {}.\n")
    shutil.copyfile(folder / "zeroshot_classification_templates_it.txt", tmp_path / "templates_it.txt")
    entry, _ = run_suite(capsys, checkpoint, f"datasets:\n  - {{name: c, path: {bare}, languages: 'en, it', "
                                             f"classnames: 'names_{{lang}}.txt', templates: 'templates_{{lang}}.txt'}}\n",
                         tmp_path, "entry")
    assert entry["datasets"][0]["languages"] == both["languages"]


def test_clip_benchmark_lists_come_in_its_languages():
    english = prompt_lists.lookup("classnames", "imagenet1k")
    for lang in ("ja", "zh"):   # ImageNet's 1,000 classes (clip-benchmark's jp and cn files)
        names = prompt_lists.lookup("classnames", "imagenet1k", lang)
        templates = prompt_lists.lookup("templates", "imagenet1k", lang)
        assert len(names) == len(english) == 1000
        assert sum(any(ord(ch) in CJK for ch in name) for name in names) > 900
        assert templates and all("{c}" in t for t in templates)
    assert prompt_lists.lookup("classnames", "cifar10", "ja") is None
    assert prompt_lists.lookup("classnames", "imagenet1k", "de") is None   # clip-benchmark has no German lists


@pytest.mark.slow
def test_two_ranks_return_the_per_language_metrics_of_one_process(checkpoint, multilingual, tmp_path):
    (tmp_path / "suite.yaml").write_text(f"datasets:\n  - {{name: ml, path: {multilingual}}}\n")
    cfg = EvalConfig(suite=str(tmp_path / "suite.yaml"), batch_size=4)
    reports = run_ranks(checkpoint, cfg.suite, tmp_path)
    loaded = load(checkpoint)
    expected = build_evaluator(cfg, World(0, 1, 0, torch.device("cpu")), loaded.tokenizer, loaded.image_size,
                               loaded.mean, loaded.std, 10**8).run(loaded.model)
    assert "suite/ml/it/i2t_r1" in expected and "suite/ml/en/value" in expected
    for rank, report in enumerate(reports):
        assert report["metrics"] == pytest.approx(expected, abs=1e-6)
        assert report["local"] == {"ml": 6 - rank}


@pytest.mark.parametrize("entry, fragment", [
    ("{name: a, path: SET, languages: [EN]}", "languages must be a list of language codes"),
    ("{name: a, path: SET, languages: [en, en]}", "listed twice"),
    ("{name: a, path: SET, languages: [en, ja]}", "no captions in ja (languages of the set: en, it)"),
])
def test_bad_languages_are_one_line_errors(checkpoint, multilingual, tmp_path, entry, fragment):
    (tmp_path / "bad.yaml").write_text(f"datasets:\n  - {entry.replace('SET', str(multilingual))}\n")
    result = run_module("train.evaluate", "--checkpoint", checkpoint, "--suite", tmp_path / "bad.yaml",
                        "--out", tmp_path / "out")
    where = tmp_path / "bad.yaml" if "ja" not in entry else multilingual
    assert_one_line_error(result, PROG, where, fragment)


def test_a_language_without_templates_is_a_one_line_error(checkpoint, tmp_path):
    folder = write_imagefolder(tmp_path / "colours", COLOURS, per_class=1, seed=8)
    (folder / "classnames_de.txt").write_text("blau\ngrün\nrot\ngelb\n")
    (tmp_path / "s.yaml").write_text(f"datasets:\n  - {{name: c, path: {folder}, languages: [de]}}\n")
    result = run_module("train.evaluate", "--checkpoint", checkpoint, "--suite", tmp_path / "s.yaml",
                        "--out", tmp_path / "out")
    assert_one_line_error(result, PROG, folder, "no templates in de")
