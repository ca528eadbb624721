"""Evaluation suites: a generated suite of three sets in both layouts (an ImageFolder, a
WebDataset classification set, a WebDataset retrieval set with several captions per image)
against `python -m train.evaluate` run per set and a direct computation; where class names
and templates come from; missing sets; two ranks against one; one-line errors."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli import REPO, assert_one_line_error, run_module
from tests.train.eval.suite_worker import run_ranks
from tests.support.images import COLOURS, drawn_image, write_imagefolder
from train.data import preprocess as images
from train.eval import prompt_lists
from train.eval import suite
from train.config import from_dict
from train.dist import World
from train.eval.evaluator import build_evaluator
from train.evaluate import main
from train.config import EvalConfig
from train.model.clip import load
from wit.formats.errors import WitError
from wit.formats.evalsets import open_evalset
from wit.formats.tars import write_tar

PROG = "python -m train.evaluate"
CPU = World(0, 1, 0, torch.device("cpu"))
NAMES = sorted(COLOURS)


def write_wds(root: Path, samples: list[list[tuple[str, bytes]]], per_shard: int) -> Path:
    """root/test/0.tar, 1.tar, ...: the samples' parts, keys numbered."""
    (root / "test").mkdir(parents=True)
    for shard, start in enumerate(range(0, len(samples), per_shard)):
        with open(root / "test" / f"{shard}.tar", "wb") as out:
            write_tar(out, [(f"s{start + i:05d}", parts) for i, parts in enumerate(samples[start:start + per_shard])])
    (root / "test" / "nshards.txt").write_text(str(shard + 1))
    return root


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Path:
    """sets/: an ImageFolder with its classnames.txt; a WebDataset classification set (cls,
    classnames.txt, {c} templates, three shards); a retrieval set (2 or 3 captions an image,
    one sample without a caption; no two captions alike: a tie counts against the positive);
    suite.yaml naming them and one set that is not there."""
    root = tmp_path_factory.mktemp("sets")
    folder = write_imagefolder(root / "colours", COLOURS, per_class=3, seed=1)
    (folder / "classnames.txt").write_text("".join(f"{n} colour\n" for n in NAMES))
    rng = np.random.default_rng(2)
    labels = [i % 4 for i in range(14)]
    wds = write_wds(root / "wds_colours", [[("jpg", drawn_image(COLOURS[NAMES[c]], rng)), ("cls", str(c).encode())]
                                           for c in labels], per_shard=5)
    (wds / "classnames.txt").write_text("".join(f"{n} colour\n" for n in NAMES))
    (wds / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na drawing of the {c}\n")
    rng = np.random.default_rng(3)
    captioned = []
    for i in range(9):
        name = NAMES[i % 4]
        texts = [f"a photo of a {name} colour, {i}.", f"a drawing of the {name} colour {i}", f"picture {i}"][:2 + i % 2]
        captioned.append([("png", drawn_image(COLOURS[name], rng, "PNG")),
                          ("txt", ("\n".join(texts) if i != 4 else "").encode())])
    retrieval = write_wds(root / "wds_retrieval", captioned, per_shard=4)
    (retrieval / "dataset_type.txt").write_text("retrieval\n")
    (root / "suite.yaml").write_text(
        "datasets:\n"
        "  - {name: colours, path: colours}\n"
        "  - {name: wds-colours, path: wds_colours, metric: zeroshot_mean_per_class_recall}\n"
        "  - {name: retrieval, path: wds_retrieval}\n"
        "  - {name: absent, path: wds_absent_test}\n"
        "  - {name: winogavil, path: winogavil, skip: not a zero-shot task}\n")
    return root


def run_suite(capsys, checkpoint, suite_file, out) -> tuple[dict, str]:
    assert main(["--checkpoint", str(checkpoint), "--suite", str(suite_file), "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text()), capsys.readouterr().out


def test_suite_table_and_results_agree_with_runs_per_set(checkpoint, sets, tmp_path, capsys):
    report, stdout = run_suite(capsys, checkpoint, sets / "suite.yaml", tmp_path / "all")
    by_name = {d["name"]: d for d in report["datasets"]}
    assert list(by_name) == ["colours", "wds-colours", "retrieval"]
    assert report["missing"] == [{"name": "absent", "path": str(sets / "wds_absent_test")}]
    assert report["skipped"] == [{"name": "winogavil", "reason": "not a zero-shot task"}]
    for name, entry in by_name.items():   # the same set alone: the same numbers
        (tmp_path / f"{name}.yaml").write_text(f"datasets:\n  - {{name: {name}, path: {entry['path']}"
                                               f"{', metric: ' + entry['metric']}}}\n")
        alone, _ = run_suite(capsys, checkpoint, tmp_path / f"{name}.yaml", tmp_path / name)
        assert alone["datasets"] == [entry]
        row = next(line.split() for line in stdout.splitlines() if line.startswith(name + " "))
        assert row == [name, entry["metric"], f"{entry['value']:.2%}", f"{entry['chance']:.2%}"]

    assert main(["--checkpoint", str(checkpoint), "--imagefolder", str(sets / "colours"), "--classnames",
                 str(sets / "colours" / "classnames.txt"), "--out", str(tmp_path / "folder.json")]) == 0
    single = json.loads((tmp_path / "folder.json").read_text())["metrics"]
    colours = by_name["colours"]
    assert {k: colours["metrics"][k] for k in single} == single
    assert colours["value"] == single["zeroshot_top1"] >= 0.75 > colours["chance"] == 0.25   # not trivial
    assert colours["classnames"] == str(sets / "colours" / "classnames.txt") and colours["templates"] == "default"

    wds = by_name["wds-colours"]
    assert wds["metrics"]["zeroshot_images"] == 14 and wds["value"] == wds["metrics"]["zeroshot_mean_per_class_recall"]
    assert wds["templates"] == str(sets / "wds_colours" / "zeroshot_classification_templates.txt")
    assert report["classification_mean"] == pytest.approx((colours["value"] + wds["value"]) / 2)
    assert f"mean over 2 classification sets: {report['classification_mean']:.2%}" in stdout
    assert "missing: absent" in stdout and "skipped: winogavil" in stdout
    retrieval = by_name["retrieval"]["metrics"]
    assert (retrieval["retrieval_images"], retrieval["retrieval_pairs"], retrieval["retrieval_skipped"]) == (8, 20, 1)
    assert by_name["retrieval"]["chance"] == 1 / 8
    with Image.open(tmp_path / "all" / "suite.png") as plot:
        assert plot.format == "PNG" and plot.width >= 400


def test_several_captions_per_image_match_a_direct_computation(checkpoint, sets, tmp_path, capsys):
    report, _ = run_suite(capsys, checkpoint, sets / "suite.yaml", tmp_path / "out")
    metrics = next(d for d in report["datasets"] if d["name"] == "retrieval")["metrics"]
    loaded = load(checkpoint)
    samples = [s for s in open_evalset(sets / "wds_retrieval").samples() if s.captions]
    owner = torch.tensor([i for i, s in enumerate(samples) for _ in s.captions])
    with torch.no_grad():
        pixels = torch.stack([images.decode(s.image, loaded.image_size, 10**8) for s in samples])
        image_features = loaded.model.encode_image(images.normalize(pixels, loaded.mean, loaded.std), normalize=True)
        text_features = loaded.model.encode_text(loaded.tokenizer([c for s in samples for c in s.captions]),
                                                 normalize=True)
    similarity = image_features @ text_features.T
    for k in (1, 5):
        i2t = (owner[similarity.topk(k, dim=1).indices] == torch.arange(len(samples))[:, None]).any(1)
        t2i = (similarity.T.topk(k, dim=1).indices == owner[:, None]).any(1)
        assert metrics[f"i2t_r{k}"] == pytest.approx(i2t.float().mean().item())
        assert metrics[f"t2i_r{k}"] == pytest.approx(t2i.float().mean().item())
    assert metrics["mean_recall@1"] == pytest.approx((metrics["i2t_r1"] + metrics["t2i_r1"]) / 2)
    assert metrics["i2t_r1"] > 1 / 8   # the model tells the colours apart


def test_class_names_and_templates_come_from_clip_benchmark_unless_the_set_has_its_own(tmp_path):
    shipped = importlib.metadata.distribution("clip-benchmark").locate_file("clip_benchmark/datasets")
    classnames = json.loads((shipped / "en_classnames.json").read_text())["kitti_closest_vehicle_distance"]
    templates = json.loads((shipped / "en_zeroshot_classification_templates.json").read_text())
    folder = write_imagefolder(tmp_path / "kitti", dict(zip("abcd", COLOURS.values())), per_class=1)
    entry = suite.Entry("kitti_closest_vehicle_distance", str(folder))
    evalset = open_evalset(folder)
    names, source = suite.class_names(entry, evalset)
    assert (names, source) == (classnames, "clip-benchmark:kitti_closest_vehicle_distance")
    filled, source = suite.prompt_templates(entry, evalset)
    assert [t("X") for t in filled] == [t.replace("{c}", "X") for t in templates["kitti_closest_vehicle_distance"]]

    renamed = suite.Entry("kitti", str(folder), clip_benchmark="kitti_closest_vehicle_distance")
    assert suite.class_names(renamed, evalset)[0] == classnames
    (tmp_path / "mine.txt").write_text("w\nx\ny\nz\n")
    assert suite.class_names(suite.Entry("kitti", str(folder), classnames=str(tmp_path / "mine.txt")),
                             evalset)[0] == list("wxyz")
    (folder / "classnames.txt").write_text("one\ntwo\nthree\nfour\n")
    (folder / "zeroshot_classification_templates.txt").write_text("an image of {c}\n")
    evalset = open_evalset(folder)    # the set's own files win over the entry's and clip-benchmark's
    assert suite.class_names(renamed, evalset) == (["one", "two", "three", "four"], str(folder / "classnames.txt"))
    own, _ = suite.prompt_templates(renamed, evalset)
    assert [t("cat") for t in own] == ["an image of cat"]

    unknown = suite.Entry("cifar10", str(tmp_path / "cifar"))     # templates listed, class names not
    (tmp_path / "cifar" / "airplane").mkdir(parents=True)
    (tmp_path / "cifar" / "airplane" / "0.jpg").write_bytes(drawn_image((1, 2, 3), np.random.default_rng(0)))
    cifar = open_evalset(tmp_path / "cifar")
    assert [t("X") for t in suite.prompt_templates(unknown, cifar)[0]] == [t.replace("{c}", "X")
                                                                          for t in templates["cifar10"]]
    with pytest.raises(WitError, match="clip-benchmark has no class names for 'cifar10'") as e:
        suite.class_names(unknown, cifar)
    assert str(tmp_path / "cifar") in str(e.value) and "\n" not in str(e.value)


def test_without_clip_benchmark_a_lookup_says_how_to_install_it(tmp_path, monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    prompt_lists.lists.cache_clear()
    try:
        folder = write_imagefolder(tmp_path / "pets", {"cat": (1, 2, 3)}, per_class=1)
        with pytest.raises(WitError, match="pip install --no-deps clip-benchmark"):
            suite.class_names(suite.Entry("pets", str(folder)), open_evalset(folder))
    finally:
        prompt_lists.lists.cache_clear()


@pytest.mark.slow
def test_two_ranks_return_the_suite_metrics_of_one_process(checkpoint, sets, tmp_path, capsys):
    cfg = EvalConfig(suite=str(sets / "suite.yaml"), batch_size=4)
    reports = run_ranks(checkpoint, cfg.suite, tmp_path)
    loaded = load(checkpoint)
    expected = build_evaluator(cfg, CPU, loaded.tokenizer, loaded.image_size, loaded.mean, loaded.std,
                               10**8).run(loaded.model)
    assert expected["suite/colours/zeroshot_images"] == 12 and suite.MEAN in expected
    cli, _ = run_suite(capsys, checkpoint, sets / "suite.yaml", tmp_path / "cli")   # sets prepared one at a time
    assert {f"suite/{d['name']}/{k}": v for d in cli["datasets"] for k, v in
            {**d["metrics"], "value": d["value"], "chance": d["chance"]}.items()} == \
        {k: v for k, v in expected.items() if k != suite.MEAN}
    for report in reports:
        assert report["metrics"].keys() == expected.keys()
        for key, value in expected.items():
            assert report["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert [r["local"] for r in reports] == [{"colours": 6, "wds-colours": 7, "retrieval": 4},
                                             {"colours": 6, "wds-colours": 7, "retrieval": 4}]


def test_a_config_saved_before_eval_suite_existed_still_loads():
    saved = {"shards": "s", "run_dir": "r", "eval": {"imagefolder": None, "classnames": None, "templates": None,
                                                     "shards": "held-out", "batch_size": 8, "max_samples": 10}}
    cfg = from_dict(saved)
    assert cfg.eval.suite is None and cfg.eval.enabled


# --- bad input: one line, exit status 1 -----------------------------------------------------

@pytest.mark.slow
def test_strict_makes_a_missing_set_an_error(checkpoint, sets):
    result = run_module("train.evaluate", "--checkpoint", checkpoint, "--suite", sets / "suite.yaml", "--strict",
                        "--out", sets / "strict")
    assert_one_line_error(result, PROG, sets / "wds_absent_test", "absent")


@pytest.mark.parametrize("text, fragment", [
    ("datasets: [ {name: a", "not valid YAML"),
    ("datasets: []\n", "non-empty list"),
    ("root: $WIT_TEST_UNSET_VARIABLE\ndatasets:\n  - {name: a, path: x}\n", "unset environment variable"),
    ("datasets:\n  - {name: a, path: x, colour: red}\n", "unknown key 'colour'"),
    ("datasets:\n  - {name: a, path: x, task: captioning}\n", "task 'captioning'"),
    ("datasets:\n  - {name: a, path: x}\n  - {name: a, path: y}\n", "'a' appears twice"),
    ("datasets:\n  - {name: a/b, path: x}\n", "not a plain name"),
    ("datasets:\n  - {name: a, path: x, task: zeroshot_retrieval, metric: zeroshot_top1}\n", "metric"),
])
def test_bad_suite_is_one_line_error_naming_the_file(checkpoint, tmp_path, text, fragment):
    (tmp_path / "bad.yaml").write_text(text)
    result = run_module("train.evaluate", "--checkpoint", checkpoint, "--suite", tmp_path / "bad.yaml",
                        "--out", tmp_path / "out")
    assert_one_line_error(result, PROG, tmp_path / "bad.yaml", fragment)


def test_datacomp_suite_names_its_38_tasks_and_runs_the_sets_present(checkpoint, sets, tmp_path, capsys, monkeypatch):
    datacomp = REPO / "pipelines" / "evals" / "datacomp.yaml"
    monkeypatch.setenv("DATACOMP_EVALS", str(tmp_path / "evals"))
    entries = suite.read_suite(datacomp).entries
    assert len(entries) == 38 and [e.name for e in entries if e.skip] == ["winogavil"]
    assert all(Path(e.path).parent == tmp_path / "evals" for e in entries)
    assert {e.name for e in entries if e.task == "zeroshot_retrieval"} == {"flickr", "mscoco"}
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "wds_cifar10_test").symlink_to(sets / "wds_colours")   # one set downloaded
    report, stdout = run_suite(capsys, checkpoint, datacomp, tmp_path / "out")
    assert [d["name"] for d in report["datasets"]] == ["cifar10"] and len(report["missing"]) == 36
    assert report["classification_mean"] == report["datasets"][0]["value"]
    assert "mean over 1 classification set:" in stdout


def test_root_is_relative_to_the_suite_file_and_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "a.yaml").write_text("root: data\ndatasets:\n  - {name: x, path: x, classnames: x.txt}\n")
    (tmp_path / "b.yaml").write_text("root: ~/evals\ndatasets:\n  - {name: x, path: x}\n")
    [a] = suite.read_suite(tmp_path / "a.yaml").entries
    assert (a.path, a.classnames) == (str(tmp_path / "data" / "x"), str(tmp_path / "data" / "x.txt"))
    assert suite.read_suite(tmp_path / "b.yaml").entries[0].path == str(tmp_path / "home" / "evals" / "x")
