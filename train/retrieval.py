"""Image-text retrieval recall@k: pair i (image i, caption i) is each side's single positive."""

from __future__ import annotations

import torch

KS = (1, 5, 10)


def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor,
                ks: tuple[int, ...] = KS) -> dict[str, float]:
    """`i2t_r{k}`: share of images whose own caption is among the k best-scoring captions;
    `t2i_r{k}` the same from captions to images. Ties count against the positive, so the
    result does not depend on the order of the pairs."""
    out = {}
    for name, queries, keys in (("i2t", image_features, text_features), ("t2i", text_features, image_features)):
        rank = positive_rank(queries.float(), keys.float())
        out.update({f"{name}_r{k}": int((rank < k).sum()) / len(rank) for k in ks})
    return out


def positive_rank(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each query i, how many other keys score at least as high as key i (0 = retrieved first).
    Scores are computed a chunk of queries at a time, so memory stays at [chunk, N]."""
    ranks = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ keys.T
        positive = scores.diagonal(offset=start).unsqueeze(1)
        ranks.append((scores >= positive).sum(dim=1) - 1)
    return torch.cat(ranks)
