"""Benchmark: training throughput of `python -m train` against OpenCLIP's own trainer
(`python -m open_clip_train.main`) on CPU: same shards, model, global batch, precision
(fp32), optimizer settings and dataloader workers; in each training mode with OpenCLIP's
matching flags (MODES): the CLIP loss, SigLIP (`--siglip`), FLIP patch dropout 0.5
(`--force-patch-dropout 0.5`) and LiT (`--lock-image`, both starting from the same
OpenCLIP state-dict file). For patch dropout it also reports our samples/s against our
own unmasked run (the FLIP speed-up).

Each trainer runs for S steps in a fresh process, logging every L steps; its steady-state
rate is read from its own log after the first window (start-up, imports, worker start and
the first batches fall in that window): OpenCLIP's `Batch (t)`, the mean wall time of a
step over the window (data wait included), and our metrics.jsonl `samples_per_s` over the
same windows, likewise wall time. The figure is samples per second (the best of
`--repeat` runs); target >= 1.0x in every mode. One JSON line per mode.

    python tests/bench/bench_train.py [--steps 60] [--log-every 10] [--batch 64] [--repeat 1] [--modes clip siglip ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench import bench_env  # noqa: E402
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


BATCH_TIME = re.compile(r"Batch \(t\): (\d+\.\d+)")


def run_openclip(work: Path, shards: str, steps: int, batch: int, model: str | None = None,
                 precision: str = "fp32", device: str = "cpu", workers: int = 1, flags: list[str] = (),
                 log_every: int = 10) -> float:
    """Steady-state samples/s of `steps` steps of OpenCLIP's trainer (its logged mean step
    time over each window of `log_every` steps after the first); `model` None is the tiny config."""
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
               "--val-frequency", "0", "--log-every-n-steps", str(log_every), "--report-to", "", "--seed", "0",
               *flags]
    output = _run(command)
    times = [float(t) for t in BATCH_TIME.findall(output)][2:]   # [0]: the first step alone; [1]: the first window
    if not times:
        raise SystemExit(f"OpenCLIP logged no step times after its first window ({steps} steps, every {log_every})")
    return batch * len(times) / sum(times)


def run_wit(work: Path, shards: str, steps: int, batch: int, model: str | None = None,
            precision: str = "fp32", workers: int = 1, flags: list[str] = (), log_every: int = 10) -> float:
    """Steady-state samples/s of `steps` steps of `python -m train` (its logged rate over each
    window of `log_every` steps after the first); `model` None is the tiny config."""
    run_dir = work / f"wit{steps}-{time.time_ns()}"
    command = [sys.executable, "-m", "train", "--config", str(REPO / "pipelines/configs/tiny.yaml"), "--set",
               f"shards={shards}", f"run_dir={run_dir}", f"steps={steps}",
               f"batch_size={batch}", f"workers={workers}", f"precision={precision}", "save_every=0",
               f"log_every={log_every}", "tensorboard=false", "progress=false", "resume=none"]
    if model:
        command += ["--set", f"model={model}"]
    _run(command + (["--set", *flags] if flags else []))
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [m["samples_per_s"] for m in lines if m["kind"] == "train"][1:]
    if not rates:
        raise SystemExit(f"python -m train logged no rate after its first window ({steps} steps, every {log_every})")
    return len(rates) / sum(1 / r for r in rates)   # equal windows: the harmonic mean is samples over time


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


def _run(command: list[str]) -> str:
    """Run a trainer; its output (stdout and stderr), or exit naming it with its error."""
    done = subprocess.run(command, capture_output=True, text=True, env=bench_env())
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = parser.parse_args()
    if args.steps < 3 * args.log_every:
        parser.error("--steps must cover at least three --log-every windows (the first is start-up)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shard_count = -(-args.steps * args.batch // SHARD) + 1
        write_shards(work / "shards", [SHARD] * shard_count, image=textured_jpeg)
        shards = str(work / "shards")
        pattern = f"{shards}/{{000000..{shard_count - 1:06d}}}.tar"
        init = write_init(work)
        unmasked = None
        for mode in args.modes:
            ours_flags, their_flags = mode_flags(mode, init)
            theirs, ours = [], []
            for _ in range(args.repeat):
                theirs.append(run_openclip(work, pattern, args.steps, args.batch, flags=their_flags,
                                           log_every=args.log_every))
                ours.append(run_wit(work, shards, args.steps, args.batch, flags=ours_flags, log_every=args.log_every))
            rate_theirs, rate_ours = max(theirs), max(ours)
            unmasked = rate_ours if mode == "clip" else unmasked
            results.append((mode, rate_theirs, rate_ours))
    print(f"tiny ViT (pipelines/configs/tiny.yaml), 256px JPEGs, batch {args.batch}, fp32 on CPU, 1 worker; "
          f"steady state over steps {args.log_every + 1}-{args.steps}, from each trainer's log")
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
