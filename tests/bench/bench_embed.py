"""Benchmark: `wit embed` against OpenCLIP's own embedding loop as clip_benchmark runs it.

The same SHARDS dir (N photo-like 256x256 JPEGs, captions: sentences of the real
Wikipedia excerpt) and the same model (an OpenCLIP architecture, random weights saved as
an OpenCLIP state-dict file). The baseline is clip_benchmark's loop: a webdataset pipeline
decoding with PIL and OpenCLIP's `preprocess` transform from
`open_clip.create_model_and_transforms`, a torch DataLoader with the same number of
workers, the captions tokenised in the loop, `model.encode_image` / `encode_text` and
F.normalize under no_grad (and bf16 autocast on a GPU, as `wit embed` uses). Ours:
`train.embed.run`. The figure is samples (image and text) per second; target >= 1.5x.

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
from train.embed import EmbedConfig, run  # noqa: E402
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


def baseline(shards: Path, name: str, checkpoint: Path, batch: int, workers: int, device: torch.device) -> float:
    """clip_benchmark's loop over the shards; samples per second."""
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(checkpoint), device=device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    urls = [str(p) for p in sorted(shards.glob("*.tar"))]
    dataset = (wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil")
               .to_tuple("jpg;png;webp", "txt").map_tuple(preprocess, lambda t: t).batched(batch, partial=True))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    started, seen = time.perf_counter(), 0
    with torch.no_grad(), autocast:
        for pixels, texts in loader:
            image = F.normalize(model.encode_image(pixels.to(device)), dim=-1).float().cpu()
            text = F.normalize(model.encode_text(tokenizer(list(texts)).to(device)), dim=-1).float().cpu()
            seen += len(image)
    return seen / (time.perf_counter() - started)


def ours(shards: Path, model: str, checkpoint: Path, out: Path, batch: int, workers: int) -> float:
    started = time.perf_counter()
    summary = run(EmbedConfig(str(checkpoint), str(shards), str(out), model=model, batch_size=batch, workers=workers))
    return summary["samples"] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_shards_dir(root / "shards", args.samples)
        torch.manual_seed(0)
        torch.save(open_clip.create_model(args.model).state_dict(), root / "model.pt")
        theirs = baseline(root / "shards", args.model, root / "model.pt", args.batch_size, args.workers, device)
        mine = ours(root / "shards", args.model, root / "model.pt", root / "E", args.batch_size, args.workers)
    ratio = mine / theirs
    precision = "bf16" if device.type == "cuda" else "fp32"
    print(f"{args.samples:,} 256x256 JPEGs with Wikipedia sentences in {-(-args.samples // SHARD)} shards; "
          f"{args.model} ({precision}, {device.type}), batch {args.batch_size}, {args.workers} workers")
    print(f"clip_benchmark-style OpenCLIP loop : {theirs:8.1f} samples/s (image + text)")
    print(f"wit embed                          : {mine:8.1f} samples/s (image + text)")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x)")
    print(json.dumps({"bench": "embed", "metric": "images/s", "samples": args.samples, "model": args.model,
                      "device": device.type, "baseline": round(theirs, 1), "wit": round(mine, 1),
                      "ratio": round(ratio, 3), "target": TARGET, "met": ratio >= TARGET}))


if __name__ == "__main__":
    main()
