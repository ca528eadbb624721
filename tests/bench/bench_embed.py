"""Benchmark: `wit embed` against OpenCLIP's own embedding loop as clip_benchmark runs it.

The same SHARDS dir (N photo-like 256x256 JPEGs, captions: sentences of the real
Wikipedia excerpt) and the same model (an OpenCLIP architecture, random weights saved as
an OpenCLIP state-dict file). The baseline is clip_benchmark's loop: a webdataset pipeline
decoding with PIL and OpenCLIP's `preprocess` transform from
`open_clip.create_model_and_transforms`, a torch DataLoader with the same number of
workers, the captions tokenised in the loop, `model.encode_image` / `encode_text` and
F.normalize under no_grad. Ours: `wit.embed.run.run`. Both are timed as whole commands
(model loading included). Each runs in fp32 and in bf16: the baseline's bf16 is
clip_benchmark's `--amp` (torch.autocast), ours casts the weights (`--precision bf16`).
The figure is samples (image and text) per second in bf16 (the precision `wit embed`
uses on a GPU); target >= 1.5x; the fp32 ratio is reported too.

    python tests/bench/bench_embed.py [--samples 512] [--model ViT-B-32] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import open_clip  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import webdataset as wds  # noqa: E402

from tests.bench.bench_train_data import textured_jpeg  # noqa: E402
from tests.bench.realtext import real_pages  # noqa: E402
from wit.embed.run import EmbedConfig, run  # noqa: E402
from wit.formats.tars import write_tar  # noqa: E402

TARGET = 1.5
SHARD = 128


def write_shards_dir(out: Path, samples: int) -> None:
    """NNNNNN.tar of SHARD samples each, with sizes.json and manifest.json."""
    sentences = [s for _, page in real_pages() for s in page]
    out.mkdir()
    entries = []
    for index, start in enumerate(range(0, samples, SHARD)):
        keys = range(start, min(start + SHARD, samples))
        buf = io.BytesIO()
        write_tar(buf, ((f"{n:09d}", [("jpg", textured_jpeg(n, (90 + n % 120, 120, 160))),
                                      ("json", json.dumps({"uid": f"{n:09d}"}).encode()),
                                      ("txt", sentences[n % len(sentences)].encode())]) for n in keys))
        (out / f"{index:06d}.tar").write_bytes(buf.getvalue())
        entries.append({"name": f"{index:06d}.tar", "samples": len(keys), "bytes": len(buf.getvalue()),
                        "sha256": hashlib.sha256(buf.getvalue()).hexdigest()})
    (out / "sizes.json").write_text(json.dumps({e["name"]: e["samples"] for e in entries}))
    (out / "manifest.json").write_text(json.dumps({"shards": entries}))


def baseline(shards: Path, name: str, checkpoint: Path, batch: int, workers: int, device: torch.device,
             amp: bool) -> float:
    """clip_benchmark's loop over the shards (with `--amp`: torch.autocast bf16); samples per second."""
    started = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint), device=device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    urls = [str(p) for p in sorted(shards.glob("*.tar"))]
    dataset = (wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
               .to_tuple("jpg;png;webp", "txt").map_tuple(preprocess, lambda t: t).batched(batch, partial=True))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    seen = 0
    with torch.no_grad(), autocast:
        for pixels, texts in loader:
            image = F.normalize(model.encode_image(pixels.to(device)), dim=-1).float().cpu()
            F.normalize(model.encode_text(tokenizer(list(texts)).to(device)), dim=-1).float().cpu()
            seen += len(image)
    return seen / (time.perf_counter() - started)


def ours(shards: Path, model: str, checkpoint: Path, out: Path, batch: int, workers: int, precision: str) -> float:
    started = time.perf_counter()
    summary = run(EmbedConfig(str(checkpoint), str(shards), str(out), model=model, batch_size=batch, workers=workers,
                              precision=precision))
    return summary["samples"] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--name", default="embed", help="the result's name (embed_gpu on a GPU machine)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_shards_dir(root / "shards", args.samples)
        torch.manual_seed(0)
        torch.save(open_clip.create_model(args.model).state_dict(), root / "model.pt")
        rates = {}
        for precision in ("fp32", "bf16"):
            rates[f"baseline_{precision}"] = baseline(root / "shards", args.model, root / "model.pt",
                                                      args.batch_size, args.workers, device, precision == "bf16")
            rates[f"wit_{precision}"] = ours(root / "shards", args.model, root / "model.pt", root / f"E-{precision}",
                                             args.batch_size, args.workers, precision)
    ratios = {p: rates[f"wit_{p}"] / rates[f"baseline_{p}"] for p in ("fp32", "bf16")}
    print(f"{args.samples:,} 256x256 JPEGs with Wikipedia sentences in {-(-args.samples // SHARD)} shards; "
          f"{args.model} on {device.type}, batch {args.batch_size}, {args.workers} workers")
    for precision in ("fp32", "bf16"):
        print(f"{precision}: clip_benchmark-style OpenCLIP loop {rates[f'baseline_{precision}']:8.1f} samples/s, "
              f"wit embed {rates[f'wit_{precision}']:8.1f} samples/s, ratio {ratios[precision]:.2f}x")
    print(json.dumps({"bench": args.name, "metric": "samples/s (bf16)", "samples": args.samples, "model": args.model,
                      "device": device.type, "baseline": round(rates["baseline_bf16"], 1),
                      "wit": round(rates["wit_bf16"], 1), "ratio": round(ratios["bf16"], 3), "target": TARGET,
                      "met": ratios["bf16"] >= TARGET, "fp32_ratio": round(ratios["fp32"], 3),
                      "wit_fp32": round(rates["wit_fp32"], 1), "baseline_fp32": round(rates["baseline_fp32"], 1)}))

if __name__ == "__main__":
    main()
