"""Image-text retrieval recall@k. Each caption belongs to one image; an image may have
several captions (as in MSCOCO and Flickr): image->text counts a hit at k when any of its
captions is among the k best, text->image when the caption's image is (as CLIP_benchmark)."""

from __future__ import annotations

import torch

KS = (1, 5, 10)


def recall_at_k(image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor | None = None,
                ks: tuple[int, ...] = KS) -> dict[str, float]:
    """`i2t_r{k}`: share of images with one of their captions among the k best-scoring
    captions; `t2i_r{k}`: share of captions whose image is among the k best-scoring images.
    `text_image[j]` is caption j's image (default: caption i is image i's only one). Ties
    count against the positive, so the result does not depend on the order of the pairs."""
    images = torch.arange(len(image_features))
    text_image = images if text_image is None else text_image
    out = {}
    for name, queries, keys, query_group, key_group in (
            ("i2t", image_features, text_features, images, text_image),
            ("t2i", text_features, image_features, text_image, images)):
        rank = positive_rank(queries.float(), keys.float(), query_group, key_group)
        out.update({f"{name}_r{k}": int((rank < k).sum()) / len(rank) for k in ks})
    return out


def positive_rank(queries: torch.Tensor, keys: torch.Tensor, query_group: torch.Tensor | None = None,
                  key_group: torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
    """For each query, how many negative keys score at least as high as its best positive
    (0 = a positive is retrieved first); a key is a positive when its group is the query's
    (default: key i for query i). Memory stays at [chunk, N]."""
    query_group = torch.arange(len(queries)) if query_group is None else query_group
    key_group = torch.arange(len(keys)) if key_group is None else key_group
    ranks = []
    for start in range(0, len(queries), chunk):
        scores = queries[start:start + chunk] @ keys.T
        positive = query_group[start:start + chunk, None] == key_group[None, :]
        best = scores.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
        ranks.append(((scores >= best) & ~positive).sum(dim=1))
    return torch.cat(ranks)
