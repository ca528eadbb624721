"""Run logging on rank 0: metrics.jsonl (one line per log step and per evaluation),
TensorBoard scalars, optionally Weights & Biases (the same scalars; offline unless
WANDB_MODE says otherwise) and a progress bar; a null logger on the other ranks."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from tqdm import tqdm

from wit.formats.atomic import atomic_open


WANDB_ID = "wandb_id.txt"   # RUN/wandb_id.txt: the W&B run a resumed run continues


class Metrics:
    def __init__(self, run_dir: Path, tensorboard: bool, progress: bool, start: int, total: int,
                 wandb: dict | None = None):
        path = run_dir / "metrics.jsonl"
        _keep_until(path, start)
        self.file = open(path, "a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start or None)
        self.wandb = _wandb_run(run_dir, **wandb) if wandb is not None else None
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
                        mininterval=1.0, disable=not progress)

    def log(self, step: int, values: dict, kind: str = "train") -> None:
        self.file.write(json.dumps({"kind": kind, "step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{key}": value for key, value in values.items()
                            if isinstance(value, (int, float))}, step=step)
        if kind == "train":
            self.bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)

    def advance(self) -> None:
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_run(run_dir: Path, project: str, config: dict):
    """A W&B run in RUN/wandb, offline unless WANDB_MODE is set; a resumed run continues
    the run recorded in RUN/wandb_id.txt."""
    import wandb

    id_file = run_dir / WANDB_ID
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(4)
        with atomic_open(id_file, "w") as f:
            f.write(run_id + "\n")
    return wandb.init(project=project, id=run_id, resume="allow", dir=str(run_dir), config=config,
                      mode=os.environ.get("WANDB_MODE", "offline"), name=run_dir.name)


def _keep_until(path: Path, step: int) -> None:
    """Drop the lines a stopped run logged after the step it resumes from (it logs them
    again), and a line a kill cut short."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            if line.endswith("\n") and json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    with atomic_open(path, "w") as f:
        f.writelines(kept)


class NullMetrics:
    """What the ranks other than 0 log: nothing."""

    def log(self, step: int, values: dict, kind: str = "train") -> None:
        pass

    def advance(self) -> None:
        pass

    def close(self) -> None:
        pass
