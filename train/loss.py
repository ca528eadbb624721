"""The two contrastive losses over the global batch, by name in `LOSSES`.

`clip_loss`: CLIP's symmetric cross-entropy (Radford et al. 2021). Each rank gathers every
rank's features with gradients and scores its own rows against all columns (the
local-loss formulation).

`siglip_loss`: SigLIP's pairwise sigmoid loss (Zhai et al. 2023), in the paper's chunked
form: each rank scores its own block, then its text features travel round a ring of
ranks (point-to-point, never a gather of every feature) and each block received adds its
negative pairs.

For both, with gradients averaged over ranks (DDP), the mean of the ranks' losses and the
gradients equal those of the whole global batch on one process."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


# The autograd all_gather below is deprecated in favour of a private API; it is still the
# public one whose backward works on gloo (through all-to-all) as well as NCCL.
warnings.filterwarnings("ignore", message=".*nn.functional.all_gather is deprecated", category=FutureWarning)


def _world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def gather(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' features concatenated in rank order (gradients flow back to each rank's
    own part), and the offset of this rank's rows."""
    rank, size = _world()
    if size == 1:
        return features, 0
    parts = dist_fn.all_gather(features)
    return torch.cat(parts), rank * features.shape[0]


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy for this rank's rows.
    image_features, text_features: [n_local, d], L2-normalised; logit_scale: exp(t)."""
    all_images, offset = gather(image_features)
    all_texts, _ = gather(text_features)
    logits_per_image = logit_scale * image_features @ all_texts.T    # [n_local, n_global]
    logits_per_text = logit_scale * text_features @ all_images.T
    labels = torch.arange(offset, offset + image_features.shape[0], device=image_features.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """-sum(log sigmoid(label * logit)) / n_local over this rank's images and every text of
    the global batch; logit = logit_scale * image . text + logit_bias, label +1 for an
    image's own text, -1 for every other. image_features, text_features: [n_local, d],
    L2-normalised, the same n_local on every rank; logit_scale: exp(t'); logit_bias: b.
    On W ranks the text features pass W-1 times to the next rank (`ring_shift`)."""
    _, size = _world()
    n = image_features.shape[0]
    labels = 2 * torch.eye(n, device=image_features.device, dtype=image_features.dtype) - 1
    loss = _sigmoid_block(image_features, text_features, logit_scale, logit_bias, labels)
    texts = text_features
    for _ in range(size - 1):
        texts = ring_shift(texts)   # the next rank to the left's block: negatives only
        loss = loss + _sigmoid_block(image_features, texts, logit_scale, logit_bias, -1.0)
    return loss / n


def _sigmoid_block(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                   labels: torch.Tensor | float) -> torch.Tensor:
    """-sum(log sigmoid(labels * logits)) of one [n_images, n_texts] block."""
    return -F.logsigmoid(labels * (scale * images @ texts.T + bias)).sum()


def ring_shift(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's `tensor` sent to rank+1, rank-1's received (ranks in a ring); the
    gradient travels back the other way."""
    return _RingShift.apply(tensor)


class _RingShift(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return _exchange(tensor, +1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _exchange(grad, -1)


def _exchange(tensor: torch.Tensor, step: int) -> torch.Tensor:
    """Send `tensor` to rank+step, receive the same shape from rank-step (P2P: gloo, NCCL)."""
    rank, size = _world()
    tensor = tensor.contiguous()
    received = torch.empty_like(tensor)
    ops = [dist.P2POp(dist.isend, tensor, (rank + step) % size),
           dist.P2POp(dist.irecv, received, (rank - step) % size)]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


LOSSES = {"clip": clip_loss, "siglip": siglip_loss}   # config.LOSSES names them
