"""Tokenizers from a local file, for a multilingual text tower (MetaCLIP 2's worldwide
models use XLM-V's or mT5's): a Hugging Face `tokenizer.json` (the `tokenizers` library)
or a SentencePiece `.model`, never downloaded.

OpenCLIP's text tower pools the position of the highest token id (`argmax`, where CLIP's
BPE puts its end-of-text token). So a file tokenizer's text is encoded without its own
special tokens, cut to `context_length - 1` ids, and ended with one id past its
vocabulary: the model's `text_cfg.vocab_size` is the file's vocabulary plus one, and the
pooling finds the end of every text whatever the file's own special tokens are. Padding is
0; the tower's causal mask keeps it out of the pooled position.
"""

from __future__ import annotations

from pathlib import Path

import torch

from wit.formats.errors import WitError

KINDS = {".json": "tokenizers", ".model": "sentencepiece"}


def file_kind(path: str | Path) -> str:
    kind = KINDS.get(Path(path).suffix)
    if kind is None:
        raise WitError(f"{path}: not a tokenizer file (a Hugging Face tokenizer.json or a SentencePiece .model)")
    return kind


class FileTokenizer:
    """texts -> LongTensor [n, context_length]: the file's ids, then the end id (its
    vocabulary size), then zeros."""

    def __init__(self, path: str | Path, context_length: int) -> None:
        self.path, self.context_length = str(path), context_length
        kind = file_kind(path)
        try:
            if kind == "tokenizers":
                from tokenizers import Tokenizer

                self._hf = Tokenizer.from_file(self.path)
                self.base_size = self._hf.get_vocab_size(with_added_tokens=True)
            else:
                import sentencepiece

                self._sp = sentencepiece.SentencePieceProcessor(model_file=self.path)
                self.base_size = self._sp.get_piece_size()
        except (OSError, RuntimeError, ValueError, Exception) as e:   # the libraries raise plain Exception
            if isinstance(e, WitError):
                raise
            raise WitError(f"{path}: not a readable {kind} tokenizer ({str(e).splitlines()[0][:160]})") from None
        self.kind = kind
        self.end = self.base_size

    @property
    def vocab_size(self) -> int:
        """What the model's text_cfg.vocab_size must be."""
        return self.base_size + 1

    def ids(self, texts: list[str]) -> list[list[int]]:
        if self.kind == "tokenizers":
            return [e.ids for e in self._hf.encode_batch(texts, add_special_tokens=False)]
        return self._sp.encode(texts)

    def decode(self, ids: list[int]) -> str:
        """The text of a file's ids (without the end id or padding)."""
        return self._hf.decode(ids) if self.kind == "tokenizers" else self._sp.decode(ids)

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, ids in enumerate(self.ids(texts)):
            ids = ids[: self.context_length - 1] + [self.end]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
