"""Search the images of shards with a trained model, by a text or by an image.

The image features of the shards are computed once and cached beside the checkpoint, in
CHECKPOINT.search/<sha256 of the shard urls and sample counts>.pt; the cache is reused
while the checkpoint, the tar files and the pixel cap are unchanged, else recomputed.
With `--embeddings E` (`wit embed` of the same shards with the same checkpoint) nothing is
decoded or embedded but the query: E's image vectors go into a faiss `IndexFlatIP` (exact
inner products, which on L2-normalised vectors are the cosine similarities), and only
the shards holding the top results are read, for their texts and urls.

    python -m train.search --checkpoint RUN/checkpoints/latest.pt --shards shards/ --text "a photo of a dog"
    python -m train.search --checkpoint CKPT --shards 'held-out/{000000..000009}.tar' --image query.jpg --top 5
    python -m train.search --checkpoint CKPT --shards shards/ --embeddings embeddings/ --text "a red car"
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from train.data import preprocess as images
from train.config import EvalConfig, TrainConfig
from train.data.stream import Sample, read_samples
from train.model.encode import Encoder, decode_all, inference
from train.model.clip import Loaded, load
from train.data.shards import Shard, list_shards
from wit.formats.atomic import atomic_open, file_sha256
from wit.formats.embeddings import read_embeddings, read_summary
from wit.formats.errors import WitError
from wit.formats.images import ImageRefused
from wit.formats.flags import option, run_command

PROG = "python -m train.search"


@dataclass
class Index:
    features: torch.Tensor    # [n, D], L2-normalised
    keys: list[str]
    texts: list[str]
    urls: list[str]


def cache_path(checkpoint: str | Path, shards: list[Shard]) -> Path:
    """CHECKPOINT.search/<sha256 of the resolved shard urls and their sample counts>.pt."""
    listing = json.dumps([[_resolve(s.url), s.samples] for s in shards])
    return Path(f"{checkpoint}.search") / f"{hashlib.sha256(listing.encode()).hexdigest()}.pt"


def _resolve(url: str) -> str:
    return url if "://" in url or url.startswith("pipe:") else os.path.abspath(url)


def _stat(path: str | Path) -> list[int] | None:
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:   # a remote url: only its name and sample count identify it
        return None


def fingerprint(checkpoint: str | Path, shards: list[Shard], max_pixels: int) -> dict:
    """What the cached features depend on besides the shard listing."""
    return {"checkpoint": _stat(checkpoint), "tars": [_stat(s.url) for s in shards], "max_pixels": max_pixels}


def build_index(loaded: Loaded, shards: list[Shard], encoder: Encoder, max_pixels: int,
                progress: bool = False) -> tuple[Index, int]:
    """The features of every decodable image of the shards, and the number of samples skipped."""
    features, indexed, seen = [], [], 0
    with inference(loaded.model), tqdm(total=sum(s.samples for s in shards), desc="index", unit="sample",
                                       disable=not progress) as bar:
        for batch in _batches((s for shard in shards for s in read_samples(shard.url)), encoder.batch_size):
            usable = [s for s in batch if s.image is not None]
            pixels, kept = decode_all([s.image for s in usable], loaded.image_size, max_pixels)
            if kept:
                features.append(encoder.images(loaded.model, pixels))
            indexed += [usable[i] for i in kept]
            seen += len(batch)
            bar.update(len(batch))
    if not indexed:
        raise WitError(f"{shards[0].url}: no decodable image in the {len(shards)} shard(s)")
    index = Index(torch.cat(features), [s.key for s in indexed], [_text(s) for s in indexed], [_url(s) for s in indexed])
    return index, seen - len(indexed)


def _batches(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    batch = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _text(sample: Sample) -> str:
    return " ".join((sample.text or "").split())


def _url(sample: Sample) -> str:
    try:
        meta = json.loads(sample.meta) if sample.meta else {}
    except ValueError:
        return ""
    return str(meta.get("url", "")) if isinstance(meta, dict) else ""


def cached_index(checkpoint: str | Path, loaded: Loaded, shards: list[Shard], encoder: Encoder,
                 max_pixels: int, progress: bool = False) -> Index:
    """The shards' index from the cache when it is up to date, else built and cached."""
    path, expected = cache_path(checkpoint, shards), fingerprint(checkpoint, shards, max_pixels)
    try:
        cached = torch.load(path, weights_only=True)
        if cached["fingerprint"] == expected:
            return Index(cached["features"], cached["keys"], cached["texts"], cached["urls"])
    except FileNotFoundError:
        pass
    except Exception as e:   # a damaged cache is rebuilt
        print(f"{PROG}: {path}: unreadable cache, rebuilding ({type(e).__name__})", file=sys.stderr)
    index, skipped = build_index(loaded, shards, encoder, max_pixels, progress)
    print(f"{PROG}: indexed {len(index.keys)} images ({skipped} samples skipped)", file=sys.stderr)
    _save({"fingerprint": expected, "features": index.features, "keys": index.keys, "texts": index.texts,
           "urls": index.urls}, path)
    return index


def _save(data: dict, path: Path) -> None:
    """torch.save to a temporary file beside `path`, then rename; a cache that cannot be written is only reported."""
    try:
        with atomic_open(path) as f:
            torch.save(data, f)
    except OSError as e:
        print(f"{PROG}: warning: cannot write the cache {path} ({e.strerror or e}); not cached", file=sys.stderr)


def query_features(loaded: Loaded, encoder: Encoder, text: str | None, image: bytes | None,
                   max_pixels: int) -> torch.Tensor:
    """The [D] feature of the query text or image."""
    with inference(loaded.model):
        if text is not None:
            return encoder.texts(loaded.model, loaded.tokenizer([text]))[0]
        return encoder.images(loaded.model, images.decode(image, loaded.image_size, max_pixels)[None])[0]


def top(index: Index, query: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """(position in the index, cosine similarity) of the k best matches, best first."""
    scores = index.features @ query
    best = torch.topk(scores, min(k, len(scores)))
    return list(zip(best.indices.tolist(), best.values.tolist()))


@dataclass
class EmbeddedIndex:
    """The image vectors of an EMBED dir in a faiss index, with each vector's uid and shard."""
    faiss: object
    keys: list[str]
    shards: list[str]


def embedded_index(embed_dir: str, checkpoint: str, shards: list[Shard], shards_arg: str) -> EmbeddedIndex:
    """The index of `wit embed`'s output for these shards and this checkpoint (else a
    one-line error): the rows with an image embedding, in a faiss IndexFlatIP."""
    import faiss
    import pyarrow.compute as pc

    summary = read_summary(embed_dir)
    names = [str(s.get("name")) for s in summary["shards"]]
    if names != [os.path.basename(s.url) for s in shards]:
        raise WitError(f"{embed_dir}: embeddings of other shards than {shards_arg} ({len(names)} shards)")
    if summary.get("checkpoint_sha256") != file_sha256(checkpoint, "checkpoint"):
        raise WitError(f"{embed_dir}: embeddings made with another checkpoint ({summary.get('checkpoint')})")
    table = read_embeddings(embed_dir, shards_arg if os.path.isdir(shards_arg) else None)
    counts = [s.get("samples") for s in summary["shards"]]
    if sum(c for c in counts if isinstance(c, int)) != table.num_rows:
        raise WitError(f"{embed_dir}: the per-shard sample counts of its summary do not add up to its rows")
    owner = np.repeat(np.arange(len(shards)), counts)
    usable = pc.is_valid(table["image"]).to_numpy(zero_copy_only=False)
    vectors = np.ascontiguousarray(pc.list_flatten(table["image"].filter(usable)).to_numpy().reshape(-1, summary["dim"]))
    if not len(vectors):
        raise WitError(f"{embed_dir}: no image embedding (no decodable image in the shards)")
    index = faiss.IndexFlatIP(summary["dim"])
    index.add(vectors)
    keys = np.asarray(table["uid"].to_pylist(), dtype=object)[usable].tolist()
    return EmbeddedIndex(index, keys, [shards[i].url for i in owner[usable]])


def embedded_results(index: EmbeddedIndex, query: torch.Tensor, k: int) -> list[str]:
    """The result lines of the k best matches, with texts and urls read from their shards only."""
    scores, rows = index.faiss.search(query.numpy().astype(np.float32)[None], min(k, index.faiss.ntotal))
    best = [(int(r), float(s)) for r, s in zip(rows[0], scores[0])]
    wanted: dict[str, set[str]] = {}
    for row, _ in best:
        wanted.setdefault(index.shards[row], set()).add(index.keys[row])
    found = {}
    for url, keys in wanted.items():
        found.update({s.key: s for s in read_samples(url) if s.key in keys})
    samples = [found[index.keys[row]] for row, _ in best]
    return [f"{rank}\t{score:.4f}\t{sample.key}\t{_text(sample)}\t{_url(sample)}"
            for rank, ((_, score), sample) in enumerate(zip(best, samples), 1)]


def search(args: SearchConfig) -> list[str]:
    """The CLI's work: the result lines, `rank<TAB>score<TAB>key<TAB>text<TAB>url`."""
    image = None
    if args.image is not None:
        try:
            image = Path(args.image).read_bytes()
        except FileNotFoundError:
            raise WitError(f"{args.image}: no such image") from None
        except OSError as e:
            raise WitError(f"{args.image}: cannot read the image ({e.strerror})") from None
    shards = list_shards(args.shards, args.sizes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load(args.checkpoint, device)
    encoder = Encoder(device, args.batch_size, loaded.mean, loaded.std)
    try:
        query = query_features(loaded, encoder, args.text, image, args.max_pixels)
    except ImageRefused as e:
        raise WitError(f"{args.image}: {e}") from None
    if args.embeddings is not None:
        return embedded_results(embedded_index(args.embeddings, args.checkpoint, shards, args.shards), query, args.top)
    index = cached_index(args.checkpoint, loaded, shards, encoder, args.max_pixels, progress=True)
    return [f"{rank}\t{score:.4f}\t{index.keys[i]}\t{index.texts[i]}\t{index.urls[i]}"
            for rank, (i, score) in enumerate(top(index, query, args.top), 1)]


@dataclass(frozen=True)
class SearchConfig:
    """One `python -m train.search` run."""

    checkpoint: str = option(help="a trainer checkpoint (RUN/checkpoints/*.pt)", metavar="CKPT")
    shards: str = option(help="a SHARDS dir or a brace pattern of tar urls")
    sizes: str | None = option(None, "the shards' sizes.json (default: the one next to them)")
    text: str | None = option(None, "find the images that best match this text")
    image: str | None = option(None, "find the images most similar to this image file")
    embeddings: str | None = option(None, "`wit embed` output of these shards with this checkpoint: search its "
                                          "vectors with faiss", metavar="DIR")
    top: int = option(10, "results to print")
    batch_size: int = option(EvalConfig.batch_size, "images per model call")
    max_pixels: int = option(TrainConfig.max_pixels, "larger images are skipped")

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise WitError("give one of --text and --image")
        if self.top < 1 or self.batch_size < 1:
            raise WitError("--top and --batch-size must be at least 1")


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, __doc__, SearchConfig, _run, argv)


def _run(args: SearchConfig) -> int:
    try:
        lines = search(args)
    except WitError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
