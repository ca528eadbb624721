"""CLIP's symmetric cross-entropy over the global batch.

Each rank gathers every rank's features with gradients and scores its own rows against
all columns (the local-loss formulation). With gradients averaged over ranks, the loss
and the gradients equal those of the whole global batch on one process."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


# The autograd all_gather below is deprecated in favour of a private API; it is still the
# public one whose backward works on gloo (through all-to-all) as well as NCCL.
warnings.filterwarnings("ignore", message=".*nn.functional.all_gather is deprecated", category=FutureWarning)


def gather(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' features concatenated in rank order (gradients flow back to each rank's
    own part), and the offset of this rank's rows."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return features, 0
    parts = dist_fn.all_gather(features)
    return torch.cat(parts), dist.get_rank() * features.shape[0]


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                     logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy for this rank's rows.
    image_features, text_features: [n_local, d], L2-normalised; logit_scale: exp(t)."""
    all_images, offset = gather(image_features)
    all_texts, _ = gather(text_features)
    logits_per_image = logit_scale * image_features @ all_texts.T    # [n_local, n_global]
    logits_per_text = logit_scale * text_features @ all_images.T
    labels = torch.arange(offset, offset + image_features.shape[0], device=image_features.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
