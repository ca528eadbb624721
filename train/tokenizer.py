"""Train a tokenizer, offline, on the texts of shards (`wit shard`'s SHARDS dir): every
sample's caption and, in image-centric shards, every one of its texts. For a multilingual
text tower (`model.tokenizer` in the training config); the trainer records the file's
sha256 and keeps a copy beside the run.

    python -m train.tokenizer --shards shards/ --out tokenizer.json --vocab-size 32000
    python -m train.tokenizer --shards shards/ --out spm.model --vocab-size 32000 --kind bpe

The file's suffix picks the library: `.json`, Hugging Face `tokenizers` (NFKC, then
SentencePiece-style `▁` word marks); `.model`, `sentencepiece` itself. `--kind unigram`
is SentencePiece's unigram language model (what XLM-V and mT5, MetaCLIP 2's tokenizers,
use); `bpe` is byte-pair encoding. A small corpus may give fewer pieces than asked for;
the summary says how many.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterator

from train.data.shards import list_shards
from train.model.text_tokens import FileTokenizer, file_kind
from wit.formats.atomic import atomic_path, file_sha256
from wit.formats.errors import WitError
from wit.formats.flags import option, run_command
from wit.formats.tars import open_url, stream_samples

PROG = "python -m train.tokenizer"
KINDS = ("unigram", "bpe")
UNKNOWN = "<unk>"


@dataclass(frozen=True)
class TokenizerConfig:
    """One `python -m train.tokenizer` run."""

    shards: str = option(help="a SHARDS dir, or a shard pattern with a sizes.json", metavar="SHARDS")
    out: str = option(help="the tokenizer file: NAME.json (Hugging Face tokenizers) or NAME.model (SentencePiece)",
                      metavar="FILE")
    vocab_size: int = option(32_000, "pieces in the vocabulary (XLM-V has 901,629; mT5 250,112)")
    kind: str = option("unigram", f"the model: {' or '.join(KINDS)}")
    max_texts: int = option(0, "train on at most this many texts (0: all)")
    sizes: str | None = option(None, "sizes.json of a shard pattern", metavar="PATH")

    def __post_init__(self) -> None:
        file_kind(self.out)
        if self.kind not in KINDS:
            raise WitError(f"--kind: unknown {self.kind!r} (one of: {', '.join(KINDS)})")
        if self.vocab_size < 8:
            raise WitError("--vocab-size: must be at least 8")
        if self.max_texts < 0:
            raise WitError("--max-texts: must not be negative")


def shard_texts(shards: str, sizes: str | None = None, limit: int = 0) -> Iterator[str]:
    """Every text of the shards' samples, in shard order: the caption, then the other texts
    of an image-centric sample's json."""
    given = 0
    for shard in list_shards(shards, sizes):
        with open_url(shard.url) as stream:
            for sample in stream_samples(stream, ["txt", "json"]):
                texts = [sample.parts["txt"].decode("utf-8", "replace")] if "txt" in sample.parts else []
                if "json" in sample.parts:
                    try:
                        meta = json.loads(sample.parts["json"])
                    except ValueError:
                        meta = {}
                    extra = meta.get("texts") if isinstance(meta, dict) else None
                    texts += [t["text"] for t in extra or [] if isinstance(t, dict) and isinstance(t.get("text"), str)]
                for text in dict.fromkeys(t for t in texts if t.strip()):
                    yield text
                    given += 1
                    if limit and given >= limit:
                        return


def train_tokenizer(config: TokenizerConfig) -> dict:
    texts = list(shard_texts(config.shards, config.sizes, config.max_texts))
    if not texts:
        raise WitError(f"{config.shards}: no texts in the shards")
    out_dir = os.path.dirname(os.path.abspath(config.out))
    if not os.path.isdir(out_dir):
        raise WitError(f"--out {config.out}: no such directory {out_dir}")
    with atomic_path(config.out) as tmp:
        if file_kind(config.out) == "tokenizers":
            _train_hf(texts, config, tmp)
        else:
            _train_sentencepiece(texts, config, tmp)
    pieces = FileTokenizer(config.out, 2).base_size
    return {"tokenizer": os.path.abspath(config.out), "kind": config.kind, "texts": len(texts),
            "vocab_size": pieces, "asked": config.vocab_size, "sha256": file_sha256(config.out, "tokenizer file")}


def _train_hf(texts: list[str], config: TokenizerConfig, target: str) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if config.kind == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=config.vocab_size, special_tokens=[UNKNOWN], unk_token=UNKNOWN,
                                          show_progress=False)
    else:
        tokenizer = Tokenizer(models.BPE(unk_token=UNKNOWN))
        trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, special_tokens=[UNKNOWN], show_progress=False)
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    tokenizer.save(target)


def _train_sentencepiece(texts: list[str], config: TokenizerConfig, target: str) -> None:
    import sentencepiece

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(target))) as scratch:
        prefix = os.path.join(scratch, "spm")
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_prefix=prefix, vocab_size=config.vocab_size,
                model_type=config.kind, character_coverage=0.9995, hard_vocab_limit=False, minloglevel=2,
                num_threads=os.cpu_count() or 1)
        except RuntimeError as e:
            raise WitError(f"sentencepiece: {str(e).splitlines()[0][:200]}") from None
        shutil.move(prefix + ".model", target)


def _run(config: TokenizerConfig) -> int:
    summary = train_tokenizer(config)
    print(json.dumps(summary), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, __doc__, TokenizerConfig, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
