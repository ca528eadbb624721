"""Benchmark: the trainer's data loading against OpenCLIP's own webdataset pipeline.

Both read the same WebDataset shards (N textured 256x256 JPEGs with captions) with one
dataloader worker and the same transform (shorter side resized to 224, bicubic, random
224 square crop, OpenAI mean/std normalisation, OpenCLIP's tokenizer), and deliver
batches of normalised float images and tokens to the training process. OpenCLIP:
`open_clip_train.data.get_wds_dataset` with a torchvision transform. Ours:
`train.data.stream` (uint8 batches from the worker, normalised in the training process).
The figure is images per second per worker over a whole epoch, best of `--repeat`,
alternating; target >= 1.5x.

    python tests/bench/bench_train_data.py [--images 3000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torchvision.transforms as T  # noqa: E402
import open_clip_train.data  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from tests.support.shards import write_shards  # noqa: E402
from train.data import stream as data  # noqa: E402
from train.data import preprocess as images  # noqa: E402
from train.data.shards import list_shards  # noqa: E402

TARGET = 1.5
SIZE, BATCH, SHARD = 224, 64, 250


def textured_jpeg(n: int, colour: tuple) -> bytes:
    """A 256x256 photo-like JPEG: a tinted background, a few discs, sensor noise."""
    rng = np.random.default_rng(n)
    im = Image.new("RGB", (256, 256), colour)
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y, r = rng.integers(0, 256), rng.integers(0, 256), rng.integers(10, 60)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    noisy = np.asarray(im).astype(np.int16) + rng.integers(-8, 8, (256, 256, 3))
    buf = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def patch_openclip() -> None:
    """OpenCLIP 3.3's sample grouping predates webdataset 0.2.111's end-of-shard marker
    (an empty dict, which it reads as a file and fails on); drop the marker, as
    webdataset's own grouping does. Nothing else of OpenCLIP's pipeline changes."""
    import functools

    import webdataset.tariterators

    open_clip_train.data.tar_file_expander = functools.partial(webdataset.tariterators.tar_file_expander,
                                                               eof_value=None)


def openclip_epoch(pattern: str, samples: int, tokenizer) -> tuple[int, float]:
    args = SimpleNamespace(train_data=pattern, val_data=None, train_num_samples=samples,
                           train_data_upsampling_factors=None, dataset_resampled=False, seed=0,
                           batch_size=BATCH, workers=1, world_size=1, distributed=False)
    transform = T.Compose([T.Resize(SIZE, interpolation=T.InterpolationMode.BICUBIC), T.RandomCrop(SIZE),
                           T.ToTensor(), T.Normalize(open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)])
    loader = open_clip_train.data.get_wds_dataset(args, transform, is_train=True, epoch=0, tokenizer=tokenizer).dataloader
    started, seen = time.perf_counter(), 0
    for pixels, tokens in loader:
        seen += pixels.shape[0]
    return seen, time.perf_counter() - started


def wit_epoch(shards_dir: str, tokenizer) -> tuple[int, float]:
    shards = list_shards(shards_dir)
    plan = data.plan_epoch(shards, 0, 0, 1, 1, BATCH)
    settings = data.StreamSettings(0, BATCH, SIZE, 2048, 89_478_485)
    stream = data.EpochStream(plan, 0, 0, None, settings, tokenizer)
    started, seen = time.perf_counter(), 0
    for batch in data.loader(stream, True, False, 0):
        pixels = images.normalize(batch["images"], open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
        seen += pixels.shape[0]
    return seen, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    patch_openclip()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [SHARD] * (args.images // SHARD)
        write_shards(Path(tmp), sizes, image=textured_jpeg)
        pattern = f"{tmp}/{{000000..{len(sizes) - 1:06d}}}.tar"
        theirs, ours = [], []
        for _ in range(args.repeat):
            theirs.append(openclip_epoch(pattern, sum(sizes), tokenizer))
            ours.append(wit_epoch(tmp, tokenizer))
    rate = lambda runs: max(n / s for n, s in runs)  # noqa: E731
    ratio = rate(ours) / rate(theirs)
    print(f"{sum(sizes):,} 256x256 JPEGs in {len(sizes)} shards; batch {BATCH}, crop {SIZE}, 1 worker")
    print(f"OpenCLIP get_wds_dataset : {rate(theirs):8.1f} images/s per worker ({theirs[0][0]:,} images/epoch)")
    print(f"wit train.data.stream           : {rate(ours):8.1f} images/s per worker ({ours[0][0]:,} images/epoch)")
    print(f"ratio {ratio:.2f}x (target >= {TARGET}x)")
    print(json.dumps({"bench": "train_data", "metric": "images/s per worker", "images": sum(sizes),
                      "baseline": round(rate(theirs), 1), "wit": round(rate(ours), 1), "ratio": round(ratio, 3),
                      "target": TARGET, "met": ratio >= TARGET}))


if __name__ == "__main__":
    main()
