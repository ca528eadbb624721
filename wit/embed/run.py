"""`wit embed`: the L2-normalised image and text embeddings of every sample of a SHARDS dir
(the EMBED dir of `wit.formats.embeddings`), with a trainer checkpoint or an OpenCLIP
state-dict file whose architecture `--model` names.

One unit of work per shard (its parquet file, then its marker), so a rerun does only the
shards without a marker. DataLoader worker processes read the shards (a shard per worker
at a time), decode the images with the eval centre crop (`train.data.preprocess`) and tokenise
the captions while the model runs: in inference mode, bf16 weights and pinned memory on
a GPU, fp32 on the CPU. A causal text tower pooled at the end token (CLIP's) runs only on
the positions up to the batch's last end token: the padding after it never reaches a
pooled feature, so the result is the same for less work. Under torchrun or srun each rank
embeds shards rank::world into the one build dir, and rank 0 finishes it.
The work is `train.model.shard_embeddings`, which `wit filter --checkpoint` runs too.

The fingerprint is the checkpoint's sha256 (hashing reads about 1 GB/s, little next to
embedding, and a copied or touched file stays the same), `--model`, the manifest's
sha256, the precision and the pixel cap; batch size, workers and device change the
output only by float rounding and are left out.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from wit.formats.flags import option
from wit.formats.embeddings import manifest_sha256
from wit.formats.errors import WitError
from wit.formats.images import MAX_PIXELS

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class EmbedConfig:
    checkpoint: str = option(help="a trainer checkpoint or an OpenCLIP pretrained file", metavar="FILE")
    shards: str = option(help="SHARDS dir (wit shard)", metavar="DIR")
    out: str = option(help="EMBED output directory", metavar="DIR")
    model: str = option("", "the architecture of an OpenCLIP pretrained file: a built-in name (e.g. ViT-B-32) "
                            "or a model config .json (a run's RUN/<name>.json); not for trainer checkpoints",
                        metavar="NAME|FILE")
    tokenizer: str = option("", "with --model: the tokenizer file of its text tower (a tokenizer.json or "
                                "SentencePiece model, e.g. a run's RUN/tokenizer.json)", metavar="FILE")
    batch_size: int = option(256, "samples per model call")
    device: str = option("auto", "cpu, cuda or cuda:N; auto: cuda when available (under torchrun: the local GPU)")
    precision: str = option("auto", "bf16 (the weights cast: about 3x on CPUs with AMX) or fp32; auto: bf16 on a "
                                    "GPU, fp32 on the CPU")
    workers: int = option(min(8, os.cpu_count() or 1), "decoding worker processes (0: decode in this process)")
    max_pixels: int = option(MAX_PIXELS, "larger images get a null embedding")
    overwrite: bool = option(False, "replace an existing output made with other settings (built beside it, "
                                    "swapped in when complete)")

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise WitError(f"--precision: unknown {self.precision!r} (choose from: {', '.join(PRECISIONS)})")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise WitError(f"--device: {self.device!r} is not auto, cpu, cuda or cuda:N")
        for name in ("batch_size", "max_pixels"):
            if getattr(self, name) < 1:
                raise WitError(f"--{name.replace('_', '-')}: must be at least 1")
        if self.workers < 0:
            raise WitError("--workers: must be at least 0")
        if self.tokenizer and not self.model:
            raise WitError("--tokenizer: only with --model (a trainer checkpoint names its own tokenizer)")


def run(config: EmbedConfig) -> dict:
    """Build (or finish, or confirm) the EMBED dir; return its summary (embed.json)."""
    from train.model.shard_embeddings import embed_shards_dir

    manifest_sha256(config.shards)   # a finished `wit shard` output, else a one-line error naming its manifest
    return embed_shards_dir(config.checkpoint, config.shards, config.out, model=config.model,
                            batch_size=config.batch_size, device=config.device, precision=config.precision,
                            workers=config.workers, max_pixels=config.max_pixels, overwrite=config.overwrite,
                            tokenizer=config.tokenizer)
