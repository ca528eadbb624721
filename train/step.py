"""One optimisation step over a global batch: forward, the configured contrastive loss
(train.loss.LOSSES), backward (with gradient accumulation that keeps the contrastive
batch global), clip, AdamW step, schedule step, logit-scale clamp."""

from __future__ import annotations

import contextlib

import torch

from train import parallel
from train.data import preprocess as images
from train.config import TrainConfig
from train.dist import World
from train.loss import LOSSES
from train.model.clip import clamp_logit_scale
from train.optim import Optimization


class Stepper:
    def __init__(self, model: torch.nn.Module, wrapped: torch.nn.Module, optimization: Optimization,
                 cfg: TrainConfig, world: World, mean: tuple, std: tuple):
        self.model, self.wrapped = model, wrapped
        self.optimization, self.cfg, self.world = optimization, cfg, world
        self.mean, self.std = mean, std
        self.loss = LOSSES[cfg.loss]
        bf16 = parallel.bf16(cfg, world.device)   # with fsdp, also the blocks' gathered weights (train/parallel.py)
        self.autocast = lambda: torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=bf16)

    def inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader batch on the device: normalised float images [n, 3, S, S], tokens [n, ctx]."""
        pixels = batch["images"].to(self.world.device, non_blocking=True)
        return images.normalize(pixels, self.mean, self.std), batch["tokens"].to(self.world.device, non_blocking=True)

    def __call__(self, pixels: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the gradients; return this rank's loss and the gradient norm (0-d tensors,
        not synchronised; the gradients are all-reduced, so the norm is every rank's)."""
        self.optimization.optimizer.zero_grad(set_to_none=True)
        if self.cfg.accum_steps == 1:
            with self.autocast():
                image_features, text_features, *logit_params = self.wrapped(pixels, tokens)
            loss = self.loss(image_features.float(), text_features.float(), *(p.float() for p in logit_params))
            loss.backward()
        else:
            loss = self._accumulated(pixels, tokens)
        return loss.detach(), parallel.grad_norm(self.model.parameters(), self.cfg.grad_clip)

    def finish(self) -> None:
        """Apply the gradients (after the caller has checked that the loss and the gradient
        norm are finite on every rank)."""
        self.optimization.step()
        clamp_logit_scale(self.model)

    def skip(self) -> None:
        """Leave the weights as they are (a non-finite step); the schedule moves on."""
        self.optimization.schedule.step()

    def _accumulated(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Feature caching (GradCache / OpenCLIP's accum-freq): features of every micro-batch
        without gradients first; then, per micro-batch, recompute its features with
        gradients and back-propagate the loss of the whole batch through them. The logit
        scale (and bias) take part in the last micro-batch only, so their gradient is
        counted once."""
        chunks = list(zip(pixels.chunk(self.cfg.accum_steps), tokens.chunk(self.cfg.accum_steps)))
        with torch.no_grad(), self.autocast():
            cached = [self.model(p, t)[:2] for p, t in chunks]
        cached_images = [c[0].float() for c in cached]
        cached_texts = [c[1].float() for c in cached]
        for j, (p, t) in enumerate(chunks):
            last = j == len(chunks) - 1
            sync = contextlib.nullcontext() if last else parallel.no_sync(self.wrapped)
            with sync:
                with self.autocast():
                    image_j, text_j, *logit_params = self.wrapped(p, t)
                all_images = torch.cat(cached_images[:j] + [image_j.float()] + cached_images[j + 1:])
                all_texts = torch.cat(cached_texts[:j] + [text_j.float()] + cached_texts[j + 1:])
                logit_params = [q.float() if last else q.float().detach() for q in logit_params]
                loss = self.loss(all_images, all_texts, *logit_params)
                loss.backward()
        return loss
