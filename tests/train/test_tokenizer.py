"""A tokenizer from a local file for the text tower: trained offline on the texts of shards
(`python -m train.tokenizer`, Hugging Face tokenizers or SentencePiece), its vocabulary in
the OpenCLIP text config, recorded in checkpoints (sha256, a copy beside the run) and
loaded back by every path that loads a checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tests.cli import assert_one_line_error, run_module
from tests.support.shards import shards_dir, write_shards
from train.model import clip as models
from train.model.text_tokens import FileTokenizer
from train.tokenizer import TokenizerConfig, shard_texts, train_tokenizer
from wit.formats.embeddings import read_embeddings
from wit.formats.errors import WitError

CAPTIONS = ["a red circle on the left", "赤い丸が左にあります", "左边有一个红色的圆", "un cercle rouge à gauche",
            "two blue squares at the top", "上に青い四角が二つ", "上面有两个蓝色的正方形", "deux carrés bleus en haut"]


@pytest.fixture
def shards(tmp_path) -> Path:
    write_shards(tmp_path / "shards", [8, 8], text=lambda n: CAPTIONS[n % len(CAPTIONS)], captions=2)
    return tmp_path / "shards"


@pytest.mark.parametrize("out, kind", [("tok.json", "unigram"), ("tok.json", "bpe"), ("spm.model", "unigram"),
                                       ("spm.model", "bpe")])
def test_a_tokenizer_trains_on_the_shards_texts_in_every_script(tmp_path, shards, out, kind):
    texts = list(shard_texts(str(shards)))
    assert len(texts) == 16 * 3 and texts[0] == CAPTIONS[0] and texts[1] == f"{CAPTIONS[0]}, caption 0"
    summary = train_tokenizer(TokenizerConfig(shards=str(shards), out=str(tmp_path / out), vocab_size=120, kind=kind))
    assert summary["texts"] == 48 and 8 <= summary["vocab_size"] <= 120
    tokens = FileTokenizer(tmp_path / out, 24)
    assert tokens.vocab_size == summary["vocab_size"] + 1
    batch = tokens(CAPTIONS)
    assert batch.shape == (8, 24) and int(batch.max()) == tokens.end   # every text ends with the end id
    for caption, row in zip(CAPTIONS, batch.tolist()):   # the text's own pieces, then the end id
        end = row.index(tokens.end)
        assert end > 0 and tokens.decode(row[:end]) == caption and not any(row[end + 1:])
    short = FileTokenizer(tmp_path / out, 4)(["a red circle on the left and two blue squares at the top"])
    assert short[0, 3] == tokens.end   # cut to the context, the end id kept


def test_bad_tokenizer_arguments_are_one_line_errors(tmp_path, shards):
    assert_one_line_error(run_module("train.tokenizer", "--shards", shards, "--out", tmp_path / "t.txt"),
                          "python -m train.tokenizer", "t.txt", "not a tokenizer file")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(WitError, match="bad.json: not a readable tokenizers tokenizer"):
        FileTokenizer(tmp_path / "bad.json", 8)


def test_training_records_the_tokenizer_and_every_loader_uses_it(tmp_path, shards, tiny_model):
    tokenizer = tmp_path / "tok.json"
    train_tokenizer(TokenizerConfig(shards=str(shards), out=str(tokenizer), vocab_size=100))
    pieces = FileTokenizer(tokenizer, 16).vocab_size
    run_dir = tmp_path / "run"
    config = {"shards": str(shards), "run_dir": str(run_dir), "batch_size": 8, "steps": 3, "lr": 1e-3, "warmup": 1,
              "workers": 0, "save_every": 3, "log_every": 1, "tensorboard": False, "progress": False,
              "model": {**tiny_model, "tokenizer": str(tokenizer)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    done = run_module("train", "--config", tmp_path / "c.yaml")
    assert done.returncode == 0, done.stderr[-2000:]

    checkpoint = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    recorded = checkpoint["config"]["model"]
    assert recorded["tokenizer_sha256"] == __import__("hashlib").sha256(tokenizer.read_bytes()).hexdigest()
    assert (run_dir / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    assert checkpoint["state_dict"]["token_embedding.weight"].shape[0] == pieces
    assert json.loads((run_dir / "wit-test-tiny.json").read_text())["text_cfg"]["vocab_size"] == pieces

    # the run moved elsewhere and the original file gone: the copy beside the run is used
    moved = tmp_path / "moved"
    shutil.move(run_dir, moved)
    tokenizer.unlink()
    loaded = models.load(moved / "checkpoints" / "latest.pt")
    assert loaded.tokenizer(["a red circle"]).max() == pieces - 1
    found = run_module("train.search", "--checkpoint", moved / "checkpoints" / "latest.pt", "--shards", shards,
                       "--text", CAPTIONS[1], "--top", "3")
    assert found.returncode == 0, found.stderr[-2000:]
    assert len([line for line in found.stdout.splitlines() if line.strip()]) >= 3

    # a copy that is not the recorded file is refused, in one line
    (moved / "tokenizer.json").write_text((moved / "tokenizer.json").read_text().replace('"<unk>"', '"<UNK>"'))
    with pytest.raises(WitError, match="its tokenizer .* is at none of"):
        models.load(moved / "checkpoints" / "latest.pt")


def test_an_openclip_file_with_its_tokenizer_embeds_as_the_trainer_checkpoint(tmp_path, tiny_model):
    """`wit embed --model RUN/<name>.json --tokenizer RUN/tokenizer.json` on the run's weights
    gives the trainer checkpoint's embeddings; without --tokenizer the weights do not fit."""
    shards = shards_dir(tmp_path / "shards", [8, 8], text=lambda n: CAPTIONS[n % len(CAPTIONS)])
    tokenizer = tmp_path / "tok.json"
    train_tokenizer(TokenizerConfig(shards=str(shards), out=str(tokenizer), vocab_size=100))
    run_dir = tmp_path / "run"
    config = {"shards": str(shards), "run_dir": str(run_dir), "batch_size": 8, "steps": 2, "lr": 1e-3, "warmup": 1,
              "workers": 0, "save_every": 2, "log_every": 1, "tensorboard": False, "progress": False,
              "model": {**tiny_model, "tokenizer": str(tokenizer)}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert run_module("train", "--config", tmp_path / "c.yaml").returncode == 0
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    common = ["--shards", shards, "--workers", 0, "--batch-size", 8]
    done = run_module("wit", "embed", "--checkpoint", checkpoint, "--out", tmp_path / "trainer", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_module("wit", "embed", "--checkpoint", checkpoint, "--model", run_dir / "wit-test-tiny.json",
                      "--tokenizer", run_dir / "tokenizer.json", "--out", tmp_path / "openclip", *common)
    assert done.returncode == 0, done.stderr[-2000:]
    ours, theirs = (read_embeddings(str(tmp_path / name)) for name in ("trainer", "openclip"))
    assert ours["uid"].to_pylist() == theirs["uid"].to_pylist() and ours.num_rows == 16
    for column in ("image", "text"):
        assert torch.allclose(torch.tensor(ours[column].to_pylist()), torch.tensor(theirs[column].to_pylist()),
                              atol=1e-5)

    result = run_module("wit", "embed", "--checkpoint", checkpoint, "--model", run_dir / "wit-test-tiny.json",
                        "--out", tmp_path / "bare", *common)   # OpenCLIP's own tokenizer: 49,408 tokens
    assert_one_line_error(result, "wit embed", "wit-test-tiny.json: its text tower has", "tokens; give the tokenizer")
    result = run_module("wit", "embed", "--checkpoint", checkpoint, "--tokenizer", tokenizer,
                        "--out", tmp_path / "alone", *common)
    assert_one_line_error(result, "wit embed", "--tokenizer", "only with --model")
