"""Smoke check of `parallel: fsdp` (not one of `make bench`'s comparisons): a few steps of
`python -m train` under torchrun on generated shards, with FSDP (and, to compare, DDP),
then the run's checkpoint loaded back; prints one JSON line per mode with samples/s (the
mean of the logged rates after the first 2 steps), peak memory (rank 0: the GPU's peak
allocation, else the peak RSS), the last loss and the checkpoint's layout.

    python tests/bench/fsdp_smoke.py                          # ViT-B-32, bf16, every GPU, fsdp
    python tests/bench/fsdp_smoke.py --nproc 8 --modes fsdp,ddp --batch 256 --steps 20
    python tests/bench/fsdp_smoke.py --tiny --nproc 2 --steps 4   # CPU: the tests' tiny model, gloo
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import yaml  # noqa: E402

from tests.bench import bench_env  # noqa: E402
from tests.support.checkpoints import TINY_MODEL  # noqa: E402
from tests.support.shards import write_shards  # noqa: E402

SHARD = 250


def run(mode: str, work: Path, args: argparse.Namespace) -> dict:
    """One `python -m train` run with `parallel: mode`; its figures."""
    run_dir = work / mode
    config = {"shards": str(work / "shards"), "run_dir": str(run_dir), "parallel": mode, "steps": args.steps,
              "batch_size": args.batch * args.nproc, "lr": 5e-4, "warmup": 2, "workers": args.workers,
              "precision": args.precision, "save_every": 0, "log_every": 1, "shuffle_window": 64,
              "tensorboard": False, "progress": False,
              "model": ({"name": "wit-test-tiny", "config": TINY_MODEL} if args.tiny else
                        {"name": args.model, "grad_checkpointing": args.grad_checkpointing})}
    (work / f"{mode}.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc),
               "--master-port", str(29500 + os.getpid() % 1000), "-m", "train", "--config", str(work / f"{mode}.yaml")]
    done = subprocess.run(command, capture_output=True, text=True, env=bench_env())
    if done.returncode:
        raise SystemExit(f"{mode}: python -m train failed:\n{done.stderr[-4000:]}")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [m["samples_per_s"] for m in lines if m["kind"] == "train" and m["step"] > 2] or \
        [lines[-1]["samples_per_s"]]
    from train.model.clip import load

    checkpoint = run_dir / "checkpoints" / ("latest" if mode == "fsdp" else "latest.pt")
    loaded = load(checkpoint)   # the weights loaders read either layout
    layout = sorted(p.name for p in checkpoint.iterdir()) if checkpoint.is_dir() else [checkpoint.name]
    rate = round(sum(steady) / len(steady), 1)
    return {"bench": f"{mode}_gpu" if torch.cuda.is_available() else f"{mode}_smoke",
            "metric": f"samples/s ({'tiny' if args.tiny else args.model}, {args.nproc} rank(s), parallel: {mode})",
            "wit": rate, "mode": mode, "model": "tiny" if args.tiny else args.model,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "ranks": args.nproc,
            "batch_per_rank": args.batch, "precision": args.precision, "steps": args.steps,
            "peak_memory_mb": round(lines[-1]["memory_mb"], 1),
            "loss": round(lines[-1]["loss"], 4), "checkpoint_step": loaded.step, "checkpoint": layout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny model on 32 px images (CPU)")
    parser.add_argument("--nproc", type=int, default=max(1, torch.cuda.device_count()))
    parser.add_argument("--modes", default="fsdp", help="comma-separated: fsdp, ddp")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128, help="samples per rank and step")
    parser.add_argument("--workers", type=int, default=None, help="dataloader workers per rank")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--grad-checkpointing", action="store_true")
    args = parser.parse_args()
    if args.tiny and args.batch == 128:
        args.batch = 4
    args.workers = args.workers if args.workers is not None else (4 if torch.cuda.is_available() else 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        samples = args.steps * args.batch * args.nproc
        count = max(args.nproc * args.workers, -(-samples // SHARD) + 1)
        write_shards(work / "shards", [max(1, -(-samples // count) + 1)] * count)
        for mode in args.modes.split(","):
            print(json.dumps(run(mode, work, args)), flush=True)


if __name__ == "__main__":
    main()
