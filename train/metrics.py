"""Run logging on rank 0: metrics.jsonl (one line per log step and per evaluation),
TensorBoard scalars and a progress bar; a null logger on the other ranks."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from wit.formats.atomic import atomic_open


class Metrics:
    def __init__(self, run_dir: Path, tensorboard: bool, progress: bool, start: int, total: int):
        path = run_dir / "metrics.jsonl"
        _keep_until(path, start)
        self.file = open(path, "a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start or None)
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
                        mininterval=1.0, disable=not progress)

    def log(self, step: int, values: dict, kind: str = "train") -> None:
        self.file.write(json.dumps({"kind": kind, "step": step, "time": round(time.time(), 3), **values}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
        if kind == "train":
            self.bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)

    def advance(self) -> None:
        self.bar.update()

    def close(self) -> None:
        self.bar.close()
        self.file.close()
        if self.writer is not None:
            self.writer.close()


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
