"""Evaluation: the zero-shot, retrieval and linear-probe math on inputs whose answer is known
by construction; the CLI against a direct computation with a real (tiny) OpenCLIP model;
the evaluator spread over two real processes; one-line errors for bad inputs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from tests.cli import REPO, assert_one_line_error, free_port, run_module
from tests.support.images import COLOURS, drawing, write_imagefolder
from tests.support.shards import write_shards
from train.data import preprocess as images
from train.eval import linear_probe
from train.eval import retrieval
from train.eval import zeroshot
from train.config import EvalConfig
from train.dist import World
from train.eval.evaluator import build_evaluator
from train.evaluate import main
from train.model.clip import load
from train.data.stream import read_samples
from train.data.shards import list_shards
from wit.formats.errors import WitError

PROG = "python -m train.evaluate"
CPU = World(0, 1, 0, torch.device("cpu"))


@pytest.fixture
def folder(tmp_path):
    """An ImageFolder of the four colours, three images each, plus one undecodable file;
    its class names file and a templates file (with a blank line)."""
    root = write_imagefolder(tmp_path / "val", COLOURS, per_class=3, seed=1)
    (root / "green" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "classes.txt").write_text("".join(f"{name} colour\n" for name in sorted(COLOURS)))
    (tmp_path / "templates.txt").write_text("a photo of a {}.\n\na drawing of the {}\n")
    return root


def run_cli(capsys, *args) -> tuple[dict, str]:
    """The CLI in this process: (metrics from --out, stdout)."""
    out = args[args.index("--out") + 1]
    assert main([str(a) for a in args]) == 0
    return json.loads(Path(out).read_text())["metrics"], capsys.readouterr().out


def decoded(paths, size) -> torch.Tensor:
    return torch.stack([images.decode(p.read_bytes(), size, 10**8) for p in paths])


# --- the math, on hand-made features ------------------------------------------------------

def test_classifier_is_the_renormalised_mean_of_normalised_prompt_features():
    classes, templates, dim = 3, 4, 8
    features = torch.randn(classes * templates, dim) * torch.linspace(0.1, 10, classes * templates)[:, None]
    weights = zeroshot.classifier(features, classes)
    for c in range(classes):
        rows = [features[c * templates + t] / features[c * templates + t].norm() for t in range(templates)]
        mean = sum(rows) / templates
        assert torch.allclose(weights[c], mean / mean.norm(), atol=1e-6)
    plain = F.normalize(features.view(classes, templates, dim).mean(1), dim=-1)   # without the inner normalisation
    assert not torch.allclose(weights, plain, atol=1e-3)


def test_prompts_are_class_major_and_templates_fill_the_class_name(tmp_path):
    (tmp_path / "t.txt").write_text("a {} photo\nthe {}, again\n")
    templates = zeroshot.read_templates(str(tmp_path / "t.txt"))
    assert zeroshot.prompts(["cat", "dog"], templates) == ["a cat photo", "the cat, again",
                                                           "a dog photo", "the dog, again"]
    assert zeroshot.prompts(["cat"], zeroshot.read_templates(None)) == ["a photo of a cat."]
    imagenet = zeroshot.read_templates("imagenet")
    assert len(imagenet) == 80 and all("dog" in t("dog") for t in imagenet)


def test_topk_counts_ties_against_the_true_class():
    weights = torch.eye(4)                       # scores = image features
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.0],    # label 0: first
                           [0.9, 0.8, 0.1, 0.0],    # label 1: second
                           [0.5, 0.5, 0.5, 0.1],    # label 2: tied with two others -> third
                           [0.4, 0.3, 0.2, 0.1]])   # label 3: last
    correct = zeroshot.correct_at(scores, weights, torch.tensor([0, 1, 2, 3]), (1, 2, 3, 4))
    assert correct == {1: 1, 2: 2, 3: 3, 4: 4}


def test_recall_of_identical_features_is_one_and_of_a_permutation_is_the_fixed_share():
    features = torch.eye(12)
    assert all(v == 1.0 for v in retrieval.recall_at_k(features, features).values())
    permuted = features[[0, 1, 2, 4, 5, 3, 7, 8, 9, 10, 11, 6]]     # captions 3..11 belong to other images
    recalls = retrieval.recall_at_k(features, permuted)
    assert recalls["i2t_r1"] == recalls["t2i_r1"] == 3 / 12
    assert recalls["i2t_r10"] == 3 / 12          # a missing positive scores 0, tied with 10 others: never found


def test_recall_at_k_follows_the_rank_of_the_positive():
    """Row i of the similarity has exactly i captions above its own: recall@k = k / N."""
    n = 12
    similarity = torch.zeros(n, n)
    for i in range(n):
        similarity[i, i] = 0.5
        others = [j for j in range(n) if j != i][:i]
        similarity[i, others] = 1.0
    recalls = retrieval.recall_at_k(similarity, torch.eye(n))   # image features @ eye = similarity
    assert [recalls[f"i2t_r{k}"] for k in (1, 5, 10)] == [1 / n, 5 / n, 10 / n]
    assert [retrieval.recall_at_k(torch.eye(n), similarity)[f"t2i_r{k}"] for k in (1, 5, 10)] == [1 / n, 5 / n, 10 / n]
    flat = torch.ones(n, 4)
    assert retrieval.recall_at_k(flat, flat)["i2t_r1"] == 0.0   # a degenerate model finds nothing


def test_positive_rank_does_not_depend_on_the_chunk():
    queries, keys = F.normalize(torch.randn(50, 8), dim=-1), F.normalize(torch.randn(50, 8), dim=-1)
    assert torch.equal(retrieval.positive_rank(queries, keys, chunk=7), retrieval.positive_rank(queries, keys))


def test_stratified_split_holds_out_a_fifth_of_each_class_deterministically():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1)
    train, val = linear_probe.stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, val])) == list(range(16))
    assert [int((labels[val] == c).sum()) for c in range(3)] == [2, 1, 0]
    again = linear_probe.stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])


def test_linear_probe_separates_separable_features_and_picks_c_on_the_grid():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3

    def draw(per_class):
        x = np.concatenate([c + rng.normal(size=(per_class, 16)) * 0.3 for c in centres])
        return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(3), per_class)

    result = linear_probe.probe(*draw(20), *draw(10))
    assert result.top1 == 1.0 and result.val_top1 == 1.0
    exponent = math.log10(result.C) * 8
    assert abs(exponent - round(exponent)) < 1e-6 and -48 <= round(exponent) <= 48


# --- the command, against a direct computation --------------------------------------------

def test_zeroshot_matches_a_direct_computation(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    metrics, stdout = run_cli(capsys, "--checkpoint", checkpoint, "--imagefolder", folder, "--classnames",
                              tmp_path / "classes.txt", "--templates", tmp_path / "templates.txt", "--out", out)
    loaded = load(checkpoint)
    classes = sorted(COLOURS)
    paths = [p for c in classes for p in sorted((folder / c).iterdir()) if p.name != "broken.jpg"]
    labels = torch.tensor([classes.index(p.parent.name) for p in paths])
    with torch.no_grad():
        image_features = F.normalize(loaded.model.encode_image(
            images.normalize(decoded(paths, loaded.image_size), loaded.mean, loaded.std)), dim=-1)
        rows = []
        for name in classes:
            prompts = [f"a photo of a {name} colour.", f"a drawing of the {name} colour"]
            per_prompt = F.normalize(loaded.model.encode_text(loaded.tokenizer(prompts)), dim=-1)
            rows.append(F.normalize(per_prompt.mean(0), dim=0))
    scores = image_features @ torch.stack(rows).T
    assert metrics["zeroshot_top1"] == int((scores.argmax(1) == labels).sum()) / len(labels)
    assert metrics["zeroshot_top1"] >= 0.75 > metrics["zeroshot_chance"]   # the model knows its colours
    assert metrics["zeroshot_top4"] == 1.0 and "zeroshot_top5" not in metrics   # k = min(5, classes)
    assert (metrics["zeroshot_images"], metrics["zeroshot_undecodable"], metrics["zeroshot_chance"]) == (12, 1, 0.25)
    assert "top-1" in stdout and "1 undecodable" in stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []     # no temporary file left


def test_retrieval_matches_a_direct_computation(checkpoint, tmp_path, capsys):
    keys = write_shards(tmp_path / "shards", [5, 4], broken={"000000002"}, no_text={"000000006"}, image=drawing)
    metrics, stdout = run_cli(capsys, "--checkpoint", checkpoint, "--shards", tmp_path / "shards",
                              "--out", tmp_path / "m.json")
    assert (metrics["retrieval_pairs"], metrics["retrieval_skipped"]) == (7, 2)
    assert metrics["i2t_r10"] == metrics["t2i_r10"] == 1.0          # 7 pairs: the positive is always in the top 10
    loaded = load(checkpoint)
    samples = [s for shard in list_shards(str(tmp_path / "shards")) for s in read_samples(shard.url)
               if s.key not in ("000000002", "000000006")]
    assert [s.key for s in samples] == [k for k in keys if k not in ("000000002", "000000006")]
    with torch.no_grad():
        pixels = torch.stack([images.decode(s.image, loaded.image_size, 10**8) for s in samples])
        image_features = loaded.model.encode_image(images.normalize(pixels, loaded.mean, loaded.std), normalize=True)
        text_features = loaded.model.encode_text(loaded.tokenizer([s.text for s in samples]), normalize=True)
    similarity = image_features @ text_features.T
    own = torch.arange(len(samples))
    assert metrics["i2t_r1"] == int((similarity.argmax(1) == own).sum()) / len(samples)
    assert metrics["t2i_r1"] == int((similarity.argmax(0) == own).sum()) / len(samples)
    i2t_r5 = int((similarity.topk(5, dim=1).indices == own[:, None]).any(1).sum()) / len(samples)
    assert metrics["i2t_r5"] == i2t_r5
    assert "image->text" in stdout and "7 pairs" in stdout

    limited, _ = run_cli(capsys, "--checkpoint", checkpoint, "--shards", f"{tmp_path}/shards/{{000000..000001}}.tar",
                         "--max-samples", 4, "--out", tmp_path / "m4.json")
    assert (limited["retrieval_pairs"], limited["retrieval_skipped"]) == (3, 1)   # samples 0..3, sample 2 broken


def test_linear_probe_on_frozen_features(checkpoint, tmp_path, capsys):
    train_dir = write_imagefolder(tmp_path / "train", COLOURS, per_class=6, seed=2)
    test_dir = write_imagefolder(tmp_path / "test", COLOURS, per_class=3, seed=3)
    metrics, stdout = run_cli(capsys, "--checkpoint", checkpoint, "--linear-probe", "--train-imagefolder", train_dir,
                              "--imagefolder", test_dir, "--out", tmp_path / "m.json")
    assert "zeroshot_top1" not in metrics and "linear probe" in stdout
    assert (metrics["linear_probe_train_images"], metrics["linear_probe_test_images"]) == (24, 12)
    exponent = math.log10(metrics["linear_probe_C"]) * 8
    assert abs(exponent - round(exponent)) < 1e-6 and -48 <= round(exponent) <= 48
    loaded = load(checkpoint)

    def features(root):
        paths = sorted(root.glob("*/*"))
        with torch.no_grad():
            x = loaded.model.encode_image(images.normalize(decoded(paths, loaded.image_size), loaded.mean,
                                                           loaded.std), normalize=True)
        return x.numpy(), np.array([sorted(COLOURS).index(p.parent.name) for p in paths])

    refit = LogisticRegression(C=metrics["linear_probe_C"], solver="lbfgs", max_iter=1000).fit(*features(train_dir))
    assert metrics["linear_probe_top1"] == pytest.approx(refit.score(*features(test_dir)))
    assert metrics["linear_probe_top1"] >= 0.75   # distinct colours stay separable in a random ViT's features


# --- the evaluator of the training run -----------------------------------------------------

def eval_config(folder, tmp_path) -> EvalConfig:
    return EvalConfig(imagefolder=str(folder), classnames=str(tmp_path / "classes.txt"),
                      templates=str(tmp_path / "templates.txt"), shards=str(tmp_path / "shards"), batch_size=4)


def test_evaluator_restores_the_training_mode_and_reuses_its_data(checkpoint, folder, tmp_path):
    write_shards(tmp_path / "shards", [6], image=drawing)
    loaded = load(checkpoint)
    evaluator = build_evaluator(eval_config(folder, tmp_path), CPU, loaded.tokenizer, loaded.image_size,
                                loaded.mean, loaded.std, 10**8)
    (folder / "red" / "00.jpg").unlink()      # prepared at construction: later runs do not read the files
    seen = []                                 # (grad enabled, training) inside each forward of the towers
    for tower in (loaded.model.visual, loaded.model.transformer):
        tower.register_forward_hook(lambda module, *_: seen.append((torch.is_grad_enabled(), module.training)))
    loaded.model.train()
    first = evaluator.run(loaded.model)
    assert loaded.model.training and seen and set(seen) == {(False, False)}
    loaded.model.eval()
    assert evaluator.run(loaded.model) == first and not loaded.model.training
    assert first["zeroshot_images"] == 12 and first["retrieval_pairs"] == 6
    disabled = build_evaluator(EvalConfig(), CPU, loaded.tokenizer, 32, loaded.mean, loaded.std, 10**8)
    assert disabled.run(loaded.model) == {}


@pytest.mark.slow
def test_two_ranks_return_the_metrics_of_one_process(checkpoint, tmp_path):
    root = write_imagefolder(tmp_path / "val", COLOURS, per_class=2, seed=4)   # 8 images, 8 prompts, 8 pairs:
    (tmp_path / "classes.txt").write_text("".join(f"{c}\n" for c in sorted(COLOURS)))   # with batch 4, each rank
    (tmp_path / "templates.txt").write_text("a photo of a {}.\na {} thing\n")            # holds whole batches
    write_shards(tmp_path / "shards", [5, 3], image=drawing)
    cfg = eval_config(root, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.train.eval.eval_worker", str(checkpoint),
                                 json.dumps(dataclasses.asdict(cfg)), str(tmp_path / f"rank{rank}.json")],
                                cwd=REPO, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
    loaded = load(checkpoint)
    single = build_evaluator(cfg, CPU, loaded.tokenizer, loaded.image_size, loaded.mean, loaded.std, 10**8)
    expected = single.run(loaded.model)
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for report in reports:
        assert report["metrics"] == expected
        assert report["local"] == {"images": 4, "prompts": 4, "pairs": 4}     # each rank encoded half


# --- bad input: one line, exit status 1 -----------------------------------------------------

@pytest.mark.slow
def test_class_names_count_mismatch_is_one_line_error(checkpoint, folder, tmp_path):
    (tmp_path / "three.txt").write_text("red\ngreen\nblue\n")
    result = run_module("train.evaluate", "--checkpoint", checkpoint, "--imagefolder", folder,
                        "--classnames", tmp_path / "three.txt")
    assert_one_line_error(result, PROG, tmp_path / "three.txt", "3 class names", "4 class folders")


@pytest.mark.slow
def test_template_without_placeholder_is_one_line_error(checkpoint, folder, tmp_path):
    (tmp_path / "bad.txt").write_text("a photo of a {}.\na photo of something\n")
    result = run_module("train.evaluate", "--checkpoint", checkpoint, "--imagefolder", folder,
                        "--classnames", tmp_path / "classes.txt", "--templates", tmp_path / "bad.txt")
    assert_one_line_error(result, PROG, tmp_path / "bad.txt", "line 2")


@pytest.mark.slow
def test_missing_checkpoint_is_one_line_error(folder, tmp_path):
    result = run_module("train.evaluate", "--checkpoint", tmp_path / "nope.pt", "--imagefolder", folder,
                        "--classnames", tmp_path / "classes.txt")
    assert_one_line_error(result, PROG, tmp_path / "nope.pt", "no such checkpoint")
    assert not (tmp_path / "nope.pt").exists()


def test_bad_folders_are_one_line_errors_naming_them(checkpoint, tmp_path):
    loaded = load(checkpoint)
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "names.txt").write_text("cat\n")
    for folder, fragment in ((tmp_path / "missing", "no such directory"), (tmp_path / "empty" / "cats", "no class"),
                             (tmp_path / "empty", "no image files")):
        cfg = EvalConfig(imagefolder=str(folder), classnames=str(tmp_path / "names.txt"))
        with pytest.raises(WitError, match=fragment) as e:
            build_evaluator(cfg, CPU, loaded.tokenizer, 32, loaded.mean, loaded.std, 10**8)
        assert str(folder) in str(e.value)
