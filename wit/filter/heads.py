"""Embedding heads: small linear or MLP models over a sample's image (or text) embedding
that score it, as LAION screened its sets with NSFW and watermark classifiers and an
aesthetic predictor.

A head file is a weights-only torch file (`torch.save`) of a plain state dict:
- the state dict of a `torch.nn.Linear` (`weight`, `bias`), or of a `torch.nn.Sequential`
  whose weighted layers are `Linear` (`0.weight`, `0.bias`, `2.weight`, ...; a prefix
  common to every key, such as `layers.`, is allowed);
- and, optionally, these plain entries (strings): `activation`, what runs between two
  Linear layers (`relu`, the default, `gelu`, `sigmoid`, `tanh` or `none`); `output`, what
  runs on the last one (`none`, the default, `sigmoid` or `softmax`); `input`, the embedding
  it reads (`image`, the default, or `text`); and `output_index` (an int, default 0): which
  output is the score when the last layer has several.
The score of a sample is that output (NaN without an embedding). `convert_aesthetic` and
`from_dense_layers` turn LAION's aesthetic predictor and Keras-style NSFW detector into
head files (README, "Embedding heads")."""

from __future__ import annotations

import os
import re
from typing import Iterator

import numpy as np
import pyarrow as pa

from wit.filter.removal import Annotation, Removed
from wit.formats.errors import WitError

ACTIVATIONS = ("relu", "gelu", "sigmoid", "tanh", "none")
OUTPUTS = ("none", "sigmoid", "softmax")
INPUTS = ("image", "text")
OPTIONS = {"activation": ACTIVATIONS, "output": OUTPUTS, "input": INPUTS}
NAME = re.compile(r"[A-Za-z0-9_]+")
BATCH = 65536


class Head:
    """A head file loaded: `score(vectors) -> float32[n]` (NaN rows in, NaN out)."""

    def __init__(self, path: str) -> None:
        import torch

        self.path = path
        self.name = re.sub(r"[^A-Za-z0-9_]", "_", os.path.splitext(os.path.basename(path))[0])
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise WitError(f"{path}: no such head file") from None
        except Exception as e:  # noqa: BLE001 - torch raises many types for a file that is not its own
            raise WitError(f"{path}: not a weights-only torch file ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:200]})") from None
        if not isinstance(state, dict):
            raise WitError(f"{path}: a head file holds a state dict, not a {type(state).__name__}")
        options = {k: state.pop(k) for k in (*OPTIONS, "output_index") if k in state}
        for key, allowed in OPTIONS.items():
            value = options.setdefault(key, allowed[0] if key != "output" else "none")
            if value not in allowed:
                raise WitError(f"{path}: {key} {value!r} is not one of {', '.join(allowed)}")
        self.activation, self.output, self.input = options["activation"], options["output"], options["input"]
        self.layers = _linear_layers(path, state)
        self.dim = self.layers[0][0].shape[1]
        outputs = self.layers[-1][0].shape[0]
        self.output_index = options.get("output_index", 0)
        if not isinstance(self.output_index, int) or not 0 <= self.output_index < outputs:
            raise WitError(f"{path}: output_index must be an int below the {outputs} outputs of its last layer")

    def score(self, vectors: np.ndarray) -> np.ndarray:
        import torch

        if vectors.shape[1] != self.dim:
            raise WitError(f"{self.path}: the head reads {self.dim}-dim embeddings, the {self.input} "
                           f"embeddings are {vectors.shape[1]}-dim (made with another model?)")
        out = np.full(len(vectors), np.nan, np.float32)
        present = np.flatnonzero(~np.isnan(vectors[:, 0]))
        with torch.inference_mode():
            for start in range(0, len(present), BATCH):
                rows = present[start:start + BATCH]
                x = torch.from_numpy(np.ascontiguousarray(vectors[rows])).float()
                for i, (weight, bias) in enumerate(self.layers):
                    x = torch.nn.functional.linear(x, weight, bias)
                    if i < len(self.layers) - 1:
                        x = _activation(self.activation, x)
                if self.output == "sigmoid":
                    x = torch.sigmoid(x)
                elif self.output == "softmax":
                    x = torch.softmax(x, dim=-1)
                out[rows] = x[:, self.output_index].numpy()
        return out


def _activation(name: str, x):
    import torch

    return {"relu": torch.relu, "gelu": torch.nn.functional.gelu, "sigmoid": torch.sigmoid,
            "tanh": torch.tanh, "none": lambda t: t}[name](x)


def _linear_layers(path: str, state: dict) -> list:
    """[(weight, bias or None)] of the Linear layers of a Linear's or Sequential's state dict."""
    import torch

    if not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WitError(f"{path}: a head's state dict maps names to tensors (and its options to strings)")
    prefix = os.path.commonprefix(list(state))
    prefix = prefix[:prefix.rfind(".") + 1] if "." in prefix else ""
    keys = {k[len(prefix):]: v.float() for k, v in state.items()}
    if set(keys) <= {"weight", "bias"}:
        indexed = {0: keys}
    else:
        indexed = {}
        for key, value in keys.items():
            match = re.fullmatch(r"(\d+)\.(weight|bias)", key)
            if match is None:
                raise WitError(f"{path}: {prefix + key!r} is not a Linear layer's weight or bias of a Sequential")
            indexed.setdefault(int(match[1]), {})[match[2]] = value
    layers = []
    for index in sorted(indexed):
        weight, bias = indexed[index].get("weight"), indexed[index].get("bias")
        if weight is None or weight.dim() != 2 or bias is not None and bias.shape != weight.shape[:1]:
            raise WitError(f"{path}: layer {prefix}{index} is not a Linear layer (a 2-d weight and a bias of "
                           "its outputs)")
        if layers and layers[-1][0].shape[0] != weight.shape[1]:
            raise WitError(f"{path}: layer {prefix}{index} reads {weight.shape[1]} inputs, the layer before "
                           f"gives {layers[-1][0].shape[0]}")
        layers.append((weight, bias))
    return layers


def convert_aesthetic(state: dict) -> dict:
    """LAION's improved aesthetic predictor (`sac+logos+ava1-l14-linearMSE.pth`: an MLP of
    Linear and Dropout layers, `layers.N.*`, with no activation between them) as a head
    state dict."""
    return {**state, "activation": "none", "output": "none", "input": "image"}


def from_dense_layers(kernels: list, biases: list, mean=None, variance=None, activation: str = "relu",
                      output: str = "sigmoid") -> dict:
    """A head state dict from Keras Dense layers (kernel [in, out], bias [out]), as LAION's
    CLIP-based NSFW detector is saved; a Normalization layer before them (`mean`,
    `variance`, per input) is folded into the first layer: W' = W / sqrt(var), b' = b - W' mean."""
    import torch

    state: dict = {}
    for i, (kernel, bias) in enumerate(zip(kernels, biases)):
        weight = torch.as_tensor(np.asarray(kernel, np.float64).T)
        b = torch.as_tensor(np.asarray(bias, np.float64))
        if i == 0 and mean is not None:
            scale = 1 / torch.sqrt(torch.as_tensor(np.asarray(variance, np.float64)).clamp_min(1e-12))
            weight = weight * scale
            b = b - weight @ torch.as_tensor(np.asarray(mean, np.float64))
        state[f"{i}.weight"], state[f"{i}.bias"] = weight.float(), b.float()
    return {**state, "activation": activation, "output": output, "input": "image"}


def scores(heads: list[Head], embedded: pa.Table) -> dict[str, np.ndarray]:
    """Each head's score of every sample (row for row of `embedded`), by head name."""
    from wit.filter.clipscore import matrix

    vectors = {}
    found = {}
    for head in heads:
        if head.input not in vectors:
            vectors[head.input] = matrix(embedded[head.input])
        found[head.name] = head.score(vectors[head.input])
    return found


def column(name: str) -> str:
    """A head's score column in the sample table and annotations.parquet."""
    return f"head_{name}"


class Heads:
    """Each head's score is kept for every sample (annotations: `head_NAME` in
    annotations.parquet, `heads.NAME` in the json); a sample scoring below the head's
    minimum or above its maximum is removed (reasons `NAME_min`, `NAME_max`, the value the
    score; without an embedding: `no_embedding`). The scores are columns of the sample
    table (`column`), put there before any filter runs."""
    name = "head"

    @classmethod
    def from_config(cls, config, inputs) -> "Heads | None":
        if not config.head:
            return None
        return cls(inputs.heads, bounds(config.head_min, inputs.heads, "--head-min"),
                   bounds(config.head_max, inputs.heads, "--head-max"))

    def __init__(self, heads: list[Head], minimum: dict[str, float], maximum: dict[str, float]) -> None:
        self.heads, self.minimum, self.maximum = heads, minimum, maximum
        self.annotations: list[Annotation] = []

    def __call__(self, samples: pa.Table, alive: np.ndarray) -> Iterator[Removed]:
        found = {h.name: samples[column(h.name)].to_numpy(zero_copy_only=False).astype(np.float32)
                 for h in self.heads}
        self.annotations = [Annotation(column(name), ("heads", name), score) for name, score in found.items()]
        bounded = [name for name in found if name in self.minimum or name in self.maximum]
        for row in np.flatnonzero(alive):
            for name in bounded:
                value = found[name][row]
                if np.isnan(value):
                    yield Removed(int(row), "no_embedding", name)
                elif name in self.minimum and value < self.minimum[name]:
                    yield Removed(int(row), f"{name}_min", name, float(value))
                elif name in self.maximum and value > self.maximum[name]:
                    yield Removed(int(row), f"{name}_max", name, float(value))
                else:
                    continue
                break


def bounds(given: tuple[str, ...], heads: list[Head], flag: str) -> dict[str, float]:
    """{head name: bound} of --head-min/--head-max values: `X` when there is one head, else
    `NAME=X` (NAME: the head file's name without its extension)."""
    names = [h.name for h in heads]
    found: dict[str, float] = {}
    for value in given:
        name, sep, number = value.rpartition("=")
        if not sep:
            if len(names) != 1:
                raise WitError(f"{flag} {value}: name the head (NAME=X) when there are several: {', '.join(names)}")
            name = names[0]
        if name not in names:
            raise WitError(f"{flag} {value}: no head named {name!r} (the heads: {', '.join(names)})")
        if name in found:
            raise WitError(f"{flag}: two bounds for head {name!r}")
        try:
            found[name] = float(number)
        except ValueError:
            raise WitError(f"{flag} {value}: not a number") from None
    return found
