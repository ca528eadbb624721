"""`python -m train` as a user runs it: real processes (torchrun, gloo), real shards, real
OpenCLIP models. Exact resume after a signal or a kill, no hang on uneven shards, clear
errors, checkpoints OpenCLIP loads, SigLIP under DDP. (Loss and gradients independent of
the process count: tests/train/test_loss.py.)"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import open_clip
import pytest
import torch
import yaml

from tests.cli import REPO, assert_one_line_error, run_module
from tests.support.shards import write_shards
from train.data import stream as data
from train.data.shards import list_shards
from train.model import clip as models

PROG = "python -m train"


def write_config(path: Path, shards: Path, run_dir: Path, tiny_model: dict, **overrides) -> Path:
    config = {"shards": str(shards), "run_dir": str(run_dir), "model": tiny_model, "batch_size": 8,
              "steps": 12, "lr": 1e-3, "warmup": 2, "workers": 2, "save_every": 4, "log_every": 1,
              "shuffle_window": 16, "tensorboard": True, **overrides}
    path.write_text(yaml.safe_dump(config))
    return path


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)


def same_parameters(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def shards(tmp_path) -> Path:
    write_shards(tmp_path / "shards", [9, 14, 5, 11, 8, 13], broken={"000000017"})
    return tmp_path / "shards"


@pytest.mark.slow
def test_a_run_stopped_by_a_signal_or_killed_resumes_exactly(tmp_path, shards, tiny_model):
    straight = tmp_path / "straight"
    done = run_module("train", "--config", write_config(tmp_path / "a.yaml", shards, straight, tiny_model))
    assert done.returncode == 0, done.stderr[-2000:]
    reference = final_state(straight)
    assert reference["position"]["step"] == 12 and reference["data"]["epoch"] >= 1   # crosses an epoch boundary

    # SIGUSR1 to every process of the run, dataloader workers included (what SLURM sends
    # before the time limit): checkpoint, exit 75, resume
    stopped = tmp_path / "stopped"
    config = write_config(tmp_path / "b.yaml", shards, stopped, tiny_model, save_every=0)
    proc = run_module("train", "--config", config, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                      start_new_session=True)
    _wait_for_step(stopped / "metrics.jsonl", 5, proc)
    os.killpg(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err.decode()[-2000:]
    stopped_at = final_state(stopped)["position"]["step"]
    assert 5 <= stopped_at < 12
    done = run_module("train", "--config", config)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {stopped}/checkpoints/step_{stopped_at}.pt at step {stopped_at}" in done.stderr
    assert same_parameters(final_state(stopped)["state_dict"], reference["state_dict"])

    # kill -9 right after the step-8 checkpoint, then resume=auto
    killed = tmp_path / "killed"
    config = write_config(tmp_path / "c.yaml", shards, killed, tiny_model)
    kill_after_checkpoint(config, killed / "checkpoints" / "step_8.pt")
    done = run_module("train", "--config", config, "--set", "resume=auto")
    assert done.returncode == 0, done.stderr[-2000:]
    final = final_state(killed)
    assert final["position"]["step"] == 12
    assert same_parameters(final["state_dict"], reference["state_dict"])
    assert final["position"]["samples"] == reference["position"]["samples"] == 12 * 8


def kill_after_checkpoint(config: Path, checkpoint: Path) -> None:
    """Start a run and SIGKILL it as soon as `checkpoint` exists."""
    proc = run_module("train", "--config", config, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not checkpoint.exists():
        assert proc.poll() is None, "the run ended before the checkpoint"
        time.sleep(0.02)
    proc.kill()
    proc.wait()


def _wait_for_step(metrics: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, "the run ended before it could be signalled"
        if metrics.exists() and any(json.loads(line)["step"] >= step for line in metrics.read_text().splitlines()):
            return
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached")


@pytest.mark.slow
def test_two_ranks_on_uneven_shards_finish_every_epoch_without_hanging(tmp_path, tiny_model):
    write_shards(tmp_path / "shards", [3, 21, 2, 17, 6, 1, 12, 4])   # 66 samples, very uneven
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", tmp_path / "shards", run_dir, tiny_model, steps=20, workers=2,
                          save_every=0, eval_every=0)
    done = run_module("train", "--config", config, nproc=2, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    state = final_state(run_dir)
    assert state["position"]["step"] == 20 and state["data"]["epoch"] == 20 // (66 // 8)
    assert len(state["data"]["positions"]) == 2          # both ranks' worker positions
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [m for m in lines if m["kind"] == "train"]
    assert [m["step"] for m in train_lines] == list(range(1, 21))
    assert all(math.isfinite(m["loss"]) and m["samples_per_s"] > 0 for m in train_lines)
    assert 0 <= train_lines[-1]["data_wait_fraction"] <= 1
    assert json.loads((run_dir / "config.json").read_text())["batch_size"] == 8
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_the_checkpoint_loads_in_openclip(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    done = run_module("train", "--config", write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model,
                                                         steps=3, workers=0))
    assert done.returncode == 0, done.stderr[-2000:]
    open_clip.add_model_config(run_dir / "wit-test-tiny.json")
    model = open_clip.create_model("wit-test-tiny", pretrained=str(run_dir / "checkpoints" / "latest.pt"))
    assert same_parameters(model.state_dict(), final_state(run_dir)["state_dict"])
    assert model.logit_scale.exp().item() <= 100


@pytest.mark.slow
def test_a_siglip_run_on_two_ranks_trains_its_bias_and_its_checkpoint_loads_in_openclip(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=4, workers=1, save_every=0,
                          loss="siglip")
    done = run_module("train", "--config", config, nproc=2, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]   # DDP: no parameter without a gradient
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    biases = [m["logit_bias"] for m in lines if m["kind"] == "train"]
    assert len(biases) == 4 and biases[-1] != -10.0
    state = final_state(run_dir)["state_dict"]
    assert state["logit_bias"].item() == biases[-1]
    assert models.load(run_dir / "checkpoints" / "latest.pt").model.logit_bias.item() == biases[-1]
    open_clip.add_model_config(run_dir / "wit-test-tiny.json")
    model = open_clip.create_model("wit-test-tiny", pretrained=str(run_dir / "checkpoints" / "latest.pt"),
                                   init_logit_bias=-10)
    assert same_parameters(model.state_dict(), state)


@pytest.mark.slow
def test_a_killed_siglip_run_resumes_exactly(tmp_path, shards, tiny_model):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    config = write_config(tmp_path / "a.yaml", shards, straight, tiny_model, steps=8, workers=1, loss="siglip")
    assert run_module("train", "--config", config).returncode == 0
    config = write_config(tmp_path / "b.yaml", shards, killed, tiny_model, steps=8, workers=1, loss="siglip")
    kill_after_checkpoint(config, killed / "checkpoints" / "step_4.pt")
    done = run_module("train", "--config", config)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {killed}/checkpoints/step_4.pt at step 4" in done.stderr
    reference, final = final_state(straight), final_state(killed)
    assert final["position"]["step"] == 8 and reference["state_dict"]["logit_bias"].item() != -10.0
    assert same_parameters(final["state_dict"], reference["state_dict"])


@pytest.mark.parametrize("case", ["too_few_shards", "unusable_shard", "bad_key", "no_sizes", "bad_batch",
                                  "model_name_is_a_path"])
@pytest.mark.slow
def test_bad_input_is_a_one_line_error(tmp_path, tiny_model, case):
    shards = tmp_path / "shards"
    keys = write_shards(shards, [8, 8, 8])
    sets = []
    if case == "too_few_shards":
        sets = ["workers=4"]
        expected = ["3 shards for 1 ranks x 4 dataloader workers"]
    elif case == "unusable_shard":
        write_shards(shards, [8, 8, 8], broken=set(keys[8:16]))
        sets = ["workers=3", "batch_size=4", "shuffle_window=4"]
        expected = ["no usable sample", "000001.tar"]
    elif case == "bad_key":
        sets = ["model.widht=3"]
        expected = ["unknown key model.widht"]
    elif case == "model_name_is_a_path":   # RUN/<name>.json must stay in RUN
        sets = [f"model.name={tmp_path}/evil"]
        expected = ["not a plain model name"]
    elif case == "no_sizes":
        (shards / "sizes.json").unlink()
        expected = ["no sizes.json or manifest.json"]
    else:
        sets = ["batch_size=7", "accum_steps=2"]
        expected = ["batch_size 7 is not divisible"]
    config = write_config(tmp_path / "c.yaml", shards, tmp_path / "run", tiny_model, workers=1)
    done = run_module("train", "--config", config, "--set", *sets, "progress=false", timeout=120)
    assert_one_line_error(done, PROG, *expected)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "evil.json").exists()


def test_shipped_configs_resolve():
    from train.config import load_config
    paper = load_config(str(REPO / "pipelines/configs/vit_b32_wit400m.yaml"))
    assert paper.batch_size == 32768 and paper.model.name == "ViT-B-32-quickgelu"
    assert paper.steps * paper.batch_size == pytest.approx(32 * 400_000_000, rel=0.01)
    tiny = load_config(str(REPO / "pipelines/configs/tiny.yaml"), ["shards=x", "run_dir=y", "steps=5"])
    assert tiny.steps == 5 and tiny.model.config is not None


@pytest.mark.slow
def test_resume_with_another_worker_count_continues_at_the_same_step(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=10, save_every=3, workers=2)
    kill_after_checkpoint(config, run_dir / "checkpoints" / "step_3.pt")
    resumed_at = final_state(run_dir)["position"]["step"]
    done = run_module("train", "--config", config, "--set", "workers=1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 ranks x 2 workers, this run has 1 x 1" in done.stderr and "not sample-exact" in done.stderr
    final = final_state(run_dir)
    assert final["position"]["step"] == 10 and final["position"]["samples"] == 10 * 8 and resumed_at >= 3
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))   # what the killed run logged past its checkpoint is logged once


@pytest.mark.slow
def test_a_data_error_on_one_rank_stops_every_rank_with_the_error(tmp_path, tiny_model):
    shards = tmp_path / "shards"
    keys = write_shards(shards, [8, 8, 8, 8])
    plan = data.plan_epoch(list_shards(str(shards)), 0, 0, 2, 1, 2)
    rank1 = {int(Path(segment.url).stem) for segment in plan.slots[1][0].segments}
    write_shards(shards, [8, 8, 8, 8], broken={k for i in rank1 for k in keys[8 * i:8 * i + 8]})
    config = write_config(tmp_path / "c.yaml", shards, tmp_path / "run", tiny_model, workers=1, batch_size=4,
                          shuffle_window=4, progress=False)
    done = run_module("train", "--config", config, nproc=2, timeout=180)
    assert done.returncode != 0
    errors = done.stderr.split(f"{PROG}: error: ")[1:]   # the two ranks' lines may interleave
    assert len(errors) == 2, done.stderr[-3000:]
    assert any("no usable sample" in e for e in errors) and any("another rank" in e for e in errors)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_resume_refuses_a_changed_seed_or_batch(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=2, save_every=0, workers=0)
    assert run_module("train", "--config", config).returncode == 0
    for change, expected in (("seed=1", "resume: seed was 0 in the checkpoint, now 1"),
                             ("batch_size=4", "resume: batch_size was 8")):
        done = run_module("train", "--config", config, "--set", "steps=4", change)
        assert_one_line_error(done, PROG, expected)
    assert final_state(run_dir)["position"]["step"] == 2


@pytest.mark.slow
def test_a_missing_latest_resumes_from_the_newest_step_file(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=4, save_every=2, workers=0)
    assert run_module("train", "--config", config).returncode == 0
    (run_dir / "checkpoints" / "latest.pt").unlink()   # a kill between the step file and its link
    done = run_module("train", "--config", config, "--set", "steps=6")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {run_dir}/checkpoints/step_4.pt at step 4" in done.stderr
    assert final_state(run_dir)["position"]["step"] == 6
    # a damaged newest checkpoint is skipped for the one before it
    (run_dir / "checkpoints" / "step_6.pt").write_bytes(b"garbage")
    done = run_module("train", "--config", config, "--set", "steps=6")
    assert done.returncode == 0 and f"resumed from {run_dir}/checkpoints/step_4.pt" in done.stderr, done.stderr
    # starting from scratch over checkpoints needs resume=restart
    done = run_module("train", "--config", config, "--set", "resume=none")
    assert_one_line_error(done, PROG, "holds checkpoints", "resume=restart")
    assert (run_dir / "checkpoints" / "step_6.pt").exists()


@pytest.mark.slow
def test_a_diverged_run_sets_its_checkpoints_aside_and_a_lower_lr_continues(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=4, save_every=2, workers=0,
                          warmup=0)
    assert run_module("train", "--config", config).returncode == 0
    done = run_module("train", "--config", config, "--set", "steps=12", "lr=1e30", "save_every=1")
    assert_one_line_error(done, PROG, "diverged after the update of step 5", f"{run_dir}/checkpoints/step_4.pt")
    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in (checkpoints / "diverged").iterdir()) == [f"step_{n}.pt" for n in (5, 6, 7, 8)]
    assert os.path.samefile(checkpoints / "latest.pt", checkpoints / "step_4.pt")
    assert done.stderr.count("skipped without an update") == 3   # skip_nonfinite=3, then the stop
    for name, value in final_state(run_dir)["state_dict"].items():
        assert torch.isfinite(value).all(), name
    done = run_module("train", "--config", config, "--set", "steps=6", "lr=1e-3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {checkpoints}/step_4.pt at step 4" in done.stderr
    assert final_state(run_dir)["position"]["step"] == 6


@pytest.mark.slow
def test_a_changed_lr_on_resume_takes_effect_and_is_logged(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=6, save_every=3, workers=0)
    straight = tmp_path / "straight"
    assert run_module("train", "--config", config, "--set", f"run_dir={straight}", "lr=5e-4").returncode == 0
    kill_after_checkpoint(config, run_dir / "checkpoints" / "step_3.pt")
    done = run_module("train", "--config", config, "--set", "lr=5e-4")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resume: changed lr 0.001 -> 0.0005" in done.stderr
    logged = lambda d: {json.loads(line)["step"]: json.loads(line)["lr"]  # noqa: E731
                        for line in (d / "metrics.jsonl").read_text().splitlines()}
    ours, expected = logged(run_dir), logged(straight)
    assert all(ours[s] == pytest.approx(expected[s], rel=1e-6) for s in (4, 5, 6))


@pytest.mark.slow
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_floats_are_refused(tmp_path, shards, tiny_model, value):
    config = write_config(tmp_path / "c.yaml", shards, tmp_path / "run", tiny_model)
    done = run_module("train", "--config", config, "--set", f"lr={value}", timeout=120)
    assert_one_line_error(done, PROG, "lr must be a finite number")
    done = run_module("train", "--config", config, "--set", f"betas=[0.9, {value}]", timeout=120)
    assert_one_line_error(done, PROG, "betas[1] must be a finite number")


@pytest.mark.slow
def test_a_second_run_on_a_run_dir_is_refused_and_a_signal_ends_the_run(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=400, save_every=0)
    proc = run_module("train", "--config", config, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                      start_new_session=True)
    _wait_for_step(run_dir / "metrics.jsonl", 2, proc)
    second = run_module("train", "--config", config, timeout=120)
    assert_one_line_error(second, PROG, f"another run is writing it (pid {proc.pid} on ")
    import psutil
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C: checkpoint, exit 75
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 75, err.decode()[-2000:]
    assert "stopping on SIGINT" in err.decode()
    _, alive = psutil.wait_procs(family, timeout=5)
    assert alive == []
    assert 2 <= final_state(run_dir)["position"]["step"] < 400


@pytest.mark.slow
def test_million_letter_captions_train_as_fast_as_short_ones(tmp_path, tiny_model):
    import random

    rng = random.Random(0)
    huge = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1_000_000))
    seconds = {}
    for name, text in (("short", None), ("huge", lambda n: huge if n % 4 == 0 else None)):
        write_shards(tmp_path / name, [16, 16], text=text)
        config = write_config(tmp_path / f"{name}.yaml", tmp_path / name, tmp_path / f"run-{name}", tiny_model,
                              steps=4, save_every=0, workers=0)
        started = time.monotonic()
        done = run_module("train", "--config", config)
        seconds[name] = time.monotonic() - started
        assert done.returncode == 0, done.stderr[-2000:]
        assert final_state(tmp_path / f"run-{name}")["position"]["step"] == 4
    # a quarter of the captions a million letters long: OpenCLIP's BPE alone would take hours
    assert seconds["huge"] < 1.5 * seconds["short"] + 5, seconds


def summary_of(stderr: str) -> dict:
    """The run summary: the JSON line `python -m train` prints at the end."""
    return json.loads([line for line in stderr.splitlines() if line.startswith("{")][-1])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mixed", "resampled"])
def test_a_mixed_or_resampled_run_killed_after_a_checkpoint_resumes_exactly(tmp_path, shards, tiny_model, kind):
    if kind == "mixed":   # 3:1, the second source much smaller: it runs through epochs of its own
        write_shards(tmp_path / "other", [6, 5, 7, 4], start=1000)
        source, setting = "", {"data": [{"shards": str(shards), "weight": 3},
                                        {"shards": str(tmp_path / "other"), "weight": 1}]}
        expected = {"shards": 72, "other": 24}
    else:                 # 12 steps of 8 from 60 samples, shards drawn with replacement
        source, setting, expected = shards, {"resampled": True}, {"shards": 96}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = run_module("train", "--config", write_config(tmp_path / "a.yaml", source, straight, tiny_model, **setting))
    assert done.returncode == 0, done.stderr[-2000:]
    assert summary_of(done.stderr)["sources"] == expected
    config = write_config(tmp_path / "b.yaml", source, killed, tiny_model, **setting)
    kill_after_checkpoint(config, killed / "checkpoints" / "step_8.pt")
    done = run_module("train", "--config", config)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {killed}/checkpoints/step_8.pt at step 8" in done.stderr
    assert summary_of(done.stderr)["sources"] == expected   # the counts carried over the kill
    assert same_parameters(final_state(killed)["state_dict"], final_state(straight)["state_dict"])
    last = json.loads((killed / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 12 and last["sources"] == expected


@pytest.mark.slow
def test_a_missing_data_source_is_a_one_line_error_naming_it(tmp_path, shards, tiny_model):
    config = write_config(tmp_path / "c.yaml", "", tmp_path / "run", tiny_model,
                          data=[{"shards": str(shards), "weight": 2}, {"shards": str(tmp_path / "gone")}])
    done = run_module("train", "--config", config, "--set", "progress=false", timeout=120)
    assert_one_line_error(done, PROG, f"data source gone ({tmp_path}/gone): no such directory")
    assert not (tmp_path / "run" / "checkpoints").exists()
