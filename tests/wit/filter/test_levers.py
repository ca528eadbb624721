"""`wit filter`'s quality levers on real SHARDS dirs: DataComp's basic filtering (language,
caption words and length, image size and aspect ratio), and embedding heads trained here
on the embeddings `wit embed` made with a real model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.support.checkpoints import write_trained_checkpoint
from tests.support.crawls import Sample, write_download
from tests.support.images import COLOURS, drawn_image, photo, write_imagefolder
from tests.support.witcli import assert_one_line_error, run_wit
from wit.filter.heads import Head, convert_aesthetic, from_dense_layers
from wit.filter.samples import image_size
from wit.filter.semdedup import brute_force, normalised
from wit.formats.embeddings import read_embeddings
from wit.formats.shards import read_manifest
from wit.formats.tars import read_member, scan_tar
from wit.shards.build import ShardConfig, run as shard

# real alt texts, as found on the web, in several languages; the language fastText's lid.176 gives
CAPTIONS = [
    ("en", "A golden retriever puppy playing with a red ball in the garden"),
    ("en", "View of the old harbour at sunset with fishing boats"),
    ("fr", "Vue panoramique de la vieille ville depuis la colline au coucher du soleil"),
    ("de", "Ein kleines Haus am See mit einem hölzernen Steg im Winter"),
    ("es", "Mercado tradicional con frutas y verduras frescas en el centro de la ciudad"),
    ("ja", "京都の清水寺から見た秋の紅葉と街並み"),
    ("zh", "北京故宫博物院的雪景，红墙和金色的屋顶"),
    ("ru", "Красная площадь в Москве ночью с подсветкой собора"),
    ("en", "two words"),            # DataComp: more than 2 words
    ("en", "Red car"),              # and 7 characters
]
# (original width, height as img2dataset found them) -> the rule that removes it under --basic
SIZES = [((640, 480), None), ((199, 400), "min_side"), ((200, 600), None), ((1200, 300), "aspect_ratio"),
         ((300, 901), "aspect_ratio"), ((800, 800), None), ((1024, 200), "aspect_ratio"), ((210, 630), None),
         ((500, 375), None), ((64, 48), "min_side")]


def filter_(*args):
    result = run_wit("filter", *map(str, args), "--workers", "2")
    assert result.returncode == 0, result.stderr
    return result


def removed(out: Path) -> dict[str, dict]:
    return {r["uid"]: r for r in pq.read_table(out / "removed.parquet").to_pylist()}


def kept_json(out: Path) -> dict[str, dict]:
    found = {}
    for entry in read_manifest(str(out))["shards"]:
        path = str(out / entry["name"])
        with open(path, "rb") as f:
            for key, members in scan_tar(path).samples:
                found[key] = json.loads(read_member(f, members["json"]))
    return found


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """A SHARDS dir made by `wit shard`: every caption with every size (language and text
    rules cross the image rules), uids in order."""
    root = tmp_path_factory.mktemp("basic")
    samples = [Sample(f"http://basic.example/{i}-{j}.jpg", text, [i], photo(60_000 + 10 * i + j), size)
               for i, (_, text) in enumerate(CAPTIONS) for j, (size, _) in enumerate(SIZES)]
    crawl = write_download(root / "crawl", [samples[k:k + 50] for k in range(0, len(samples), 50)], queries=10)
    shard(ShardConfig(crawl=str(crawl), out=str(root / "shards"), samples_per_shard=40, workers=2, cap=1000))
    return root / "shards", samples


def test_basic_filtering_counts_each_rule_as_datacomp_does(pool, tmp_path):
    shards, samples = pool
    filter_("--shards", shards, "--out", tmp_path / "out", "--basic")
    found = removed(tmp_path / "out")
    expected = {}
    for i, (lang, text) in enumerate(CAPTIONS):
        for j, (size, rule) in enumerate(SIZES):
            uid = samples[i * len(SIZES) + j].uid
            if lang != "en":
                expected[uid] = ("language", "language", lang)
            elif len(text.split()) < 3:
                expected[uid] = ("text", "min_words", None)
            elif rule:
                expected[uid] = ("image_size", rule, None)
    assert {u: (r["filter"], r["reason"], r["match"]) for u, r in found.items()} == expected
    # the values recorded: the shorter side, the ratio
    by_uid = {s.uid: s for s in samples}
    for uid, row in found.items():
        w, h = by_uid[uid].original
        if row["reason"] == "min_side":
            assert row["value"] == min(w, h)
        if row["reason"] == "aspect_ratio":
            assert row["value"] == pytest.approx(max(w, h) / min(w, h))
    card = json.loads((tmp_path / "out" / "datacard.json").read_text())
    assert card["removed_by_reason"]["language"] == {"language": 60}
    assert card["removed_by_reason"]["image_size"] == {"aspect_ratio": 6, "min_side": 4}
    assert card["totals"]["kept_samples"] == len(samples) - len(expected) == 10


def test_languages_and_text_lengths_each_alone(pool, tmp_path):
    shards, samples = pool
    filter_("--shards", shards, "--out", tmp_path / "langs", "--languages", "fr", "ja", "zh")
    kept = {s.uid for s in samples} - set(removed(tmp_path / "langs"))
    assert kept == {s.uid for s in samples if s.text in {t for lang, t in CAPTIONS if lang in ("fr", "ja", "zh")}}
    assert {r["match"] for r in removed(tmp_path / "langs").values()} == {"en", "de", "es", "ru"}
    filter_("--shards", shards, "--out", tmp_path / "len", "--min-length", "10")
    assert {r["reason"] for r in removed(tmp_path / "len").values()} == {"min_length"}
    assert len(removed(tmp_path / "len")) == 2 * len(SIZES)   # "two words" (9 characters) and "Red car" (7)


def test_image_size_read_from_the_header_when_the_json_has_none():
    """A json without a size (or a zero one): the image header is read, nothing decoded."""
    for size, fmt in (((40, 48), "JPEG"), ((300, 100), "PNG"), ((90, 400), "WEBP")):
        data = _encoded(size, fmt)
        assert image_size({"uid": "x"}, lambda: data) == size
        assert image_size({"original_width": 0, "original_height": 0, "width": 0}, lambda: data) == size
    assert image_size({"original_width": 640, "original_height": 480, "width": 32, "height": 24},
                      lambda: pytest.fail("the header was read")) == (640, 480)
    assert image_size({}, lambda: b"not an image") == (None, None)


def _encoded(size, fmt):
    import io

    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, fmt)
    return buffer.getvalue()


# ---- embedding heads -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Drawn pictures of the four colours in a SHARDS dir made by `wit shard`, embedded by
    `wit embed` with the tiny model fitted to tell the colours apart; the colour of each uid."""
    root = tmp_path_factory.mktemp("heads")
    rng = np.random.default_rng(3)
    names = list(COLOURS)
    samples = [Sample(f"http://heads.example/{n}.png", f"a picture number {n}", [n % 4],
                      drawn_image(COLOURS[names[n % 4]], rng)) for n in range(60)]
    crawl = write_download(root / "crawl", [samples[:30], samples[30:]], queries=4)
    shards = root / "shards"
    shard(ShardConfig(crawl=str(crawl), out=str(shards), samples_per_shard=25, workers=2, cap=1000))
    checkpoint = write_trained_checkpoint(root / "model.pt", steps=30)
    result = run_wit("embed", "--shards", str(shards), "--out", str(root / "embed"), "--checkpoint",
                     str(checkpoint), "--workers", "1")
    assert result.returncode == 0, result.stderr
    return shards, root / "embed", checkpoint, {s.uid: names[n % 4] for n, s in enumerate(samples)}


def train_head(embed: Path, shards: Path, positive: set[str], path: Path, hidden: int = 0) -> Path:
    """A logistic head (Linear, or a small MLP) fitted here to tell `positive` uids' images
    from the others', saved as a plain state dict."""
    table = read_embeddings(str(embed), str(shards))
    x = torch.tensor(np.array(table["image"].to_pylist(), np.float32))
    y = torch.tensor([float(u in positive) for u in table["uid"].to_pylist()])
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 1) if not hidden else torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = {**model.state_dict(), "output": "sigmoid"}
    torch.save(state, path)
    return path


def test_a_trained_head_moves_the_right_samples(embedded, tmp_path):
    shards, embed, _, colour = embedded
    red = {u for u, c in colour.items() if c == "red"}
    head = train_head(embed, shards, red, tmp_path / "redness.pt")
    filter_("--shards", shards, "--out", tmp_path / "out", "--embeddings", embed, "--head", head,
            "--head-max", "0.5")
    found = removed(tmp_path / "out")
    assert set(found) == red
    assert {(r["filter"], r["reason"], r["match"]) for r in found.values()} == {("head", "redness_max", "redness")}
    assert all(r["value"] > 0.5 for r in found.values())
    # the score of every sample: in annotations.parquet, and in each kept sample's json
    notes = {r["uid"]: r["head_redness"] for r in pq.read_table(tmp_path / "out" / "annotations.parquet").to_pylist()}
    assert set(notes) == set(colour) and all((notes[u] > 0.5) == (u in red) for u in notes)
    kept = kept_json(tmp_path / "out")
    assert set(kept) == set(colour) - red
    assert all(kept[u]["heads"]["redness"] == pytest.approx(notes[u], rel=1e-6) for u in kept)


def test_two_heads_an_mlp_and_a_minimum_by_name(embedded, tmp_path):
    shards, embed, _, colour = embedded
    blue = {u for u, c in colour.items() if c == "blue"}
    green = {u for u, c in colour.items() if c == "green"}
    blueness = train_head(embed, shards, blue, tmp_path / "blueness.pt", hidden=8)
    greenness = train_head(embed, shards, green, tmp_path / "greenness.pt")
    filter_("--shards", shards, "--out", tmp_path / "out", "--embeddings", embed, "--head", blueness, greenness,
            "--head-min", "blueness=0.5")
    assert set(removed(tmp_path / "out")) == set(colour) - blue
    kept = kept_json(tmp_path / "out")
    assert set(kept) == blue and all(set(kept[u]["heads"]) == {"blueness", "greenness"} for u in kept)


def test_head_files_in_laion_layouts_load_after_conversion(tmp_path):
    """LAION's aesthetic predictor's layout (Linear and Dropout, no activation, `layers.`)
    and a Keras NSFW detector's Dense layers after a Normalization layer."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 4),
                              torch.nn.Dropout(0.1), torch.nn.Linear(4, 1)).eval()
    holder = torch.nn.Module()
    holder.layers = mlp
    torch.save(convert_aesthetic(holder.state_dict()), tmp_path / "aesthetic.pt")
    x = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    with torch.no_grad():
        assert Head(str(tmp_path / "aesthetic.pt")).score(x.numpy()) == pytest.approx(mlp(x)[:, 0].numpy(), abs=1e-5)
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(8, 6)), rng.normal(size=(6, 1))]
    biases = [rng.normal(size=6), rng.normal(size=1)]
    mean, variance = rng.normal(size=8), rng.uniform(0.5, 2, size=8)
    torch.save(from_dense_layers(kernels, biases, mean, variance), tmp_path / "nsfw.pt")
    v = rng.normal(size=(5, 8)).astype(np.float32)
    hidden = np.maximum(((v - mean) / np.sqrt(variance)) @ kernels[0] + biases[0], 0)
    keras = 1 / (1 + np.exp(-(hidden @ kernels[1] + biases[1])))
    assert Head(str(tmp_path / "nsfw.pt")).score(v) == pytest.approx(keras[:, 0], abs=1e-5)


def test_bad_heads_are_one_line_errors(embedded, tmp_path):
    shards, embed, _, _ = embedded
    torch.save({"0.weight": torch.zeros(1, 7), "0.bias": torch.zeros(1)}, tmp_path / "narrow.pt")
    torch.save({"conv.weight": torch.zeros(1, 3, 3, 3)}, tmp_path / "conv.pt")
    (tmp_path / "pickle.pt").write_bytes(b"not a torch file")
    for head, fragment in (("narrow.pt", "7-dim"), ("conv.pt", "not a Linear"), ("pickle.pt", "weights-only"),
                           ("absent.pt", "no such head file")):
        result = run_wit("filter", "--shards", str(shards), "--out", str(tmp_path / f"out-{head}"), "--embeddings",
                         str(embed), "--head", str(tmp_path / head), "--head-max", "0.5")
        assert_one_line_error(result, "filter", head, fragment)
        assert not (tmp_path / f"out-{head}" / "manifest.json").exists()
    result = run_wit("filter", "--shards", str(shards), "--out", str(tmp_path / "x"), "--head-max", "0.5")
    assert_one_line_error(result, "filter", "--head-max: only with --head")


# ---- image-based clustering and semantic deduplication ------------------------------------


def kept_uids(out: Path) -> set[str]:
    return set(kept_json(out))


def test_image_clusters_keep_the_cluster_near_an_evaluation_set_and_combine_with_clip_score(embedded, tmp_path):
    """An evaluation set of red pictures, embedded by the model: of four clusters, the red
    one is kept. With --clip-score the result is the intersection of the two filters run
    alone (DataComp's best baseline)."""
    shards, embed, checkpoint, colour = embedded
    evalset = write_imagefolder(tmp_path / "eval_red", {"red": COLOURS["red"]}, per_class=6, seed=11)
    common = ["--shards", shards, "--embeddings", embed, "--checkpoint", checkpoint]
    clusters = ["--image-clusters", "4", "--keep-near", evalset]
    filter_(*common, "--out", tmp_path / "near", *clusters)
    red = {u for u, c in colour.items() if c == "red"}
    assert kept_uids(tmp_path / "near") == red
    found = removed(tmp_path / "near")
    assert {(r["filter"], r["reason"]) for r in found.values()} == {("image_clusters", "far_cluster")}
    notes = {r["uid"]: r["image_cluster"] for r in pq.read_table(tmp_path / "near" / "annotations.parquet").to_pylist()}
    assert all(found[u]["match"] == str(notes[u]) for u in found)
    assert len({notes[u] for u in red}) == 1 and all(kept_json(tmp_path / "near")[u]["image_cluster"] == notes[u]
                                                     for u in red)
    score = ["--clip-score", "--keep-fraction", "0.5"]
    filter_(*common, "--out", tmp_path / "score", *score)
    filter_(*common, "--out", tmp_path / "both", *score, *clusters)
    both = kept_uids(tmp_path / "both")
    assert both == kept_uids(tmp_path / "near") & kept_uids(tmp_path / "score") and 0 < len(both) < len(red)


def test_semantic_dedup_removes_what_brute_force_within_its_clusters_removes(embedded, tmp_path):
    """The run's clusters and distances (annotations.parquet) and the embeddings give, pair
    by pair, exactly the samples removed and the twins they matched; reruns are identical."""
    shards, embed, _, colour = embedded
    table = read_embeddings(str(embed), str(shards))
    uids = table["uid"].to_pylist()
    x = normalised(np.array(table["image"].to_pylist(), np.float32))
    cosines = x @ x.T
    np.fill_diagonal(cosines, -1)
    eps = float(1 - np.median(cosines.max(axis=1)))   # about half the samples have a twin that close
    args = ["--shards", shards, "--embeddings", embed, "--semantic-dedup", f"{eps:.6f}", "--semdedup-clusters", "3"]
    filter_(*args, "--out", tmp_path / "out")
    notes = pq.read_table(tmp_path / "out" / "annotations.parquet").to_pylist()
    row = {n["uid"]: i for i, n in enumerate(notes)}
    order = [row[u] for u in uids]
    cluster = np.array([notes[i]["semdedup_cluster"] for i in order])
    distance = np.array([notes[i]["semdedup_distance"] for i in order])
    assert len(set(cluster)) == 3
    # a sample's distance is 1 - its cosine with its cluster's centroid, the members' normalised mean nearly
    for c in set(cluster):
        centre = normalised(x[cluster == c].mean(0, keepdims=True))[0]
        assert np.allclose(distance[cluster == c], 1 - x[cluster == c] @ centre, atol=0.05)
    expected = {uids[r]: uids[m] for r, m in brute_force(x, cluster, distance, float(f"{eps:.6f}")).items()}
    found = removed(tmp_path / "out")
    assert {u: r["match"] for u, r in found.items()} == expected and 0 < len(expected) < len(uids)
    assert {(r["filter"], r["reason"]) for r in found.values()} == {("semantic_dedup", "duplicate")}
    kept = kept_json(tmp_path / "out")
    assert set(kept) == set(uids) - set(expected)
    assert all(kept[u]["semdedup"] == {"cluster": int(cluster[uids.index(u)]),
                                       "distance": pytest.approx(distance[uids.index(u)])} for u in kept)
    filter_(*args, "--out", tmp_path / "again")
    assert (tmp_path / "again" / "removed.parquet").read_bytes() == (tmp_path / "out" / "removed.parquet").read_bytes()
