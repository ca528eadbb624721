"""Search the images of shards with a trained model, by a text or by an image.

The images are embedded once, into an EMBED dir (`wit.formats.embeddings`, what `wit
embed` writes): `--embeddings DIR` when given (used when finished, else built there), else
a cache beside the checkpoint, CHECKPOINT.search/<sha256 of the shard urls and sample
counts>/, rebuilt when the checkpoint, the tars or the pixel cap change. Its image vectors
go into a faiss `IndexFlatIP` (exact inner products, which on L2-normalised vectors are
the cosine similarities); only the query is embedded at search time, and only the shards
holding the top results are read, for their texts and urls.

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

import numpy as np
import torch

from train.data import preprocess as images
from train.config import EvalConfig, TrainConfig
from train.data.stream import Sample, read_samples
from train.model.encode import Encoder, inference
from train.model.clip import Loaded, load
from train.model.shard_embeddings import embed_shards_dir
from train.data.shards import Shard, list_shards
from wit.formats.atomic import file_sha256
from wit.formats.embeddings import SUMMARY, is_local, read_embeddings, read_summary, shards_sha256
from wit.formats.errors import WitError
from wit.formats.images import ImageRefused
from wit.formats.flags import option, run_command

PROG = "python -m train.search"


def cache_dir(checkpoint: str | Path, shards: list[Shard]) -> Path:
    """CHECKPOINT.search/<sha256 of the resolved shard urls and their sample counts>: the
    EMBED dir searched when no --embeddings is given."""
    listing = json.dumps([[os.path.abspath(s.url) if is_local(s.url) else s.url, s.samples] for s in shards])
    return Path(f"{checkpoint}.search") / hashlib.sha256(listing.encode()).hexdigest()


def embeddings_of(config: SearchConfig, shards: list[Shard]) -> tuple[str, bool]:
    """The EMBED dir to search: --embeddings when finished, else built there, or the cache
    beside the checkpoint, built or brought up to date; and whether it was made or confirmed
    here for these shards and this checkpoint (else `embedded_index` checks it)."""
    given = config.embeddings is not None
    out = config.embeddings if given else str(cache_dir(config.checkpoint, shards))
    if given and os.path.exists(os.path.join(out, SUMMARY)):
        return out, False
    try:
        summary = embed_shards_dir(config.checkpoint, config.shards, out, batch_size=config.batch_size,
                                   workers=config.workers, max_pixels=config.max_pixels, overwrite=not given,
                                   sizes=config.sizes)
    except OSError as e:
        raise WitError(f"{e.filename or out}: cannot write the embeddings ({e.strerror or e}); "
                       "give --embeddings DIR somewhere writable") from None
    print(f"{PROG}: {out}: {summary['images']} images embedded of {summary['samples']} samples",
          file=sys.stderr)
    return out, True


def _text(sample: Sample) -> str:
    return " ".join((sample.text or "").split())


def _url(sample: Sample) -> str:
    try:
        meta = json.loads(sample.meta) if sample.meta else {}
    except ValueError:
        return ""
    return str(meta.get("url", "")) if isinstance(meta, dict) else ""


def query_features(loaded: Loaded, encoder: Encoder, text: str | None, image: bytes | None,
                   max_pixels: int) -> torch.Tensor:
    """The [D] feature of the query text or image."""
    with inference(loaded.model):
        if text is not None:
            return encoder.texts(loaded.model, loaded.tokenizer([text]))[0]
        return encoder.images(loaded.model, images.decode(image, loaded.image_size, max_pixels)[None])[0]


@dataclass
class EmbeddedIndex:
    """The image vectors of an EMBED dir in a faiss index, with each vector's uid and shard."""
    faiss: object
    keys: list[str]
    shards: list[str]


def embedded_index(embed_dir: str, checkpoint: str, shards: list[Shard], shards_arg: str,
                   checked: bool = False) -> EmbeddedIndex:
    """The index of `wit embed`'s output for these shards and this checkpoint (else a
    one-line error; `checked`: the embedding engine has just confirmed the checkpoint and
    the shards, so they are not hashed again): the rows with an image embedding, in a faiss
    IndexFlatIP."""
    import faiss
    import pyarrow.compute as pc

    summary = read_summary(embed_dir)
    names = [str(s.get("name")) for s in summary["shards"]]
    if names != [os.path.basename(s.url) for s in shards]:
        raise WitError(f"{embed_dir}: embeddings of other shards than {shards_arg} ({len(names)} shards)")
    if not checked and summary.get("checkpoint_sha256") != file_sha256(checkpoint, "checkpoint"):
        raise WitError(f"{embed_dir}: embeddings made with another checkpoint ({summary.get('checkpoint')})")
    listing = [(s.url, s.samples) for s in shards]
    if not checked and os.path.isdir(shards_arg) and summary["manifest_sha256"] != shards_sha256(shards_arg, listing):
        raise WitError(f"{embed_dir}: embeddings of another version of {summary['shards_dir']} "
                       f"(its manifest changed; run `wit embed` again)")
    table = read_embeddings(embed_dir)
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
    embed_dir, checked = embeddings_of(args, shards)
    return embedded_results(embedded_index(embed_dir, args.checkpoint, shards, args.shards, checked), query, args.top)


@dataclass(frozen=True)
class SearchConfig:
    """One `python -m train.search` run."""

    checkpoint: str = option(help="a trainer checkpoint (RUN/checkpoints/*.pt)", metavar="CKPT")
    shards: str = option(help="a SHARDS dir or a brace pattern of tar urls")
    sizes: str | None = option(None, "the shards' sizes.json (default: the one next to them)")
    text: str | None = option(None, "find the images that best match this text")
    image: str | None = option(None, "find the images most similar to this image file")
    embeddings: str | None = option(None, "the EMBED dir of these shards with this checkpoint (`wit embed`): "
                                          "used when finished, else built there (default: a cache beside the "
                                          "checkpoint, CKPT.search/)", metavar="DIR")
    top: int = option(10, "results to print")
    batch_size: int = option(EvalConfig.batch_size, "images per model call")
    workers: int = option(min(8, os.cpu_count() or 1), "decoding worker processes while embedding the shards "
                                                       "(0: decode in this process)")
    max_pixels: int = option(TrainConfig.max_pixels, "larger images are skipped")

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise WitError("give one of --text and --image")
        if self.top < 1 or self.batch_size < 1:
            raise WitError("--top and --batch-size must be at least 1")
        if self.workers < 0:
            raise WitError("--workers: must be at least 0")


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
