"""Benchmark (GPU): ViT-B-32 training throughput of `python -m train` against OpenCLIP's
trainer (`python -m open_clip_train.main`) on one GPU, and the model FLOP utilisation.

Same shards (photo-like 256x256 JPEGs), model (ViT-B-32, 224 px, trained from scratch),
batch per GPU (256), precision (bf16 autocast), optimizer settings and dataloader
workers. As in bench_train.py each trainer runs for S and for 3S steps in fresh
processes and the difference of the wall times is the time of 2S steps at steady state.
MFU = model FLOPs per sample (forward and backward of model and loss, counted with
torch's FlopCounterMode at the benchmark batch) x samples/s / the GPU's dense bf16 peak.
Targets: >= 1.2x OpenCLIP's samples/s, MFU >= 40%. Without a CUDA device it prints a
skipped result (and `make bench` lists it as not run).

    python tests/bench/bench_train_gpu.py [--steps 30] [--batch 256] [--workers 8] [--peak-tflops F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from tests.bench.bench_train import run_openclip, run_wit  # noqa: E402
from tests.bench.bench_train_data import textured_jpeg  # noqa: E402
from tests.support.shards import write_shards  # noqa: E402

TARGET, MFU_TARGET = 1.2, 0.40
MODEL, SHARD, DISTINCT_IMAGES = "ViT-B-32", 250, 1000
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device name.
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4,
               "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the GPU called `name`, or None when unknown."""
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def flops_per_sample(model_name: str, batch: int, device: str) -> float:
    """Model FLOPs of one training sample: forward and backward of the model and the
    contrastive loss over a batch of `batch`, as counted by torch's FlopCounterMode."""
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    from train.loss import clip_loss

    model = open_clip.create_model(model_name).to(device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    pixels = torch.randn(batch, 3, size, size, device=device)
    tokens = torch.randint(0, 49408, (batch, 77), device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        image_features, text_features, scale = model(pixels, tokens)
        clip_loss(image_features.float(), text_features.float(), scale.float()).backward()
    return counter.get_total_flops() / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU benchmark did not run")
        print(json.dumps({"bench": "train_gpu", "metric": "samples/s (ViT-B-32, bf16, 1 GPU)",
                          "skipped": "no CUDA device"}))
        return
    gpu = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_tflops(gpu)
    per_sample = flops_per_sample(MODEL, args.batch, "cuda")
    long_steps = 3 * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pictures = [textured_jpeg(n, (90 + n % 120, 120, 150)) for n in range(DISTINCT_IMAGES)]
        shard_count = -(-long_steps * args.batch // SHARD) + 1
        write_shards(work / "shards", [SHARD] * shard_count, image=lambda n, _: pictures[n % DISTINCT_IMAGES])
        pattern = f"{work / 'shards'}/{{000000..{shard_count - 1:06d}}}.tar"
        setting = {"model": MODEL, "precision": "bf16", "workers": args.workers}
        theirs = (run_openclip(work, pattern, long_steps, args.batch, device="cuda", **setting)
                  - run_openclip(work, pattern, args.steps, args.batch, device="cuda", **setting))
        ours = (run_wit(work, str(work / "shards"), long_steps, args.batch, **setting)
                - run_wit(work, str(work / "shards"), args.steps, args.batch, **setting))
    samples = (long_steps - args.steps) * args.batch
    rate_theirs, rate_ours = samples / theirs, samples / ours
    ratio = rate_ours / rate_theirs
    mfu = per_sample * rate_ours / (peak * 1e12) if peak else None
    print(f"{gpu}; {MODEL} 224 px, bf16, batch {args.batch}, {args.workers} workers; "
          f"steady state from {args.steps} vs {long_steps} steps; {per_sample / 1e9:.1f} GFLOP per sample")
    print(f"python -m open_clip_train.main : {rate_theirs:8.1f} samples/s")
    print(f"python -m train                : {rate_ours:8.1f} samples/s")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x); "
          + (f"MFU {mfu:.1%} of {peak:g} TFLOP/s (target >= {MFU_TARGET:.0%})" if mfu else "MFU: peak unknown"))
    print(json.dumps({"bench": "train_gpu", "metric": "samples/s (ViT-B-32, bf16, 1 GPU)", "gpu": gpu,
                      "baseline": round(rate_theirs, 1), "wit": round(rate_ours, 1), "ratio": round(ratio, 3),
                      "target": TARGET, "mfu": round(mfu, 4) if mfu else None, "mfu_target": MFU_TARGET,
                      "met": ratio >= TARGET and (mfu or 0) >= MFU_TARGET}))


if __name__ == "__main__":
    main()
