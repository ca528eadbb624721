"""`wit embed` (skeleton: being built)."""

from __future__ import annotations

from dataclasses import dataclass

from wit.flags import option


@dataclass(frozen=True)
class EmbedConfig:
    checkpoint: str = option(help="a trainer checkpoint or an OpenCLIP pretrained file", metavar="FILE")
    shards: str = option(help="SHARDS dir (wit shard)", metavar="DIR")
    out: str = option(help="EMBED output directory", metavar="DIR")


def run(config: EmbedConfig) -> dict:
    raise NotImplementedError
