"""The trainer's configuration (`train.config`): YAML and repeated `--set` overrides build
one typed tree; a model name that is not a plain name is refused."""

from __future__ import annotations

import pytest

from tests.support.checkpoints import TINY_MODEL
from train.config import ModelConfig, TrainConfig, load_config
from wit.formats.errors import WitError


def test_yaml_and_repeated_set_overrides_build_one_typed_tree(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("shards: s\nrun_dir: r\nmodel: ViT-B-32\nlr: 1e-3\neval:\n  batch_size: 64\n")
    cfg = load_config(str(path), ["steps=7", "model.grad_checkpointing=true", "betas=[0.9, 0.95]",
                                  "eval.shards=held/{0..3}.tar", "warmup=3"])
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)          # YAML reads 1e-3 as a string
    assert cfg.model == ModelConfig(name="ViT-B-32", grad_checkpointing=True)
    assert cfg.betas == (0.9, 0.95) and cfg.steps == 7 and cfg.warmup == 3
    assert cfg.eval.batch_size == 64 and cfg.eval.shards == "held/{0..3}.tar"
    with pytest.raises(WitError, match=r"unknown key eval\.bogus"):
        load_config(str(path), ["eval.bogus=1"])
    with pytest.raises(WitError, match="steps must be int"):
        load_config(str(path), ["steps=many"])
    with pytest.raises(WitError, match="steps must be at least 1"):
        load_config(str(path), ["steps=0"])
    with pytest.raises(WitError, match="expected key=value"):
        load_config(str(path), ["steps"])
    path.write_text("- a list\n")
    with pytest.raises(WitError, match="must be a mapping"):
        load_config(str(path))


@pytest.mark.parametrize("name", ["/abs/path", "../x", "a/b", ".", "..", "", "hf-hub:org/model", "x\ny"])
def test_a_model_name_that_is_not_a_plain_name_is_refused(name):
    with pytest.raises(WitError, match="not a plain model name") as e:
        ModelConfig(name=name, config=TINY_MODEL)
    assert "\n" not in str(e.value)


def test_fsdp_with_low_precision_optimizer_states_is_refused():
    with pytest.raises(WitError, match="optimizer_state=8bit is not supported with parallel=fsdp"):
        TrainConfig(shards="s", run_dir="r", parallel="fsdp", optimizer_state="8bit")
    assert TrainConfig(shards="s", run_dir="r", parallel="fsdp").parallel == "fsdp"
