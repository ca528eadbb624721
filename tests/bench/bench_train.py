"""Benchmark: training throughput of `python -m train` against OpenCLIP's own trainer
(`python -m open_clip_train.main`) on CPU: same shards, model, global batch, precision
(fp32), optimizer settings and dataloader workers; in each training mode with OpenCLIP's
matching flags (MODES): the CLIP loss, SigLIP (`--siglip`), FLIP patch dropout 0.5
(`--force-patch-dropout 0.5`) and LiT (`--lock-image`, both starting from the same
OpenCLIP state-dict file). For patch dropout it also reports our samples/s against our
own unmasked run (the FLIP speed-up).

Each trainer runs twice, for S and for 3S steps, in fresh processes; the difference of
the wall times is the time of 2S steps at steady state (start-up, imports, worker
start and the first batches cancel out). The figure is samples per second; target >= 1.0x
in every mode. One JSON line per mode.

    python tests/bench/bench_train.py [--steps 20] [--batch 64] [--repeat 1] [--modes clip siglip ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_train_data import textured_jpeg  # noqa: E402
from tests.support.shards import write_shards  # noqa: E402

TARGET = 1.0
SHARD = 250
PATCH_DROPOUT = 0.5
# mode: (our --set values, OpenCLIP's flags); "{init}" is the shared starting weights file
MODES = {
    "clip": ([], []),
    "siglip": (["loss=siglip"], ["--siglip"]),
    "patch_dropout": ([f"patch_dropout={PATCH_DROPOUT}"], ["--force-patch-dropout", str(PATCH_DROPOUT)]),
    "lock_image": (["init={init}", "lock=image"], ["--pretrained", "{init}", "--lock-image"]),
}
# OpenCLIP's trainer with the tiny model registered and webdataset 0.2.111's end-of-shard
# marker dropped (bench_train_data.patch_openclip); nothing else changes.
OPENCLIP = """
import sys
import open_clip
from tests.bench.bench_train_data import patch_openclip
from open_clip_train.main import main
if __name__ == "__main__":
    open_clip.add_model_config(sys.argv[1])
    patch_openclip()
    main(sys.argv[2:])
"""


def tiny() -> dict:
    return yaml.safe_load((REPO / "pipelines/configs/tiny.yaml").read_text())


def run_openclip(work: Path, shards: str, steps: int, batch: int, model: str | None = None,
                 precision: str = "fp32", device: str = "cpu", workers: int = 1, flags: list[str] = ()) -> float:
    """Seconds for `steps` steps of OpenCLIP's trainer; `model` None is the tiny config."""
    cfg = tiny()
    model_json = work / f"{cfg['model']['name']}.json"
    model_json.write_text(json.dumps(cfg["model"]["config"]))
    script = work / "openclip_main.py"
    script.write_text(OPENCLIP)
    name = f"oc{steps}-{time.time_ns()}"
    command = [sys.executable, str(script), str(model_json),
               "--train-data", shards, "--train-num-samples", str(steps * batch), "--dataset-type", "webdataset",
               "--batch-size", str(batch), "--epochs", "1", "--lr", str(cfg["lr"]), "--warmup", str(cfg["warmup"]),
               "--wd", str(cfg["weight_decay"]), "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6",
               "--model", model or cfg["model"]["name"], "--workers", str(workers),
               "--precision", {"fp32": "fp32", "bf16": "amp_bf16"}[precision], "--device", device,
               "--logs", str(work / "oclogs"), "--name", name, "--save-frequency", "0", "--zeroshot-frequency", "0",
               "--val-frequency", "0", "--log-every-n-steps", "1000", "--report-to", "", "--seed", "0", *flags]
    return _timed(command)


def run_wit(work: Path, shards: str, steps: int, batch: int, model: str | None = None,
            precision: str = "fp32", workers: int = 1, flags: list[str] = ()) -> float:
    """Seconds for `steps` steps of `python -m train`; `model` None is the tiny config."""
    command = [sys.executable, "-m", "train", "--config", str(REPO / "pipelines/configs/tiny.yaml"), "--set",
               f"shards={shards}", f"run_dir={work / f'wit{steps}-{time.time_ns()}'}", f"steps={steps}",
               f"batch_size={batch}", f"workers={workers}", f"precision={precision}", "save_every=0",
               "log_every=1000", "tensorboard=false", "progress=false", "resume=none"]
    if model:
        command += ["--set", f"model={model}"]
    return _timed(command + (["--set", *flags] if flags else []))


def mode_flags(mode: str, init: Path) -> tuple[list[str], list[str]]:
    """(our --set values, OpenCLIP's flags) of a mode, with the starting weights file."""
    ours, theirs = MODES[mode]
    return [f.replace("{init}", str(init)) for f in ours], [f.replace("{init}", str(init)) for f in theirs]


def write_init(work: Path, model: str | None = None) -> Path:
    """Random weights of the benchmark's model as an OpenCLIP state-dict file (LiT's start)."""
    import open_clip
    import torch

    from train.config import ModelConfig
    from train.model import clip as models

    cfg = ModelConfig(**tiny()["model"]) if model is None else ModelConfig(model)
    torch.manual_seed(0)
    path = work / "init.pt"
    models.register(cfg)
    torch.save(open_clip.create_model(cfg.name).state_dict(), path)
    return path


def steady_seconds(run, work: Path, shards: str, steps: int, batch: int, **kw) -> float:
    """Seconds of 2S steps at steady state: a 3S-step run minus an S-step run."""
    return run(work, shards, 3 * steps, batch, **kw) - run(work, shards, steps, batch, **kw)


def _timed(command: list[str]) -> float:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = parser.parse_args()
    long_steps = 3 * args.steps
    samples = (long_steps - args.steps) * args.batch
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shard_count = -(-long_steps * args.batch // SHARD) + 1
        write_shards(work / "shards", [SHARD] * shard_count, image=textured_jpeg)
        shards = str(work / "shards")
        pattern = f"{shards}/{{000000..{shard_count - 1:06d}}}.tar"
        init = write_init(work)
        unmasked = None
        for mode in args.modes:
            ours_flags, their_flags = mode_flags(mode, init)
            theirs, ours = [], []
            for _ in range(args.repeat):
                theirs.append(steady_seconds(run_openclip, work, pattern, args.steps, args.batch, flags=their_flags))
                ours.append(steady_seconds(run_wit, work, shards, args.steps, args.batch, flags=ours_flags))
            rate_theirs, rate_ours = samples / min(theirs), samples / min(ours)
            unmasked = rate_ours if mode == "clip" else unmasked
            results.append((mode, rate_theirs, rate_ours))
    print(f"tiny ViT (pipelines/configs/tiny.yaml), 256px JPEGs, batch {args.batch}, fp32 on CPU, 1 worker; "
          f"steady state from {args.steps} vs {long_steps} steps")
    for mode, rate_theirs, rate_ours in results:
        ratio = rate_ours / rate_theirs
        row = {"bench": "train" if mode == "clip" else f"train_{mode}", "metric": f"samples/s ({mode})",
               "baseline": round(rate_theirs, 1), "wit": round(rate_ours, 1), "ratio": round(ratio, 3),
               "target": TARGET, "met": ratio >= TARGET}
        if mode == "patch_dropout" and unmasked:
            row["speedup_vs_unmasked"] = round(rate_ours / unmasked, 3)
        print(f"{mode:14s} python -m open_clip_train.main {rate_theirs:8.1f} samples/s, python -m train "
              f"{rate_ours:8.1f} samples/s: ratio {ratio:.2f}x (target >= {TARGET}x)"
              + (f"; {row['speedup_vs_unmasked']:.2f}x our unmasked rate" if "speedup_vs_unmasked" in row else ""))
        print(json.dumps(row))


if __name__ == "__main__":
    main()
