"""What a run does to its model: FLIP patch dropout on a schedule (`patch_dropout`,
`unmasked_steps`), starting from an OpenCLIP file (`init`) with one tower locked (`lock`,
LiT), and the same scalars in Weights & Biases (offline) as in TensorBoard."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tests.cli import assert_one_line_error, run_module
from tests.support.checkpoints import TINY, train_config
from tests.train.test_train import PROG, final_state, write_config
from tests.support.shards import write_shards
from train.model import clip as models
from train.model import tune


@pytest.fixture
def shards(tmp_path) -> Path:
    write_shards(tmp_path / "shards", [16, 16, 16, 16])
    return tmp_path / "shards"


def tokens_entering_blocks(model: torch.nn.Module, pixels: torch.Tensor) -> int:
    """How many tokens per image the first transformer block of the image tower sees."""
    seen = []
    block = model.visual.transformer.resblocks[0]
    handle = block.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    try:
        model.encode_image(pixels)
    finally:
        handle.remove()
    shape = seen[0]
    return shape[1] if shape[0] == pixels.shape[0] else shape[0]   # batch-first or sequence-first


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_masked_forward_keeps_the_requested_share_of_patches_and_eval_keeps_all(tiny_model, ratio):
    model = models.create(TINY)
    masking = tune.prepare(model, train_config(tiny_model, patch_dropout=ratio))
    masking.ratio = ratio
    pixels = torch.randn(6, 3, 32, 32)
    patches = (32 // 8) ** 2
    model.train()
    assert tokens_entering_blocks(model, pixels) == 1 + int(patches * (1 - ratio))
    model.eval()
    assert tokens_entering_blocks(model, pixels) == 1 + patches
    # the kept patches differ from image to image, and the class token is always first
    x = torch.arange(6 * 17, dtype=torch.float32).reshape(6, 17, 1)
    masking.train()
    kept = masking(x)
    assert torch.equal(kept[:, 0], x[:, 0])
    assert len({tuple(row.flatten().tolist()) for row in kept[:, 1:] - x[:, :1]}) > 1


def test_the_schedule_masks_until_the_unmasked_steps():
    cfg = train_config({"name": TINY.name, "config": TINY.config}, patch_dropout=0.5, steps=10, unmasked_steps=3)
    assert [tune.patch_ratio(cfg, step) for step in range(10)] == [0.5] * 7 + [0.0] * 3


def test_patch_dropout_needs_a_vit():
    model = models.create(models.ModelConfig("RN50-quickgelu"))
    with pytest.raises(Exception, match="needs a ViT image tower"):
        tune.install_patch_dropout(model)


def read_tensorboard(directory: Path) -> dict[tuple[str, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}


def wandb_records(path: Path) -> list[bytes]:
    """The records of a .wandb file: a 7-byte header, then LevelDB-log blocks of 32 KiB,
    each record a 7-byte header (crc, little-endian length, type: 1 full, 2 first, 3 middle,
    4 last) and its bytes; a block's last < 7 bytes are padding."""
    data, records, pending, pos = path.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:
            pos += room
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    return records


def read_wandb(run_dir: Path) -> dict[tuple[str, int], float]:
    """The history rows of the offline W&B run(s) in RUN/wandb, as (key, step) -> value."""
    from wandb.proto import wandb_internal_pb2

    found = {}
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        for data in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") != "history":
                continue
            step = record.history.step.num
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    found[key, step] = json.loads(item.value_json)
    return found


@pytest.mark.slow
def test_the_run_logs_the_ratio_in_force_and_wandb_gets_the_tensorboard_scalars(tmp_path, shards, tiny_model):
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=8, patch_dropout=0.5,
                          unmasked_steps=3, wandb=True, save_every=0)
    done = run_module("train", "--config", config, env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["patch_dropout"] for m in lines if m["kind"] == "train"] == [0.5] * 5 + [0.0] * 3

    board = read_tensorboard(run_dir / "tensorboard")
    logged = read_wandb(run_dir)
    assert board and ("train/patch_dropout", 8) in board
    assert set(board) == set(logged)
    assert all(logged[key] == pytest.approx(value, rel=1e-6) for key, value in board.items())


def write_init(path: Path, seed: int = 3) -> Path:
    torch.manual_seed(seed)
    torch.save(models.create(TINY).state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("tower", ["image", "text"])
def test_lit_keeps_the_locked_tower_bit_identical_and_records_the_init(tmp_path, shards, tiny_model, tower):
    init = write_init(tmp_path / "init.pt")
    start = torch.load(init, weights_only=True)
    run_dir = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model, steps=6, init=str(init), lock=tower,
                          save_every=3)
    done = run_module("train", "--config", config)
    assert done.returncode == 0, done.stderr[-2000:]
    state = final_state(run_dir)
    model = models.create(TINY)
    locked = set(tune.tower_parameters(model, tower))
    assert locked and len(locked) < len(start)
    for name, before in start.items():
        same = torch.equal(state["state_dict"][name], before)
        assert same == (name in locked), name
    # no optimizer state for the locked weights
    trained = sum(len(group["params"]) for group in state["optimizer"]["optimizer"]["param_groups"])
    assert trained == len(start) - len(locked)
    assert state["config"]["init_sha256"] == hashlib.sha256(init.read_bytes()).hexdigest()

    # a changed init file is refused on resume, in one line
    write_init(init, seed=4)
    again = run_module("train", "--config", config, "--set", "steps=8")
    assert_one_line_error(again, PROG, "init_sha256")


def test_a_locked_tower_stays_in_eval_mode(tiny_model):
    model = models.create(TINY)
    model.visual.transformer.resblocks[0].ls_1 = torch.nn.Dropout(0.5)   # a module whose mode shows
    tune.lock(model, "image")
    model.train()
    assert not model.visual.training and not model.visual.transformer.resblocks[0].ls_1.training
    assert model.transformer.training
    assert all(not p.requires_grad for p in model.visual.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("visual."))


@pytest.mark.parametrize("case", ["missing", "other_model", "lock_without_init", "lock_with_masking"])
def test_bad_init_or_lock_is_a_one_line_error(tmp_path, shards, tiny_model, case):
    other = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, other)
    settings = {"missing": {"init": str(tmp_path / "nope.pt")}, "other_model": {"init": str(other)},
                "lock_without_init": {"lock": "image"},
                "lock_with_masking": {"init": str(write_init(tmp_path / "i.pt")), "lock": "image",
                                      "patch_dropout": 0.5}}[case]
    run_dir = tmp_path / "run"
    done = run_module("train", "--config", write_config(tmp_path / "c.yaml", shards, run_dir, tiny_model,
                                                        **settings))
    assert_one_line_error(done, PROG, {"missing": "no such file", "other_model": "not weights of this model",
                                        "lock_without_init": "needs init", "lock_with_masking": "does nothing"}[case])
    assert not (run_dir / "checkpoints").exists()
