"""What a run does to the model it creates before training: start from a local OpenCLIP
state-dict file (`init`), lock one tower (`lock`, LiT: Zhai et al. 2022) and drop image
patches (`patch_dropout`, FLIP: Li et al. 2023) on a schedule."""

from __future__ import annotations

import dataclasses
import types
import torch

from train.config import TrainConfig
from train.model import clip as models
from wit.formats.errors import WitError

OPTIONAL = frozenset({"logit_bias"})   # a CLIP file starts a SigLIP model: the bias keeps its init


def record_init(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with the init file's sha256 (checked against one already recorded)."""
    if cfg.init is None:
        if cfg.lock:
            raise WitError(f"lock: {cfg.lock} needs init: FILE (a locked tower trained from scratch learns nothing)")
        return cfg
    return dataclasses.replace(cfg, init_sha256=models.recorded_sha256(cfg.init, cfg.init_sha256, "init", "init file"))


def load_init(model: torch.nn.Module, path: str) -> None:
    """The weights of an OpenCLIP state-dict file (weights-only load; a bare state dict, a
    trainer checkpoint's, `.safetensors`) into `model`; every weight of the model must be
    in it except a SigLIP bias, and nothing else may be."""
    state = models.state_dict_file(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:   # a weight of another shape
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e))
        raise WitError(f"init {path}: not weights of this model ({detail[:160]})") from None
    missing = [k for k in missing if k not in OPTIONAL]
    unexpected = [k for k in unexpected if k not in OPTIONAL]
    if missing or unexpected:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise WitError(f"init {path}: not weights of this model ({what}{'...' if len(missing or unexpected) > 3 else ''})")


def tower_modules(model: torch.nn.Module, tower: str) -> list[torch.nn.Module]:
    """The modules of the image or the text tower of an OpenCLIP model."""
    if tower == "image":
        return [model.visual]
    if hasattr(model, "text"):   # CustomTextCLIP (e.g. SigLIP's, HF text towers)
        return [model.text]
    return [m for m in (getattr(model, name, None) for name in
                        ("token_embedding", "transformer", "ln_final")) if isinstance(m, torch.nn.Module)]


def tower_parameters(model: torch.nn.Module, tower: str) -> dict[str, torch.nn.Parameter]:
    """The parameters of a tower by name (the text projection and positional embedding of
    a CLIP model belong to its text tower)."""
    ids = {id(p) for m in tower_modules(model, tower) for p in m.parameters()}
    if tower == "text":
        ids |= {id(p) for name in ("positional_embedding", "text_projection")
                if isinstance(p := getattr(model, name, None), torch.nn.Parameter)}
    return {n: p for n, p in model.named_parameters() if id(p) in ids}


def _always_eval(module: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(module, False)


def lock(model: torch.nn.Module, tower: str) -> int:
    """Freeze a tower (LiT): no gradients, so no optimizer state, and its modules stay in
    eval mode (norm statistics, dropout) whatever `model.train()` says. The number of
    parameters locked."""
    params = tower_parameters(model, tower)
    for p in params.values():
        p.requires_grad_(False)
    for module in tower_modules(model, tower):
        module.train = types.MethodType(_always_eval, module)
        module.train(False)
    return sum(p.numel() for p in params.values())


class PatchDropout(torch.nn.Module):
    """FLIP's random masking: in training, keep a random `1 - ratio` share of the patch
    tokens of each image (the class token always), drawn on the tokens' device; in eval
    mode, or at ratio 0, every token. `ratio` is set by the run's schedule."""

    def __init__(self, ratio: float = 0.0):
        super().__init__()
        self.ratio = ratio

    def kept(self, patches: int) -> int:
        return max(1, int(patches * (1 - self.ratio)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.ratio == 0:
            return x
        cls, patches = x[:, :1], x[:, 1:]
        keep = self.kept(patches.shape[1])
        order = torch.rand(patches.shape[:2], device=x.device).argsort(dim=1)[:, :keep]
        kept = torch.gather(patches, 1, order.unsqueeze(-1).expand(-1, -1, patches.shape[2]))
        return torch.cat((cls, kept), dim=1)


def install_patch_dropout(model: torch.nn.Module) -> PatchDropout:
    """Put the scheduled PatchDropout in the image tower (an OpenCLIP ViT: its
    `visual.patch_dropout` slot, after the positional embedding)."""
    visual = model.visual
    if not hasattr(visual, "patch_dropout") or not hasattr(visual, "class_embedding"):
        raise WitError(f"patch_dropout needs a ViT image tower; {type(visual).__name__} has no patch tokens")
    visual.patch_dropout = PatchDropout(0.0)
    return visual.patch_dropout


def patch_ratio(cfg: TrainConfig, step: int) -> float:
    """The patch-dropout ratio of step `step` (0-based): `patch_dropout` until the last
    `unmasked_steps` steps, 0 for those."""
    return cfg.patch_dropout if step < cfg.steps - cfg.unmasked_steps else 0.0


def prepare(model: torch.nn.Module, cfg: TrainConfig) -> PatchDropout | None:
    """Apply `init`, `lock` and `patch_dropout` to a freshly created model; the patch
    dropout module whose ratio the loop sets each step (None when off)."""
    if cfg.init:
        load_init(model, cfg.init)
    if cfg.lock:
        if cfg.lock == "image" and cfg.patch_dropout:
            raise WitError("patch_dropout with lock: image does nothing (a locked tower runs in eval mode, "
                           "unmasked); set one of them")
        lock(model, cfg.lock)
    return install_patch_dropout(model) if cfg.patch_dropout else None
