"""The losses (`train.loss`): each equals its textbook formula on one process; through the
trainer's step, loss and gradients do not depend on the process count or accumulation
(real torchrun processes, gloo); SigLIP's ring never all-gathers, over more than one hop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests.cli import run_module
from train.loss import clip_loss, siglip_loss


def features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images, texts = (F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=1)
                     for _ in range(2))
    return images.requires_grad_(), texts.requires_grad_()


def grads(loss: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, inputs))


def test_siglip_loss_on_one_process_is_the_pairwise_sigmoid_formula():
    images, texts = features(6, 5, seed=0)
    scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    reference = 0
    for i in range(6):
        for j in range(6):
            label = 1.0 if i == j else -1.0
            logit = scale * (images[i] * texts[j]).sum() + bias
            reference = reference - torch.log(1 / (1 + torch.exp(-label * logit)))
    reference = reference / 6
    loss = siglip_loss(images, texts, scale, bias)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    for got, expected in zip(grads(loss, images, texts, scale, bias), grads(reference, images, texts, scale, bias)):
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_clip_loss_on_one_process_is_the_symmetric_cross_entropy():
    images, texts = features(6, 5, seed=1)
    scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    reference = 0
    for i in range(6):
        row = [scale * (images[i] * texts[j]).sum() for j in range(6)]      # image i against every text
        column = [scale * (images[j] * texts[i]).sum() for j in range(6)]   # text i against every image
        for logits in (row, column):
            reference = reference - torch.log(torch.exp(logits[i]) / sum(torch.exp(x) for x in logits))
    reference = reference / 12
    loss = clip_loss(images, texts, scale)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    for got, expected in zip(grads(loss, images, texts, scale), grads(reference, images, texts, scale)):
        assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def worker(tmp_path, loss: str, nproc: int, accum: int, batch: int, *flags: str) -> list[dict]:
    """One step of tests/train/grad_worker.py: every rank's loss and gradients."""
    out = tmp_path / f"{loss}-{nproc}x{accum}{''.join(flags)}"
    out.mkdir()
    done = run_module("tests.train.grad_worker", out, accum, batch, loss, *flags, nproc=nproc, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return [torch.load(out / f"rank{rank}.pt") for rank in range(nproc)]


def assert_same_step(got: dict, ref: dict, key) -> None:
    assert torch.allclose(got["loss"], ref["loss"], rtol=1e-5), key
    for name, grad in ref["grads"].items():
        assert (got["grads"][name] - grad).norm() <= 1e-5 * grad.norm() + 1e-7, (key, name)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_loss_and_gradients_do_not_depend_on_the_process_count_or_accumulation(tmp_path, loss):
    results = {}
    for nproc, accum in [(1, 1), (2, 1), (1, 2), (2, 2)]:
        ranks = worker(tmp_path, loss, nproc, accum, 16)
        for other in ranks[1:]:   # every rank holds the same averaged gradient
            assert all(torch.allclose(other["grads"][k], ranks[0]["grads"][k], atol=1e-7) for k in other["grads"])
        results[nproc, accum] = ranks[0]
    ref = results[1, 1]
    assert ref["loss"].item() > 0
    for key, got in results.items():
        assert_same_step(got, ref, key)
        for name in ("logit_scale", "logit_bias") if loss == "siglip" else ("logit_scale",):
            assert got["grads"][name].abs().item() > 0, (key, name)
    assert ("logit_bias" in ref["grads"]) == (loss == "siglip")


@pytest.mark.slow
def test_siglip_on_three_ranks_passes_texts_round_the_ring_without_any_all_gather(tmp_path):
    one = worker(tmp_path, "siglip", 1, 1, 12)[0]
    three = worker(tmp_path, "siglip", 3, 1, 12, "no-gather")
    for rank, got in enumerate(three):
        assert_same_step(got, one, rank)
    assert math.isfinite(one["loss"].item())
    # the same guard stops CLIP's loss, which gathers
    out = tmp_path / "clip-gathers"
    out.mkdir()
    done = run_module("tests.train.grad_worker", out, 1, 12, "clip", "no-gather", nproc=3, timeout=300)
    assert done.returncode != 0 and "all_gather called" in done.stderr, done.stderr[-2000:]
