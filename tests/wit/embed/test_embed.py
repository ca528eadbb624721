"""`wit embed` with the tiny OpenCLIP model: the vectors are the Encoder's, a rerun does
nothing, a killed run redoes only its unfinished shards, an OpenCLIP state-dict file
gives the same vectors as the trainer checkpoint of the same weights, bad input is one
line and leaves nothing, and search over the embeddings finds what search without them
finds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from functools import partial

import numpy as np
import pytest
import torch

from tests.support.checkpoints import TINY, write_checkpoint, write_trained_checkpoint
from tests.support.images import drawing
from tests.support.outputs import files, markers
from tests.support.shards import shards_dir
from tests.support.witcli import assert_one_line_error, run_wit, wit_in_process
from train.model import clip as models
from train.data.stream import read_samples
from train.model.encode import Encoder, decode_all, inference
from train.search import main as search_main
from wit.formats.embeddings import read_embeddings

BROKEN, NO_TEXT = "000000003", "000000006"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    shards = shards_dir(root / "shards", [5, 4, 3], broken={BROKEN}, no_text={NO_TEXT}, image=drawing)
    return root, shards, write_trained_checkpoint(root / "ckpt.pt")


def embed(*args, **kwargs):
    result = run_wit("embed", *args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_embeddings_are_the_encoders_features_and_a_rerun_does_nothing(inputs, tmp_path):
    root, shards, checkpoint = inputs
    out = tmp_path / "E"
    first = embed("--checkpoint", checkpoint, "--shards", shards, "--out", out, "--batch-size", 3, "--workers", 2)
    assert "12 samples in 3 shards (1 without a usable image, 1 without a text)" in first.stderr
    table = read_embeddings(str(out), str(shards))
    samples = [s for n in range(3) for s in read_samples(str(shards / f"{n:06d}.tar"))]
    assert table["uid"].to_pylist() == [s.key for s in samples]

    loaded = models.load(checkpoint)
    encoder = Encoder(torch.device("cpu"), 64, loaded.mean, loaded.std)
    pixels, kept = decode_all([s.image for s in samples], loaded.image_size, 10**8)
    with inference(loaded.model):
        image = encoder.images(loaded.model, pixels).numpy()
        text = encoder.texts(loaded.model, loaded.tokenizer([s.text for s in samples if s.text is not None])).numpy()
    got_image, got_text = table["image"].to_pylist(), table["text"].to_pylist()
    assert [i for i, v in enumerate(got_image) if v is None] == [int(BROKEN)] and int(BROKEN) not in kept
    assert [i for i, v in enumerate(got_text) if v is None] == [int(NO_TEXT)]
    np.testing.assert_allclose(np.array([got_image[i] for i in kept]), image, atol=1e-5)
    np.testing.assert_allclose(np.array([v for v in got_text if v is not None]), text, atol=1e-5)

    before = files(out)
    again = embed("--checkpoint", checkpoint, "--shards", shards, "--out", out, "--batch-size", 5)
    assert "nothing to do" in again.stderr and files(out) == before


@pytest.mark.slow
def test_bf16_weights_give_the_fp32_vectors_to_bf16_precision(inputs, tmp_path):
    root, shards, checkpoint = inputs
    for precision in ("fp32", "bf16"):
        embed("--checkpoint", checkpoint, "--shards", shards, "--out", tmp_path / precision, "--precision", precision)
    full, half = (read_embeddings(str(tmp_path / p), str(shards)) for p in ("fp32", "bf16"))
    assert json.loads((tmp_path / "bf16" / "embed.json").read_text())["precision"] == "bf16"
    for kind in ("image", "text"):
        pairs = [(a, b) for a, b in zip(full[kind].to_pylist(), half[kind].to_pylist()) if a is not None]
        assert len(pairs) == 11 and all(b is not None for _, b in pairs)
        cosines = np.array([np.dot(a, b) for a, b in pairs])
        assert cosines.min() > 0.995 and not np.allclose([a for a, _ in pairs], [b for _, b in pairs], atol=1e-6)


@pytest.mark.slow
def test_a_killed_run_redoes_only_its_unfinished_shards(tmp_path):
    shards = shards_dir(tmp_path / "shards", [40] * 8, image=lambda n, c: drawing(n, c))
    checkpoint = write_checkpoint(tmp_path / "ckpt.pt")
    out, units = tmp_path / "E", tmp_path / ".E.partial" / ".wit" / "units"
    args = ("--checkpoint", checkpoint, "--shards", shards, "--out", out, "--batch-size", 1, "--workers", 1)
    process = run_wit("embed", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not markers(units) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = markers(units)
    assert 1 <= len(finished) < 8 and not out.exists()

    embed(*args)
    redone = markers(out / ".wit" / "units")
    assert len(redone) == 8 and all(redone[name] == mtime for name, mtime in finished.items())
    clean = tmp_path / "clean"
    embed(*args[:5], clean, *args[6:])                               # the same settings, not interrupted
    assert read_embeddings(str(out)).equals(read_embeddings(str(clean)))


@pytest.mark.slow
def test_an_openclip_state_dict_with_model_gives_the_checkpoints_vectors(inputs, tmp_path):
    root, shards, checkpoint = inputs
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    config = models.write_model_config(TINY, tmp_path)            # RUN/<name>.json, as the trainer writes it
    torch.save(state, tmp_path / "bare.pt")
    torch.save({"epoch": 1, "name": "x", "state_dict": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "open_clip_train.pt")                  # what OpenCLIP's trainer saves
    embed("--checkpoint", checkpoint, "--shards", shards, "--out", tmp_path / "ours")
    ours = read_embeddings(str(tmp_path / "ours"))
    for name in ("bare.pt", "open_clip_train.pt"):
        embed("--checkpoint", tmp_path / name, "--model", config, "--shards", shards, "--out", tmp_path / name[:-3])
        theirs = read_embeddings(str(tmp_path / name[:-3]))
        assert theirs.equals(ours)
        summary = json.loads((tmp_path / name[:-3] / "embed.json").read_text())
        assert summary["model"] == "wit-test-tiny" and summary["dim"] == 32


@pytest.mark.slow
def test_bad_inputs_are_one_line_errors_and_leave_no_output(inputs, tmp_path, capsys):
    root, shards, checkpoint = inputs
    (tmp_path / "plain").mkdir()
    (tmp_path / "other.json").write_text(json.dumps({**TINY.config, "embed_dim": 16}))
    torch.save(torch.load(checkpoint, weights_only=True)["state_dict"], tmp_path / "bare.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cases = [
        (("--checkpoint", tmp_path / "nope.pt", "--shards", shards), [tmp_path / "nope.pt", "no such checkpoint"]),
        (("--checkpoint", checkpoint, "--shards", tmp_path / "plain"), [tmp_path / "plain" / "manifest.json"]),
        (("--checkpoint", tmp_path / "bare.pt", "--model", "ViT-Nope-1", "--shards", shards),
         ["ViT-Nope-1", "not an OpenCLIP model"]),
        (("--checkpoint", tmp_path / "bare.pt", "--model", tmp_path / "other.json", "--shards", shards),
         [tmp_path / "bare.pt", "not weights of the model other"]),
        (("--checkpoint", tmp_path / "junk.pt", "--shards", shards), [tmp_path / "junk.pt", "not a readable"]),
    ]
    for n, (args, fragments) in enumerate(cases):   # the first as a user runs it, the others in this process
        run = run_wit if n == 0 else partial(wit_in_process, capsys)
        result = run("embed", *args, "--out", tmp_path / "E")
        assert_one_line_error(result, "embed", *fragments)
        assert not any(p.name.startswith((".E", "E")) for p in tmp_path.iterdir()), result.stderr


@pytest.mark.slow
def test_search_over_wit_embed_output_gives_the_results_of_its_own_cache(inputs, tmp_path, capsys):
    root, shards, checkpoint = inputs
    embed("--checkpoint", checkpoint, "--shards", shards, "--out", tmp_path / "E")
    (tmp_path / "query.jpg").write_bytes(drawing(6, (30, 180, 30)))

    def search(*args) -> list[str]:
        assert search_main([str(a) for a in args]) == 0
        return capsys.readouterr().out.splitlines()

    for query in (("--text", "a photo of a red colour."), ("--image", tmp_path / "query.jpg")):
        common = ("--checkpoint", checkpoint, "--shards", shards, *query, "--top", 5, "--workers", 0)
        with_cache, with_faiss = search(*common), search(*common, "--embeddings", tmp_path / "E")
        assert with_faiss == with_cache and len(with_faiss) == 5
    everything = search("--checkpoint", checkpoint, "--shards", shards, "--text", "x", "--top", 100,
                        "--embeddings", tmp_path / "E")
    assert len(everything) == 11                                    # 12 samples, one undecodable

    other = write_checkpoint(tmp_path / "other.pt", seed=1)
    assert search_main(["--checkpoint", str(other), "--shards", str(shards), "--text", "x",
                        "--embeddings", str(tmp_path / "E")]) == 1
    assert "embeddings made with another checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_two_ranks_under_torchrun_embed_every_shard_once(inputs, tmp_path):
    from tests.cli import run_module

    root, shards, checkpoint = inputs
    args = ("embed", "--checkpoint", checkpoint, "--shards", shards, "--workers", 1)
    result = run_module("wit", *args, "--out", tmp_path / "two", nproc=2)
    assert result.returncode == 0, result.stderr
    embed(*args[1:], "--out", tmp_path / "one")
    assert read_embeddings(str(tmp_path / "two"), str(shards)).equals(read_embeddings(str(tmp_path / "one")))
    assert len(markers(tmp_path / "two" / ".wit" / "units")) == 3
