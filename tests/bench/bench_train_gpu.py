"""Benchmark (GPU): ViT-B-32 training throughput of `python -m train` against OpenCLIP's
trainer (`python -m open_clip_train.main`) on one GPU, and the model FLOP utilisation; in
three modes (bench_train.MODES, with OpenCLIP's matching flags): the CLIP loss, FLIP patch
dropout 0.5 and SigLIP. One JSON line per mode.

Same shards (photo-like 256x256 JPEGs), model (ViT-B-32, 224 px, trained from scratch),
batch per GPU (256), precision (bf16 autocast), optimizer settings and dataloader
workers. As in bench_train.py each trainer runs once in a fresh process and its
steady-state rate is read from its own log, after the first window of steps.
MFU = model FLOPs per sample (forward and backward of model and loss, counted with
torch's FlopCounterMode at the benchmark batch) x samples/s / the GPU's dense bf16 peak.
Targets: >= 1.2x OpenCLIP's samples/s, MFU >= 40%. Without a CUDA device it prints a
skipped result (and `make bench` lists it as not run).

    python tests/bench/bench_train_gpu.py [--steps 60] [--log-every 10] [--batch 256] [--workers 8] [--peak-tflops F]
                                          [--modes clip patch_dropout siglip]
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

from tests.bench.bench_train import mode_flags, run_openclip, run_wit  # noqa: E402
from tests.bench.bench_train_data import textured_jpeg  # noqa: E402
from tests.support.shards import write_shards  # noqa: E402

TARGET, MFU_TARGET = 1.2, 0.40
MODEL, SHARD, DISTINCT_IMAGES = "ViT-B-32", 250, 1000
GPU_MODES = ("clip", "patch_dropout", "siglip")
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device name.
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.4,
               "A100": 312.0, "L40S": 362.0, "A10G": 70.0}


def peak_tflops(name: str) -> float | None:
    """The dense bf16 peak of the GPU called `name`, or None when unknown."""
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def flops_per_sample(model_name: str, batch: int, device: str, mode: str = "clip") -> float:
    """Model FLOPs of one training sample: forward and backward of the model and the
    loss over a batch of `batch`, as counted by torch's FlopCounterMode, in `mode` (the
    patch-dropout mode counts the kept tokens only)."""
    import open_clip
    from torch.utils.flop_counter import FlopCounterMode

    from tests.bench.bench_train import PATCH_DROPOUT
    from train.loss import clip_loss, siglip_loss
    from train.model.tune import install_patch_dropout

    model = open_clip.create_model(model_name, **({"init_logit_bias": -10.0} if mode == "siglip" else {})).to(device)
    if mode == "patch_dropout":
        install_patch_dropout(model).ratio = PATCH_DROPOUT
    model.train()
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    pixels = torch.randn(batch, 3, size, size, device=device)
    tokens = torch.randint(0, 49408, (batch, model.context_length), device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        image_features, text_features, scale, *bias = model(pixels, tokens)
        if mode == "siglip":
            loss = siglip_loss(image_features.float(), text_features.float(), scale.float(), bias[0].float())
        else:
            loss = clip_loss(image_features.float(), text_features.float(), scale.float())
        loss.backward()
    return counter.get_total_flops() / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    parser.add_argument("--modes", nargs="+", choices=GPU_MODES, default=list(GPU_MODES))
    parser.add_argument("--dry-run", action="store_true", help="the whole path on the CPU with the tiny model "
                        "and a few steps (a check of the script, not a measurement)")
    args = parser.parse_args()
    device, model = "cuda", MODEL
    if args.dry_run:
        from tests.bench.bench_train import tiny
        from train.config import ModelConfig
        from train.model.clip import register

        cfg = tiny()["model"]
        register(ModelConfig(cfg["name"], cfg["config"]))
        device, model, args.steps, args.log_every, args.batch, args.workers = "cpu", None, 6, 2, 8, 1
    elif not torch.cuda.is_available():
        print("no CUDA device: the GPU benchmark did not run")
        for mode in args.modes:
            print(json.dumps({"bench": _name(mode), "metric": f"samples/s (ViT-B-32, bf16, 1 GPU, {mode})",
                              "skipped": "no CUDA device"}))
        return
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none (dry run)"
    peak = args.peak_tflops or peak_tflops(gpu) if device == "cuda" else 1.0
    print(f"{gpu}; {model or 'tiny'} 224 px, bf16, batch {args.batch}, {args.workers} workers; "
          f"steady state over steps {args.log_every + 1}-{args.steps}, from each trainer's log", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pictures = [textured_jpeg(n, (90 + n % 120, 120, 150)) for n in range(DISTINCT_IMAGES)]
        shard_count = -(-args.steps * args.batch // SHARD) + 1
        write_shards(work / "shards", [SHARD] * shard_count, image=lambda n, _: pictures[n % DISTINCT_IMAGES])
        pattern = f"{work / 'shards'}/{{000000..{shard_count - 1:06d}}}.tar"
        setting = {"model": model, "precision": "bf16", "workers": args.workers}
        for mode in args.modes:
            ours_flags, their_flags = mode_flags(mode, work / "unused")
            per_sample = flops_per_sample(model or tiny()["model"]["name"], args.batch, device, mode)
            rate_theirs = run_openclip(work, pattern, args.steps, args.batch, device=device, flags=their_flags,
                                       log_every=args.log_every, **setting)
            rate_ours = run_wit(work, str(work / "shards"), args.steps, args.batch, flags=ours_flags,
                                log_every=args.log_every, **setting)
            ratio = rate_ours / rate_theirs
            mfu = per_sample * rate_ours / (peak * 1e12) if peak else None
            print(f"{mode}: {per_sample / 1e9:.1f} GFLOP per sample; python -m open_clip_train.main "
                  f"{rate_theirs:8.1f} samples/s, python -m train {rate_ours:8.1f} samples/s; ratio {ratio:.2f}x "
                  f"(target >= {TARGET}x); " + (f"MFU {mfu:.1%} of {peak:g} TFLOP/s (target >= {MFU_TARGET:.0%})"
                                                if mfu else "MFU: peak unknown"))
            print(json.dumps({"bench": _name(mode), "metric": f"samples/s (ViT-B-32, bf16, 1 GPU, {mode})",
                              "gpu": gpu, "baseline": round(rate_theirs, 1), "wit": round(rate_ours, 1),
                              "ratio": round(ratio, 3), "target": TARGET, "mfu": round(mfu, 4) if mfu else None,
                              "mfu_target": MFU_TARGET, "met": ratio >= TARGET and (mfu or 0) >= MFU_TARGET}),
                  flush=True)


def _name(mode: str) -> str:
    return "train_gpu" if mode == "clip" else f"train_gpu_{mode}"


if __name__ == "__main__":
    main()
