"""`parallel: fsdp` (train/parallel.py): real torchrun processes on gloo. FSDP takes the same
steps as DDP (with clipping and accumulation); its sharded checkpoints resume exactly (after
a kill, past a damaged one), reshard onto another number of ranks, are refused in one line
by a ddp run and the other way round, and load in the evaluation and in OpenCLIP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import open_clip
import psutil
import pytest
import torch

from tests.cli import assert_one_line_error, run_module
from tests.support.checkpoints import TINY_MODEL
from tests.support.shards import write_shards
from tests.train.test_train import write_config
from train import parallel
from train.config import ModelConfig
from train.model import clip as models

PROG = "python -m train"
TINY = {"name": "wit-test-tiny", "config": TINY_MODEL}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp") / "shards"
    write_shards(out, [9, 14, 5, 11, 8, 13], broken={"000000017"})
    return out


def fsdp_config(path: Path, shards: Path, run_dir: Path, **overrides) -> Path:
    return write_config(path, shards, run_dir, TINY, parallel="fsdp", workers=1, tensorboard=False, progress=False,
                        **overrides)


@pytest.fixture(scope="module")
def straight(shards) -> Path:
    """A 2-rank fsdp run of 12 steps, checkpoints every 4, evaluated (retrieval on the shards)
    every 4 steps by the sharded model."""
    run_dir = shards.parent / "straight"
    config = fsdp_config(shards.parent / "straight.yaml", shards, run_dir, **{"eval": {"shards": str(shards)}},
                         eval_every=4)
    done = run_module("train", "--config", config, nproc=2, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def killed(shards) -> Path:
    """The same run (not evaluated) on 2 ranks, killed (SIGKILL, every process) once step_8/ is written."""
    run_dir = shards.parent / "killed"
    config = fsdp_config(shards.parent / "killed.yaml", shards, run_dir)
    proc = run_module("train", "--config", config, nproc=2, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoints" / "step_8").exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "step_8 not written"
        time.sleep(0.02)
    leader = psutil.Process(proc.pid)
    family = [leader, *leader.children(recursive=True)]   # torchrun's ranks have sessions of their own
    for process in family:
        process.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(family, timeout=10)
    assert alive == []
    return run_dir


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "latest" / "model.pt", weights_only=True)


def copy_run(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to, symlinks=True)
    return to


def snapshot(run_dir: Path) -> dict:
    """Every file and link under `run_dir`: its size and mtime, or where it points."""
    return {str(p.relative_to(run_dir)): os.readlink(p) if p.is_symlink() else (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_symlink() or p.is_file()}


@pytest.mark.slow
def test_fsdp_takes_the_same_steps_as_ddp_with_clipping_accumulation_and_bf16(tmp_path):
    done = run_module("tests.train.fsdp_worker", "steps", tmp_path, nproc=2, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = torch.load(tmp_path / "steps.pt", weights_only=True)
    ddp = runs["ddp"]
    assert all(norm > 0.5 for norm in ddp["norms"])   # grad_clip=0.5 scales every step's gradients
    for name, tolerance in (("fsdp", 1e-6), ("fsdp_accum", 1e-5)):
        got = runs[name]
        assert got["losses"] == pytest.approx(ddp["losses"], rel=tolerance), name
        assert got["norms"] == pytest.approx(ddp["norms"], rel=tolerance), name
        for key, grad in ddp["grads"].items():
            assert (got["grads"][key].reshape(grad.shape) - grad).norm() <= tolerance * grad.norm() + 1e-9, (name, key)
        assert got["weights"].keys() == ddp["weights"].keys()
        assert all(got["weights"][k].shape == v.shape for k, v in ddp["weights"].items())
    for key, value in ddp["weights"].items():   # fp32: the same updates
        assert torch.allclose(runs["fsdp"]["weights"][key], value, rtol=1e-6, atol=1e-7), key
    # bf16: FSDP gathers and computes the blocks in bf16 (not DDP's autocast alone), close to fp32
    for name in ("ddp_bf16", "fsdp_bf16"):
        assert runs[name]["losses"] == pytest.approx(ddp["losses"], rel=2e-2), name
    assert runs["fsdp_bf16"]["losses"][0] != runs["ddp_bf16"]["losses"][0] != ddp["losses"][0]


@pytest.mark.slow
def test_a_killed_fsdp_run_resumes_exactly_past_a_damaged_checkpoint(straight, killed, tmp_path):
    run_dir = copy_run(killed, tmp_path / "run")
    checkpoints = run_dir / "checkpoints"
    assert os.readlink(checkpoints / "latest") == "step_8"
    assert sorted(p.name for p in (checkpoints / "step_8").iterdir()) == \
        [".metadata", "__0_0.distcp", "__1_0.distcp", "model.pt", "state.pt"]
    shard = checkpoints / "step_8" / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])   # rank 1's shards cut short
    config = fsdp_config(tmp_path / "c.yaml", killed.parent / "shards", run_dir)
    done = run_module("train", "--config", config, nproc=2, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"skipping checkpoint {checkpoints}/step_8: its shards are not readable" in done.stderr
    assert f"resumed from {checkpoints}/step_4 at step 4" in done.stderr
    final, reference = weights(run_dir), weights(straight)
    assert final["position"] == reference["position"] and final["position"]["step"] == 12
    assert final["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():   # bit-identical (the evaluations did not disturb it)
        assert torch.equal(final["state_dict"][key], value), key
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_12", "step_4", "step_8"]


@pytest.mark.slow
def test_sharded_checkpoints_reshard_onto_another_number_of_ranks(killed, tmp_path):
    # `python -m train`: the 2-rank run killed at step 8 goes on with 1 rank
    run_dir = copy_run(killed, tmp_path / "run")
    config = fsdp_config(tmp_path / "c.yaml", killed.parent / "shards", run_dir, steps=10)
    done = run_module("train", "--config", config, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resumed from {run_dir}/checkpoints/step_8 at step 8" in done.stderr
    assert "written by 2 ranks x 1 workers, this run has 1 x 1" in done.stderr
    final = weights(run_dir)
    assert final["position"]["step"] == 10 and final["position"]["samples"] == 10 * 8
    assert sorted(p.name for p in (run_dir / "checkpoints" / "step_10").glob("*.distcp")) == ["__0_0.distcp"]
    # what 1 rank restores of the 2 ranks' shards, and 2 ranks of the 1 rank's, is the checkpoint
    # read whole: every weight, AdamW moment and step count
    for step_dir, nproc in ((killed / "checkpoints" / "step_8", 1), (run_dir / "checkpoints" / "step_10", 2)):
        out = tmp_path / f"{step_dir.name}-on-{nproc}"
        out.mkdir()
        done = run_module("tests.train.fsdp_worker", "load", step_dir, out, nproc=nproc, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        held, whole = torch.load(out / "held.pt", weights_only=True), read_whole(step_dir, out / "whole.pt")
        assert held["weights"].keys() == whole["weights"].keys()
        for key, value in whole["weights"].items():
            assert torch.equal(held["weights"][key], value), key
        assert held["optimizer"]["state"].keys() == whole["optimizer"].keys()
        for key, state in whole["optimizer"].items():
            for name, value in state.items():
                assert torch.equal(held["optimizer"]["state"][key][name], value), (key, name)
        assert held["scheduler"]["last_epoch"] == whole["position"]["step"]


def read_whole(step_dir: Path, scratch: Path) -> dict:
    """A step dir's weights (model.pt), and its optimizer state as torch's converter reads the
    shards (into whole tensors, no process group) with the step counts of state.pt."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(step_dir, scratch)
    tensors = torch.load(scratch, weights_only=True)
    plain = torch.load(step_dir / "state.pt", weights_only=True)
    optimizer = {key: {"step": value["step"], **{name: tensors[f"/optimizer/optimizer/state/{key}/{name}"]
                                                 for name in ("exp_avg", "exp_avg_sq")}}
                 for key, value in plain["optimizer"]["optimizer"]["state"].items()}
    return {"weights": torch.load(step_dir / "model.pt", weights_only=True)["state_dict"], "optimizer": optimizer,
            "position": plain["position"]}


@pytest.mark.slow
def test_resuming_across_ddp_and_fsdp_is_refused_in_one_line(straight, shards, tmp_path):
    fsdp_dir = copy_run(straight, tmp_path / "fsdp")
    before = snapshot(fsdp_dir)
    config = write_config(tmp_path / "d.yaml", shards, fsdp_dir, TINY, workers=0, steps=16)
    done = run_module("train", "--config", config)
    assert_one_line_error(done, PROG, "resume: parallel was 'fsdp' in the checkpoint, now 'ddp'")
    assert snapshot(fsdp_dir) == before

    ddp_dir = tmp_path / "ddp"
    config = write_config(tmp_path / "e.yaml", shards, ddp_dir, TINY, workers=0, steps=2, save_every=0)
    assert run_module("train", "--config", config).returncode == 0
    before = snapshot(ddp_dir)
    done = run_module("train", "--config", config, "--set", "parallel=fsdp", "steps=4")
    assert_one_line_error(done, PROG, "resume: parallel was 'ddp' in the checkpoint, now 'fsdp'")
    assert snapshot(ddp_dir) == before


@pytest.mark.slow
def test_the_sharded_checkpoint_loads_in_the_evaluation_and_in_openclip(straight, shards, tmp_path):
    saved = weights(straight)
    assert saved["state_dict"]["logit_scale"].shape == ()   # OpenCLIP's shapes, not FSDP's
    loaded = models.load(straight / "checkpoints" / "latest")
    assert loaded.step == 12
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in loaded.model.state_dict().items())
    open_clip.add_model_config(straight / "wit-test-tiny.json")
    model = open_clip.create_model("wit-test-tiny", pretrained=str(straight / "checkpoints" / "step_12" / "model.pt"))
    assert all(torch.equal(v, saved["state_dict"][k]) for k, v in model.state_dict().items())

    done = run_module("train.evaluate", "--checkpoint", straight / "checkpoints" / "step_12", "--shards", shards,
                      "--out", tmp_path / "eval.json")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    # the evaluation during training, by the model sharded over 2 ranks, at step 12
    during = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    during = [m for m in during if m["kind"] == "eval"]
    assert [m["step"] for m in during] == [4, 8, 12]
    assert metrics["retrieval_pairs"] == during[-1]["retrieval_pairs"] > 0
    for key in ("i2t_r1", "t2i_r1", "i2t_r5"):
        assert metrics[key] == pytest.approx(during[-1][key], abs=1e-6), key


def test_the_units_sharded_one_by_one_are_the_blocks_of_both_towers_or_a_resnets_stages():
    vit = models.create(ModelConfig("wit-test-tiny", TINY_MODEL))
    assert parallel.units(vit) == [*vit.visual.transformer.resblocks, *vit.transformer.resblocks]
    resnet = {**TINY_MODEL, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}}
    rn = models.create(ModelConfig("wit-test-tiny-rn", resnet))
    assert parallel.units(rn) == [rn.visual.layer1, rn.visual.layer2, rn.visual.layer3, rn.visual.layer4,
                                  *rn.transformer.resblocks]


@pytest.mark.slow
def test_lit_siglip_and_patch_dropout_run_sharded(shards, tmp_path):
    """The other modes under fsdp on 2 ranks: a locked image tower stays bit-identical (its
    frozen weights sharded beside trained ones), SigLIP's bias trains, patch dropout runs."""
    torch.manual_seed(3)
    init = tmp_path / "init.pt"
    start = models.create(ModelConfig(TINY["name"], TINY["config"]), "siglip").state_dict()
    torch.save(start, init)
    run_dir = tmp_path / "lit"
    config = fsdp_config(tmp_path / "lit.yaml", shards, run_dir, steps=6, init=str(init), lock="image",
                         loss="siglip")
    done = run_module("train", "--config", config, nproc=2, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    after = weights(run_dir)["state_dict"]
    assert all(torch.equal(after[k], v) for k, v in start.items() if k.startswith("visual."))
    assert not torch.equal(after["logit_bias"], start["logit_bias"])
    assert not torch.equal(after["text_projection"], start["text_projection"])

    masked = tmp_path / "masked"
    done = run_module("train", "--config", fsdp_config(tmp_path / "m.yaml", shards, masked, steps=4,
                                                       patch_dropout=0.5, unmasked_steps=2), nproc=2, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (masked / "metrics.jsonl").read_text().splitlines()]
    assert [m["patch_dropout"] for m in lines if m["kind"] == "train"] == [0.5, 0.5, 0.0, 0.0]
