"""The CLIP model: any OpenCLIP architecture by name, or a small custom OpenCLIP config,
trained from scratch; its tokenizer; and loading a trained model back from a checkpoint.
A custom config is registered in OpenCLIP's registry in memory: no file is written."""

from __future__ import annotations

import copy
import dataclasses
import functools
import shutil
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import open_clip.factory
import torch

from train.config import ModelConfig, from_dict
from train.model.text_tokens import FileTokenizer
from wit.formats.atomic import atomic_path, file_sha256, read_json_object, write_json
from wit.formats.errors import WitError

MAX_LOGIT_SCALE = math.log(100.0)   # the paper clips the temperature so logits scale by at most 100
# (logit scale, logit bias) at the start, by loss: CLIP's temperature 0.07 and no bias;
# SigLIP's t' = log 10 and b = -10 (Zhai et al. 2023)
INIT_LOGITS = {"clip": (math.log(1 / 0.07), None), "siglip": (math.log(10.0), -10.0)}


@dataclass
class Loaded:
    """A model ready for inference, with what is needed to feed it."""
    model: torch.nn.Module
    tokenizer: Callable
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    step: int


def register(cfg: ModelConfig) -> None:
    """Make a custom model config known to OpenCLIP under `cfg.name` (no-op for a built-in),
    in OpenCLIP's registry (`open_clip.factory._MODEL_CONFIGS`) only."""
    if cfg.config is None:
        if cfg.name not in open_clip.list_models():
            raise WitError(f"model {cfg.name!r} is not an OpenCLIP model "
                           f"(e.g. RN50-quickgelu, ViT-B-32-quickgelu, ViT-L-14); or give model.config")
        return
    if cfg.name in _builtin_names():
        if open_clip.get_model_config(cfg.name) != cfg.config:
            raise WitError(f"model.name {cfg.name!r} is a built-in OpenCLIP model; name the custom config otherwise")
        return
    open_clip.factory._MODEL_CONFIGS[cfg.name] = copy.deepcopy(cfg.config)


@functools.cache
def _builtin_names() -> frozenset[str]:
    return frozenset(p.stem for p in (Path(open_clip.__file__).parent / "model_configs").glob("*.json"))


def effective(cfg: ModelConfig) -> ModelConfig:
    """The model as OpenCLIP builds it. With a file tokenizer, its text_cfg.vocab_size is
    the tokenizer's (text_tokens.FileTokenizer.vocab_size), a built-in architecture
    registered as NAME-vVOCAB under that changed config."""
    if not cfg.tokenizer:
        return cfg
    vocab = _file_tokenizer(cfg.tokenizer, 0).vocab_size
    if cfg.config is not None:
        config, name = copy.deepcopy(cfg.config), cfg.name
    else:
        register(cfg)
        config, name = copy.deepcopy(open_clip.get_model_config(cfg.name)), f"{cfg.name}-v{vocab}"
    config["text_cfg"]["vocab_size"] = vocab
    return dataclasses.replace(cfg, name=name, config=config)


@functools.lru_cache(maxsize=8)
def _file_tokenizer(path: str, context_length: int) -> FileTokenizer:
    return FileTokenizer(path, context_length)


def create(cfg: ModelConfig, loss: str = "clip") -> torch.nn.Module:
    """A randomly initialised model for `loss` (train.loss.LOSSES), its logit scale (and
    for siglip its `logit_bias` parameter, which OpenCLIP's forward then returns fourth)
    started at INIT_LOGITS."""
    cfg = effective(cfg)
    register(cfg)
    scale, bias = INIT_LOGITS[loss]
    logging.disable(logging.WARNING)   # OpenCLIP warns that no pretrained weights were loaded
    try:
        model = open_clip.create_model(cfg.name, pretrained=None, init_logit_scale=scale, init_logit_bias=bias)
    finally:
        logging.disable(logging.NOTSET)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


CHARS_PER_TOKEN = 8   # the text cap: this many characters per token of the context length


def tokenizer(cfg: ModelConfig) -> Callable:
    """OpenCLIP's tokenizer for the model (lower-cased BPE, the model's context length),
    behind the text cap (`BoundedTokenizer`): every path that tokenizes (training,
    evaluation, search, `wit embed`, the filters) gets its tokenizer here. With
    `model.tokenizer`, that file's (text_tokens.FileTokenizer) at the model's context length."""
    if cfg.tokenizer:
        context = effective(cfg).config["text_cfg"].get("context_length", 77)
        return BoundedTokenizer(_file_tokenizer(cfg.tokenizer, context))
    register(cfg)
    return BoundedTokenizer(open_clip.get_tokenizer(cfg.name))


class BoundedTokenizer:
    """A tokenizer that sees at most `CHARS_PER_TOKEN x context_length` characters of each
    text (616 for CLIP's 77 tokens). OpenCLIP's BPE is quadratic in the length of a word
    (a 20k-letter word takes 19 s) and keeps only `context_length` tokens anyway: a text
    that needs more than 8 characters per token to fill the context (long runs of spaces,
    words of hundreds of letters) is all the cap can change, and a million-letter caption
    costs what a 616-letter one does."""

    def __init__(self, inner: Callable) -> None:
        self.inner = inner
        self.context_length = getattr(inner, "context_length", 77)
        self.max_chars = CHARS_PER_TOKEN * self.context_length

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        return self.inner([text[: self.max_chars] for text in texts])


def image_size(model: torch.nn.Module) -> int:
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def mean_std(model: torch.nn.Module) -> tuple[tuple, tuple]:
    pre = getattr(model.visual, "preprocess_cfg", {}) or {}
    return (tuple(pre.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            tuple(pre.get("std", open_clip.OPENAI_DATASET_STD)))


def clamp_logit_scale(model: torch.nn.Module) -> None:
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def write_model_config(cfg: ModelConfig, run_dir: Path) -> Path | None:
    """Save a custom config as RUN/<name>.json, so OpenCLIP users can
    `open_clip.add_model_config(path)` before `create_model(name, pretrained=checkpoint)`."""
    cfg = effective(cfg)
    if cfg.config is None:
        return None
    path = run_dir / f"{cfg.name}.json"   # a plain file name: ModelConfig checks it
    write_json(path, cfg.config)
    return path


def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """The model of a trainer checkpoint (loaded with weights_only=True), in eval mode: a
    step file, or a sharded run's step dir (its model.pt). The checkpoint's model name is
    checked (a plain name) before anything is registered."""
    checkpoint = weights_file(checkpoint)
    ckpt = _torch_load(checkpoint)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise WitError(f"{checkpoint}: not a checkpoint of this trainer (no state_dict/config)")
    run = from_dict(ckpt["config"], source=str(checkpoint))
    cfg = ModelConfig(name=run.model.name, config=run.model.config,
                      tokenizer=_checkpoint_tokenizer(run.model, Path(checkpoint)),
                      tokenizer_sha256=run.model.tokenizer_sha256)
    model = create(cfg, run.loss)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    mean, std = mean_std(model)
    position = ckpt.get("position")
    step = position.get("step") if isinstance(position, dict) else None
    return Loaded(model, tokenizer(cfg), image_size(model), mean, std, cfg.name, step if isinstance(step, int) else 0)


def weights_file(checkpoint: str | Path) -> str | Path:
    """The file that holds a checkpoint's weights: a sharded run's step dir (RUN/checkpoints/
    step_N/ or RUN/checkpoints/latest) holds them whole in model.pt; a file is itself."""
    inside = Path(checkpoint) / "model.pt"
    return inside if Path(checkpoint).is_dir() and inside.is_file() else checkpoint


TOKENIZER_FILE = "tokenizer"   # RUN/tokenizer.json or RUN/tokenizer.model: the run's copy


def run_tokenizer(run_dir: Path, source: str) -> Path:
    """Where a run keeps its copy of the tokenizer file `source`."""
    return run_dir / (TOKENIZER_FILE + Path(source).suffix)


def recorded_sha256(path: str, recorded: str | None, key: str, what: str) -> str:
    """The sha256 of the file a setting `key` names, which must exist and match the digest
    the configuration already records (if any); a one-line error otherwise."""
    if not Path(path).is_file():
        raise WitError(f"{key} {path}: no such file")
    digest = file_sha256(path, what)
    if recorded and recorded != digest:
        raise WitError(f"{key} {path}: sha256 {digest[:12]}..., but the configuration records {recorded[:12]}...")
    return digest


def record_tokenizer(cfg: ModelConfig, run_dir: Path, copy_file: bool) -> ModelConfig:
    """`cfg` with the tokenizer file's sha256 (checked against one already recorded);
    with `copy_file`, the file copied beside the run (RUN/tokenizer.EXT) for every later
    loader."""
    if not cfg.tokenizer:
        return cfg
    digest = recorded_sha256(cfg.tokenizer, cfg.tokenizer_sha256, "model.tokenizer", "tokenizer file")
    FileTokenizer(cfg.tokenizer, 1)   # readable, or a one-line error now
    target = run_tokenizer(run_dir, cfg.tokenizer)
    if copy_file and not (target.is_file() and file_sha256(target, "tokenizer file") == digest):
        with atomic_path(str(target)) as tmp:
            shutil.copyfile(cfg.tokenizer, tmp)
    return dataclasses.replace(cfg, tokenizer_sha256=digest)


def _checkpoint_tokenizer(cfg: ModelConfig, checkpoint: Path) -> str | None:
    """The tokenizer file of a checkpoint's model: the run's copy beside it (RUN/ of
    RUN/checkpoints/step_N.pt or of RUN/checkpoints/step_N/model.pt, or the checkpoint's
    own dir), else the recorded path, whichever has the recorded sha256."""
    if not cfg.tokenizer:
        return None
    places = [run_tokenizer(checkpoint.parent.parent, cfg.tokenizer), run_tokenizer(checkpoint.parent, cfg.tokenizer),
              run_tokenizer(checkpoint.parent.parent.parent, cfg.tokenizer), Path(cfg.tokenizer)]
    for place in places:
        if place.is_file() and (cfg.tokenizer_sha256 is None or file_sha256(place, "tokenizer file") == cfg.tokenizer_sha256):
            return str(place)
    raise WitError(f"{checkpoint}: its tokenizer (sha256 {str(cfg.tokenizer_sha256)[:12]}...) is at none of "
                   f"{', '.join(map(str, places))}; put the run's {places[0].name} beside the checkpoint")


def load_openclip(checkpoint: str | Path, model: str, device: str | torch.device = "cpu",
                  tokenizer_file: str = "") -> Loaded:
    """An OpenCLIP architecture (`model`: a built-in name, or a model config .json such as
    a run's RUN/<name>.json) with the weights of a state-dict file, as OpenCLIP's
    `pretrained=` files are: a bare state dict, or one under "state_dict" (OpenCLIP's
    trainer, this trainer), keys perhaps prefixed "module."; `.safetensors` too. Nothing
    but tensors is unpickled (weights_only=True); TorchScript archives are refused. With
    `tokenizer_file` (a tokenizer.json or SentencePiece model, e.g. a run's RUN/tokenizer.json)
    the text tower is that tokenizer's, as in training with `model.tokenizer`. A state dict
    with `logit_bias` (a siglip run's) gets a model with that parameter; OpenCLIP itself
    needs `create_model(..., init_logit_bias=-10)` for it (any value: the file's replaces it)."""
    cfg = openclip_config(model, tokenizer_file)
    state = state_dict_file(weights_file(checkpoint))
    net = create(cfg, "siglip" if "logit_bias" in state else "clip")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise WitError(f"{checkpoint}: not weights of the model {cfg.name} "
                       f"({str(e).splitlines()[0][:160]})") from None
    tokenize = tokenizer(cfg)
    vocab = getattr(tokenize.inner, "vocab_size", None)
    embedding = getattr(net, "token_embedding", None)
    if vocab and embedding is not None and vocab > embedding.weight.shape[0]:
        raise WitError(f"--model {model}: its text tower has {embedding.weight.shape[0]:,} token rows, but "
                       f"{'--tokenizer' if tokenizer_file else 'the OpenCLIP tokenizer'} has {vocab:,} tokens; "
                       f"give the tokenizer it was trained with (--tokenizer FILE, e.g. the run's RUN/tokenizer.json)")
    net.to(device).eval()
    mean, std = mean_std(net)
    return Loaded(net, tokenize, image_size(net), mean, std, cfg.name, 0)


def load_model(checkpoint: str | Path, model: str = "", device: str | torch.device = "cpu",
               tokenizer_file: str = "") -> Loaded:
    """A trainer checkpoint, or with `model` an OpenCLIP file of that architecture (and
    perhaps its tokenizer file), without OpenCLIP's INFO lines about finding its tokenizer:
    what `wit embed`, `wit filter` and search load."""
    if tokenizer_file and not model:
        raise WitError("--tokenizer: only with --model (a trainer checkpoint names its own tokenizer)")
    root = logging.getLogger()   # OpenCLIP logs on the root logger
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        return load_openclip(checkpoint, model, device, tokenizer_file) if model else load(checkpoint, device)
    finally:
        root.setLevel(level)


def openclip_config(model: str, tokenizer_file: str = "") -> ModelConfig:
    """The ModelConfig of `--model`: a built-in OpenCLIP name, or a model config .json
    file (registered under its file name, as `open_clip.add_model_config` does); with
    `--tokenizer`, that file's tokenizer (checked now: a one-line error)."""
    if tokenizer_file:
        if not Path(tokenizer_file).is_file():
            raise WitError(f"--tokenizer {tokenizer_file}: no such file")
        FileTokenizer(tokenizer_file, 1)
    tokenizer_file = tokenizer_file or None
    if model.endswith(".json"):
        return ModelConfig(name=Path(model).stem, config=read_json_object(model, "OpenCLIP model config"),
                           tokenizer=tokenizer_file)
    if model not in open_clip.list_models():
        raise WitError(f"--model {model!r}: not an OpenCLIP model (e.g. ViT-B-32, RN50) nor a model config .json")
    return ModelConfig(name=model, tokenizer=tokenizer_file)


def _torch_load(checkpoint: str | Path):
    """A checkpoint file's contents, tensors and plain values only (weights_only=True; a
    `.safetensors` file with safetensors), or a one-line error naming it."""
    if not Path(checkpoint).is_file():
        raise WitError(f"{checkpoint}: no such checkpoint")
    try:
        if str(checkpoint).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(checkpoint)
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: one line naming it
        raise WitError(f"{checkpoint}: not a readable checkpoint ({type(e).__name__}: {str(e)[:120]})") from None


def state_dict_file(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    loaded = _torch_load(checkpoint)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WitError(f"{checkpoint}: not a state dict of tensors (an OpenCLIP pretrained file)")
    return {str(k).removeprefix("module."): v for k, v in loaded.items()}
