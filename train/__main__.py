"""`python -m train --config CONFIG.yaml [--set key=value ...]`: train CLIP on WebDataset
shards. Launch one process per device with torchrun or SLURM's srun."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from functools import partial

from wit.formats.errors import WitError
from wit.formats.processes import lead

PROG = "python -m train"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    parser.add_argument("--config", help="YAML configuration (pipelines/configs/*.yaml)")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="override a configuration value (dotted keys reach nested values)")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("train").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    return lead(PROG, partial(_run, args, rank))


def _run(args: argparse.Namespace, rank: int) -> int:
    """Train; a configuration error is one line. SIGTERM, SIGUSR1 and a first SIGINT make
    the trainer checkpoint and exit 75 (see train.checkpoint.StopRequest)."""
    try:
        from train.config import load_config
        from train.loop import PREEMPTED, train

        cfg = load_config(args.config, args.set)
        if rank != 0:
            cfg = dataclasses.replace(cfg, progress=False)
        summary = train(cfg)
    except WitError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    if rank == 0:
        print(json.dumps(summary), file=sys.stderr)
    return PREEMPTED if summary["preempted"] else 0


if __name__ == "__main__":
    sys.exit(main())
