"""Benchmark: training throughput of `python -m train` against OpenCLIP's own trainer
(`python -m open_clip_train.main`) on CPU: same shards, model, global batch, precision
(fp32), optimizer settings and dataloader workers.

Each trainer runs twice, for S and for 3S steps, in fresh processes; the difference of
the wall times is the time of 2S steps at steady state (start-up, imports, worker
start and the first batches cancel out). The figure is samples per second; target >= 1.0x.

    python tests/bench/bench_train.py [--steps 20] [--batch 64] [--repeat 1]
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
                 precision: str = "fp32", device: str = "cpu", workers: int = 1) -> float:
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
               "--val-frequency", "0", "--log-every-n-steps", "1000", "--report-to", "", "--seed", "0"]
    return _timed(command)


def run_wit(work: Path, shards: str, steps: int, batch: int, model: str | None = None,
            precision: str = "fp32", workers: int = 1) -> float:
    """Seconds for `steps` steps of `python -m train`; `model` None is the tiny config."""
    command = [sys.executable, "-m", "train", "--config", str(REPO / "pipelines/configs/tiny.yaml"), "--set",
               f"shards={shards}", f"run_dir={work / f'wit{steps}-{time.time_ns()}'}", f"steps={steps}",
               f"batch_size={batch}", f"workers={workers}", f"precision={precision}", "save_every=0",
               "log_every=1000", "tensorboard=false", "progress=false", "resume=none"]
    if model:
        command += ["--set", f"model={model}"]
    return _timed(command)


def _timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "TQDM_DISABLE": "1"}
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
    args = parser.parse_args()
    long_steps = 3 * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shard_count = -(-long_steps * args.batch // SHARD) + 1
        write_shards(work / "shards", [SHARD] * shard_count, image=textured_jpeg)
        shards = str(work / "shards")
        pattern = f"{shards}/{{000000..{shard_count - 1:06d}}}.tar"
        theirs, ours = [], []
        for _ in range(args.repeat):
            theirs.append(run_openclip(work, pattern, long_steps, args.batch) - run_openclip(work, pattern, args.steps, args.batch))
            ours.append(run_wit(work, shards, long_steps, args.batch) - run_wit(work, shards, args.steps, args.batch))
    samples = (long_steps - args.steps) * args.batch
    rate_theirs, rate_ours = samples / min(theirs), samples / min(ours)
    ratio = rate_ours / rate_theirs
    print(f"tiny ViT (pipelines/configs/tiny.yaml), 256px JPEGs, batch {args.batch}, fp32 on CPU, 1 worker; "
          f"steady state from {args.steps} vs {long_steps} steps")
    print(f"python -m open_clip_train.main : {rate_theirs:8.1f} samples/s")
    print(f"python -m train                : {rate_ours:8.1f} samples/s")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x)")
    print(json.dumps({"bench": "train", "metric": "samples/s", "baseline": round(rate_theirs, 1),
                      "wit": round(rate_ours, 1), "ratio": round(ratio, 3), "target": TARGET, "met": ratio >= TARGET}))


if __name__ == "__main__":
    main()
