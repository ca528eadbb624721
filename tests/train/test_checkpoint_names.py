"""A checkpoint cannot make `train.evaluate` or `train.search` write anywhere: a model name
that is a path is refused with one line before anything is registered, and a custom
model config is registered without writing a file."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from tests.cli import assert_one_line_error
from tests.support.checkpoints import TINY, save_checkpoint
from tests.support.images import drawing
from tests.support.shards import write_shards
from train import evaluate, search
from train.model import clip as models
from train.config import ModelConfig, TrainConfig


@pytest.fixture
def temp(tmp_path, monkeypatch) -> Path:
    """The temporary dir of this test (what tempfile.mkdtemp and friends use)."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def checkpoint_named(path: Path, name: str) -> Path:
    """A checkpoint of the tiny model whose config names the model `name`."""
    state = torch.load(save_checkpoint(models.create(TINY), path, 3), weights_only=True)
    state["config"]["model"]["name"] = name
    torch.save(state, path)
    return path


@pytest.mark.parametrize("cli", [evaluate, search])
@pytest.mark.parametrize("name", ["/abs", "../x"])
def test_a_model_name_that_is_a_path_is_refused_and_nothing_is_written(tmp_path, temp, capsys, cli, name):
    write_shards(tmp_path / "shards", [3], image=drawing)
    name = str(tmp_path / "evil") if name == "/abs" else name
    ckpt = checkpoint_named(tmp_path / "ckpt.pt", name)
    before = sorted(tmp_path.rglob("*"))
    args = ["--checkpoint", str(ckpt), "--shards", str(tmp_path / "shards")]
    code = cli.main(args + (["--text", "a red colour"] if cli is search else []))
    captured = capsys.readouterr()
    assert_one_line_error(subprocess.CompletedProcess(args, code, captured.out, captured.err), cli.PROG,
                          ckpt, f"model.name {name!r} is not a plain model name")
    assert sorted(tmp_path.rglob("*")) == before       # neither evil.json nor tmp/x.json nor a cache
    assert not Path(f"{name}.json").exists()


def test_loading_a_custom_model_leaves_no_file_in_the_temporary_dir(tmp_path, temp):
    custom = ModelConfig("wit-test-loaded-unwritten", TINY.config)
    state = {"state_dict": models.create(TINY).state_dict(), "position": {"step": 4},
             "config": TrainConfig(shards="x", run_dir="y", model=custom).to_dict()}
    torch.save(state, tmp_path / "ckpt.pt")
    loaded = models.load(tmp_path / "ckpt.pt")
    assert (loaded.name, loaded.step) == (custom.name, 4)
    assert list(temp.iterdir()) == []                  # no wit-model-* dir, no NAME.json
