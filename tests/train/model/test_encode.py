"""The one Encoder's text path (`train.model.encode`): captions cut short to their longest
one, in chunks by length, give the full text tower's features."""

from __future__ import annotations

import torch

from tests.support.checkpoints import TINY
from train.model import clip as models
from train.model.encode import encode_text


def test_the_short_text_tower_gives_the_full_ones_features():
    torch.manual_seed(0)
    model = models.create(TINY).eval()
    captions = ["a red picture", "a much longer caption of a yellow picture number 7", "x", "a blue one", "red"]
    tokens = models.tokenizer(TINY)(captions * 3)
    assert int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]   # the batch is cut short
    with torch.no_grad():
        for chunk in (2, 64):                                   # chunks by length, and one chunk
            torch.testing.assert_close(encode_text(model, tokens, torch.device("cpu"), chunk),
                                       model.encode_text(tokens), atol=1e-5, rtol=1e-5)
