"""`wit filter` (skeleton: being built)."""

from __future__ import annotations

from dataclasses import dataclass

from wit.flags import option


@dataclass(frozen=True)
class FilterConfig:
    shards: str = option(help="input SHARDS dir (wit shard)", metavar="DIR")
    out: str = option(help="output SHARDS dir", metavar="DIR")


def run(config: FilterConfig) -> dict:
    raise NotImplementedError
