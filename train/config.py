"""The trainer's configuration: one typed tree from a YAML file plus `--set key=value`
overrides, resolved and validated once, then never mutated."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wit.formats.errors import WitError
from wit.formats.images import MAX_PIXELS

MODEL_NAME = re.compile(r"[A-Za-z0-9._-]+")   # a plain name: OpenCLIP's, and RUN/<name>.json
TEXT_SAMPLING = ("fixed", "per_epoch")
LOSSES = ("clip", "siglip")
PARALLEL = ("ddp", "fsdp")
LOCKS = ("image", "text")


@dataclass(frozen=True)
class ModelConfig:
    """An OpenCLIP model name (e.g. `ViT-B-32-quickgelu`), or a custom OpenCLIP model
    config (`embed_dim`, `vision_cfg`, `text_cfg`) registered under `name`."""
    name: str = "ViT-B-32-quickgelu"
    config: dict | None = None
    grad_checkpointing: bool = False
    compile: bool = False
    tokenizer: str | None = None          # a local tokenizer.json or SentencePiece .model (train/model/text_tokens.py)
    tokenizer_sha256: str | None = None   # recorded by the trainer; a checkpoint's model loads only that file

    def __post_init__(self):
        if not MODEL_NAME.fullmatch(self.name) or self.name in (".", ".."):
            raise WitError(f"model.name {self.name[:100]!r} is not a plain model name ({MODEL_NAME.pattern}, "
                           f"not . or ..)")
        if self.config is not None and not {"embed_dim", "vision_cfg", "text_cfg"} <= set(self.config):
            raise WitError("model.config needs embed_dim, vision_cfg and text_cfg (an OpenCLIP model config)")
        if self.tokenizer is not None and not self.tokenizer.endswith((".json", ".model")):
            raise WitError(f"model.tokenizer {self.tokenizer!r}: give a Hugging Face tokenizer.json or a "
                           "SentencePiece .model file")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate every `eval_every` steps (and at the end): zero-shot classification
    on an ImageFolder, retrieval on held-out shards and/or an evaluation suite (a SUITE.yaml,
    see train/suite.py)."""
    imagefolder: str | None = None
    classnames: str | None = None
    templates: str | None = None
    shards: str | None = None
    batch_size: int = 256
    max_samples: int = 10_000
    suite: str | None = None

    def __post_init__(self):
        if self.imagefolder and not self.classnames:
            raise WitError("eval.imagefolder needs eval.classnames (a file with one class name per line)")

    @property
    def enabled(self) -> bool:
        return bool(self.imagefolder or self.shards or self.suite)


@dataclass(frozen=True)
class DataSource:
    """One SHARDS dir (or shard pattern) of a mixed run, drawn with probability
    weight / (sum of the weights) at every position of every batch."""
    shards: str = ""
    weight: float = 1.0
    sizes: str | None = None       # its sizes.json (default: the one next to the shards)

    def __post_init__(self):
        if not self.shards:
            raise WitError("data: every source needs shards (a SHARDS dir or a brace pattern of tar urls)")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise WitError(f"data: the weight of {self.shards} must be a positive number, got {self.weight}")


@dataclass(frozen=True)
class TrainConfig:
    shards: str = ""               # one source; or `data` for several
    data: tuple[DataSource, ...] = ()   # [{shards: DIR, weight: W}, ...]: each batch position draws its source
    resampled: bool = False        # sample the shards with replacement (runs longer than the data)
    run_dir: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    batch_size: int = 256          # global, over all ranks and micro-batches
    accum_steps: int = 1           # micro-batches per step; the contrastive batch stays global
    steps: int = 1000
    lr: float = 5e-4
    warmup: int = 100
    min_lr: float = 0.0
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float = 0.0         # max gradient norm, 0 = off
    skip_nonfinite: int = 3        # non-finite steps in a row skipped without an update; one more stops the run
    precision: str = "auto"        # auto (bf16 autocast on GPU, fp32 on CPU), bf16, fp32
    optimizer_state: str = "fp32"  # fp32, or 8bit / 4bit (torchao low-precision AdamW states)
    workers: int = 4               # dataloader workers per rank
    shuffle_window: int = 2048     # samples shuffled together inside a worker
    text_sampling: str = "fixed"   # fixed (the txt part) or per_epoch (one of the json's texts per epoch)
    max_pixels: int = MAX_PIXELS   # decoder cap (PIL's default bomb limit)
    seed: int = 0
    save_every: int = 1000
    keep_checkpoints: int = 3      # step_N.pt files kept besides latest.pt (0 = all)
    eval_every: int = 0            # 0 = only at the end (when eval is configured)
    log_every: int = 10
    resume: str = "auto"           # auto (newest valid checkpoint in run_dir, if any), none, restart, or a path
    sizes: str | None = None       # sizes.json for the shards (default: the one next to them)
    loss: str = "clip"             # clip (softmax, the paper's) or siglip (sigmoid, Zhai et al. 2023)
    patch_dropout: float = 0.0     # FLIP: share of image patches dropped in training (0 = off)
    unmasked_steps: int = 0        # the last steps of the run train with patch_dropout 0
    parallel: str = "ddp"          # ddp (replicated) or fsdp (torch fully_shard: sharded weights and optimizer)
    init: str | None = None        # a local OpenCLIP state-dict file to start from (weights only)
    init_sha256: str | None = None   # recorded by the trainer
    lock: str | None = None        # image or text: that tower frozen (LiT), with its norm layers in eval mode
    tensorboard: bool = True
    wandb: bool = False            # also log to Weights & Biases (offline unless WANDB_MODE says otherwise)
    wandb_project: str = "wit"
    progress: bool = True
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        if self.shards and self.data:
            raise WitError("give shards (one source) or data (several), not both")
        if not self.shards and not self.data:
            raise WitError("shards is not set (a SHARDS dir or a brace pattern of tar urls; or data: a list "
                           "of {shards, weight})")
        if not self.run_dir:
            raise WitError("run_dir is not set")
        for name in ("batch_size", "accum_steps", "steps", "shuffle_window", "max_pixels", "log_every"):
            if getattr(self, name) < 1:
                raise WitError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name, value in _floats(self):
            if not math.isfinite(value):
                raise WitError(f"{name} must be a finite number, got {value}")
        for name in ("warmup", "workers", "save_every", "eval_every", "keep_checkpoints", "skip_nonfinite"):
            if getattr(self, name) < 0:
                raise WitError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.lr <= 0:
            raise WitError(f"lr must be positive, got {self.lr}")
        if self.text_sampling not in TEXT_SAMPLING:
            raise WitError(f"text_sampling must be one of {', '.join(TEXT_SAMPLING)}, got {self.text_sampling!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise WitError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.optimizer_state not in ("fp32", "8bit", "4bit"):
            raise WitError(f"optimizer_state must be fp32, 8bit or 4bit, got {self.optimizer_state!r}")
        for name, allowed in (("loss", LOSSES), ("parallel", PARALLEL)):
            if getattr(self, name) not in allowed:
                raise WitError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.parallel == "fsdp" and self.optimizer_state != "fp32":
            raise WitError(f"optimizer_state={self.optimizer_state} is not supported with parallel=fsdp (its states "
                           "are not sharded); use optimizer_state=fp32")
        if self.lock is not None and self.lock not in LOCKS:
            raise WitError(f"lock must be image or text, got {self.lock!r}")
        if not 0 <= self.patch_dropout < 1:
            raise WitError(f"patch_dropout must be at least 0 and below 1, got {self.patch_dropout}")
        if not 0 <= self.unmasked_steps <= self.steps:
            raise WitError(f"unmasked_steps must be between 0 and steps ({self.steps}), got {self.unmasked_steps}")

    @property
    def sources(self) -> tuple[DataSource, ...]:
        """The data sources: `data`, or `shards` as the one source."""
        return self.data or (DataSource(self.shards, 1.0, self.sizes),)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _floats(config: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted name, value) of every float in a config tree, tuples' items included."""
    found = []
    for f in dataclasses.fields(config):
        value, name = getattr(config, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            found += _floats(value, f"{name}.")
        for i, item in enumerate(value if isinstance(value, tuple) else (value,)):
            if isinstance(item, float):
                found.append((f"{name}[{i}]" if isinstance(value, tuple) else name, item))
    return found


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """Read the YAML file at `path` (if any), apply `key=value` overrides (dotted keys reach
    nested values, values are parsed as YAML) and build the validated config tree."""
    raw: dict = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as e:
            raise WitError(f"{path}: cannot read the config: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise WitError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise WitError(f"{path}: the config must be a mapping of keys to values")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise WitError(f"--set {item!r}: expected key=value")
        _set_dotted(raw, key, yaml.safe_load(value) if value else "")
    return from_dict(raw, source=path or "--set")


def from_dict(raw: dict, source: str = "config") -> TrainConfig:
    """Build a TrainConfig from plain values (a saved config.json, or the YAML tree)."""
    try:
        return _build(TrainConfig, raw, "")
    except WitError as e:
        raise WitError(f"{source}: {e}") from None


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        node = tree.get(part)
        if isinstance(node, str) and part == "model":   # `model: ViT-B-32` then `--set model.compile=true`
            node = {"name": node}
        if not isinstance(node, dict):
            node = {}
        tree[part] = node
        tree = node
    tree[leaf] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if cls is ModelConfig and isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise WitError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise WitError(f"unknown key {prefix}{unknown[0]} (valid: {', '.join(sorted(names))})")
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            values[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:   # a list of any length
        if not isinstance(value, (list, tuple)):
            raise WitError(f"{key} must be a list, got {value!r}")
        if dataclasses.is_dataclass(args[0]):
            return tuple(_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value))
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise WitError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)   # YAML reads `1e-3` (no dot) as a string
        except ValueError:
            raise WitError(f"{key} must be float, got {value!r}") from None
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    base = origin or hint
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise WitError(f"{key} must be {getattr(base, '__name__', base)}, got {value!r}")
    return value
