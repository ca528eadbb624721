"""The training run: set-up, resume, the step loop, checkpoints, logging and evaluation.

The run's state lives in its parts, each with `state_dict()` / `load_state_dict()`: the
configuration (`RunConfig`), the model, the optimizer with its schedule
(`optim.Optimization`), the run position (`RunPosition`), the data stream
(`data.TrainStream`: the epoch, the step inside it, every dataloader worker's position)
and the RNGs; one `checkpoint.Checkpointer` saves and restores them all, so a resumed
run sees exactly the data an uninterrupted run would have seen."""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel

from train import checkpoint, data, dist, model as models, optim
from train.config import TrainConfig
from train.dist import World
from train.evaluate import Evaluator, NullEvaluator, build_evaluator
from train.metrics import Metrics, NullMetrics
from train.shards import list_shards
from train.step import Stepper
from wit.formats.atomic import write_json
from wit.formats.errors import WitError

log = logging.getLogger("train")
PREEMPTED = 75   # exit status after a signal-requested checkpoint (EX_TEMPFAIL: run again to resume)


@dataclass
class RunPosition:
    """Where the run stands: steps taken and samples seen."""
    step: int = 0
    samples: int = 0

    def advance(self, global_batch: int) -> None:
        self.step += 1
        self.samples += global_batch

    def state_dict(self) -> dict:
        return {"step": self.step, "samples": self.samples}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples = state["step"], state["samples"]


class RunConfig:
    """The configuration as a checkpoint part: saved whole; a resume refuses a change of the
    settings that fix the model and the data stream."""
    FIXED = ("seed", "batch_size", "accum_steps", "shuffle_window", "text_sampling", "model.name", "model.config")
    ADDED = {"text_sampling": "fixed"}   # what a checkpoint made before a setting existed had

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def state_dict(self) -> dict:
        return self.cfg.to_dict()

    def load_state_dict(self, saved: dict) -> None:
        now = self.cfg.to_dict()
        for key in self.FIXED:
            before, after = _dotted(saved, key), _dotted(now, key)
            before = self.ADDED.get(key) if before is None and key in self.ADDED else before
            if before != after:
                raise WitError(f"resume: {key} was {before!r} in the checkpoint, now {after!r}; use the "
                               f"checkpoint's value or a new run_dir")


def _dotted(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; return the run summary. Every rank calls it."""
    world = dist.init()
    stop = checkpoint.StopRequest()   # from the start: a signal during set-up still ends in a checkpoint
    run_dir = Path(cfg.run_dir)
    if cfg.batch_size % (world.size * cfg.accum_steps):
        raise WitError(f"batch_size {cfg.batch_size} is not divisible by {world.size} ranks x "
                       f"{cfg.accum_steps} accum_steps")
    local_batch = cfg.batch_size // world.size
    shards = list_shards(cfg.shards, cfg.sizes)
    data.plan_epoch(shards, cfg.seed, 0, world.size, max(1, cfg.workers), local_batch)   # fail early on bad sizes

    torch.manual_seed(cfg.seed)
    model = models.create(cfg.model).to(world.device)
    tokenize = models.tokenizer(cfg.model)
    mean, std = models.mean_std(model)
    optimization = optim.build(model, cfg)
    settings = data.StreamSettings(cfg.seed, local_batch, models.image_size(model), cfg.shuffle_window, cfg.max_pixels,
                                   cfg.text_sampling)
    stream = data.TrainStream(shards, settings, world, cfg.workers, tokenize)
    position = RunPosition()
    checkpointer = checkpoint.Checkpointer(run_dir / "checkpoints", cfg.keep_checkpoints, world, {
        "config": RunConfig(cfg), "state_dict": model, "optimizer": optimization, "position": position,
        "data": stream, "rng": checkpoint.Rng()})   # state_dict: where OpenCLIP looks for the weights
    resume_from = checkpoint.resume_path(cfg.resume, run_dir)
    if resume_from is not None:
        checkpointer.restore(resume_from)
        log.info("resumed from %s at step %d", resume_from, position.step)
    if world.is_main:
        write_json(run_dir / "config.json", cfg.to_dict())
        models.write_model_config(cfg.model, run_dir)
        log.info("%s: %.1fM parameters; %d shards, %d samples; global batch %d = %d ranks x %d%s",
                 cfg.model.name, sum(p.numel() for p in model.parameters()) / 1e6, len(shards),
                 sum(s.samples for s in shards), cfg.batch_size, world.size, local_batch,
                 f" ({cfg.accum_steps} micro-batches)" if cfg.accum_steps > 1 else "")

    wrapped = DistributedDataParallel(model) if world.size > 1 else model
    if cfg.model.compile:
        wrapped = torch.compile(wrapped)
    metrics = (Metrics(run_dir, cfg.tensorboard, cfg.progress, position.step, cfg.steps) if world.is_main
               else NullMetrics())
    trainer = Trainer(
        cfg=cfg, world=world, model=model, stepper=Stepper(model, wrapped, optimization, cfg, world, mean, std),
        stream=stream, position=position, checkpointer=checkpointer, metrics=metrics, stop=stop,
        evaluator=build_evaluator(cfg.eval, world, tokenize, settings.image_size, mean, std, cfg.max_pixels))
    summary = trainer.run()
    metrics.close()
    dist.shutdown()
    return summary


@dataclass
class Trainer:
    """The step loop over the parts of a run."""
    cfg: TrainConfig
    world: World
    model: torch.nn.Module
    stepper: Stepper
    stream: data.TrainStream
    position: RunPosition
    checkpointer: checkpoint.Checkpointer
    evaluator: Evaluator | NullEvaluator
    metrics: Metrics | NullMetrics
    stop: checkpoint.StopRequest

    def run(self) -> dict:
        """Step until `cfg.steps`, or until a stop signal (checkpointed); the run summary."""
        cfg, position = self.cfg, self.position
        window, loss, batches = _Window(position.step), torch.zeros(()), iter(self.stream)
        while position.step < cfg.steps:
            batch = window.next(batches)
            if dist.any_rank(self.world, "error" in batch)[0]:   # every rank stops, none waits in a collective
                raise WitError(batch.get("error", "a data error on another rank (see its log)"))
            loss = self.stepper(*self.stepper.inputs(batch))
            stopping = self.stop.signal is not None
            nonfinite, stopping = dist.any_rank(self.world, not torch.isfinite(loss).item(), stopping)
            if nonfinite:
                raise WitError(f"non-finite loss at step {position.step}; lower lr or check the data "
                               f"(last checkpoint is kept in {cfg.run_dir}/checkpoints)")
            self.stepper.finish()
            position.advance(cfg.batch_size)
            self.stream.advance(batch)
            self.metrics.advance()
            last = position.step == cfg.steps
            if position.step % cfg.log_every == 0 or last:
                self.metrics.log(position.step, window.report(self, loss))
            if stopping or last or (cfg.save_every and position.step % cfg.save_every == 0):
                self.checkpointer.save(position.step)
            if stopping:
                log.warning("stopping on %s at step %d; run again with resume=auto to continue",
                            self.stop.signal or "a signal on another rank", position.step)
                return {"step": position.step, "samples": position.samples, "preempted": True}
            if (cfg.eval_every and position.step % cfg.eval_every == 0) or last:
                results = self.evaluator.run(self.model)
                if results:
                    self.metrics.log(position.step, results, kind="eval")
        return {"step": position.step, "samples": position.samples, "loss": float(loss), "preempted": False,
                **self.stream.totals()}


class _Window:
    """Throughput and data-wait figures since the previous log line."""

    def __init__(self, step: int):
        self.step, self.start, self.data_wait = step, time.perf_counter(), 0.0

    def next(self, batches: Iterator[dict]) -> dict:
        """The next batch; the time waited for it is counted."""
        waited = time.perf_counter()
        batch = next(batches)
        self.data_wait += time.perf_counter() - waited
        return batch

    def report(self, run: Trainer, loss: torch.Tensor) -> dict:
        world, position = run.world, run.position
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        t = torch.tensor([float(loss), self.data_wait / elapsed], device=world.device)
        if world.size > 1:
            torch.distributed.all_reduce(t)
            t /= world.size
        rate = (position.step - self.step) * run.cfg.batch_size / elapsed
        values = {"loss": t[0].item(), "lr": run.stepper.optimization.lr,
                  "logit_scale": run.model.logit_scale.exp().item(), "samples_per_s": rate,
                  "samples_per_s_per_device": rate / world.size, "data_wait_fraction": t[1].item(),
                  "memory_mb": _memory_mb(world.device), "epoch": run.stream.epoch, "samples": position.samples,
                  **run.stream.totals()}
        self.step, self.start, self.data_wait = position.step, time.perf_counter(), 0.0
        return values


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
