"""The training run: set-up, resume, the step loop, checkpoints, logging and evaluation.

The loop counts steps and samples; the checkpoint records the epoch, the step inside it
and every dataloader worker's position, so a resumed run sees exactly the data an
uninterrupted run would have seen."""

from __future__ import annotations

import json
import logging
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from train import checkpoint, data, dist, model as models, optim
from train.config import TrainConfig
from train.errors import TrainError
from train.evaluate import build_evaluator
from train.metrics import Metrics, NullMetrics
from train.shards import list_shards
from train.step import Stepper

log = logging.getLogger("train")
PREEMPTED = 75   # exit status after a signal-requested checkpoint (EX_TEMPFAIL: run again to resume)


@dataclass
class Position:
    """Where the run stands: counted in steps and samples; the data stream's place."""
    step: int = 0
    samples: int = 0
    epoch: int = 0
    epoch_step: int = 0
    workers: list[int] | None = None    # this rank's per-worker positions in the epoch
    counts: dict = field(default_factory=lambda: {"dropped": 0, "repeated": 0, "unsafe_members": 0})


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; return the run summary. Every rank calls it."""
    world = dist.init()
    stop = checkpoint.StopRequest()   # from the start: a signal during set-up still ends in a checkpoint
    run_dir = Path(cfg.run_dir)
    workers = max(1, cfg.workers)
    if cfg.batch_size % (world.size * cfg.accum_steps):
        raise TrainError(f"batch_size {cfg.batch_size} is not divisible by {world.size} ranks x "
                         f"{cfg.accum_steps} accum_steps")
    local_batch = cfg.batch_size // world.size
    shards = list_shards(cfg.shards, cfg.sizes)
    data.plan_epoch(shards, cfg.seed, 0, world.size, workers, local_batch)   # fail early on bad sizes

    torch.manual_seed(cfg.seed)
    model = models.create(cfg.model).to(world.device)
    tokenize = models.tokenizer(cfg.model)
    mean, std = models.mean_std(model)
    optimizer, schedule = optim.build(model, cfg)
    position = Position()
    resume_from = checkpoint.resume_path(cfg.resume, run_dir)
    if resume_from is not None:
        position = _restore(checkpoint.load(resume_from), model, optimizer, schedule, cfg, world)
        log.info("resumed from %s at step %d", resume_from, position.step)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
        models.write_model_config(cfg.model, run_dir)
        log.info("%s: %.1fM parameters; %d shards, %d samples; global batch %d = %d ranks x %d%s",
                 cfg.model.name, sum(p.numel() for p in model.parameters()) / 1e6, len(shards),
                 sum(s.samples for s in shards), cfg.batch_size, world.size, local_batch,
                 f" ({cfg.accum_steps} micro-batches)" if cfg.accum_steps > 1 else "")

    wrapped = DistributedDataParallel(model) if world.size > 1 else model
    if cfg.model.compile:
        wrapped = torch.compile(wrapped)
    stepper = Stepper(model, wrapped, optimizer, schedule, cfg, world, mean, std)
    settings = data.StreamSettings(cfg.seed, local_batch, models.image_size(model), cfg.shuffle_window, cfg.max_pixels)
    evaluator = build_evaluator(cfg.eval, world, tokenize, models.image_size(model), mean, std, cfg.max_pixels)
    metrics = Metrics(run_dir, cfg.tensorboard, cfg.progress, position.step, cfg.steps) if world.is_main else NullMetrics()
    summary = _loop(cfg, world, model, stepper, evaluator, metrics, stop, shards, settings, tokenize, position, workers)
    metrics.close()
    dist.shutdown()
    return summary


def _loop(cfg, world, model, stepper, evaluator, metrics, stop, shards, settings, tokenize, position, workers) -> dict:
    window = _Window(position.step)
    loss = torch.zeros(())
    while position.step < cfg.steps:
        plan = data.plan_epoch(shards, cfg.seed, position.epoch, world.size, workers, settings.batch_size)
        stream = data.EpochStream(plan, world.rank, position.epoch_step, position.workers, settings, tokenize)
        position.workers = list(position.workers or [0] * workers)
        batches = iter(data.loader(stream, cfg.workers > 0, world.device.type == "cuda", cfg.seed))
        while position.step < cfg.steps:
            waited = time.perf_counter()
            batch = next(batches, None)
            window.data_wait += time.perf_counter() - waited
            if batch is None:
                break
            if dist.any_rank(world, "error" in batch)[0]:   # every rank stops, none waits in a collective
                raise TrainError(batch.get("error", "a data error on another rank (see its log)"))
            loss = stepper(*stepper.inputs(batch))
            nonfinite, stopping = dist.any_rank(world, not torch.isfinite(loss).item(), stop.signal is not None)
            if nonfinite:
                raise TrainError(f"non-finite loss at step {position.step}; lower lr or check the data "
                                 f"(last checkpoint is kept in {cfg.run_dir}/checkpoints)")
            stepper.finish()
            _advance(position, batch, cfg.batch_size)
            metrics.advance()
            if position.step % cfg.log_every == 0 or position.step == cfg.steps:
                metrics.log(position.step, window.report(world, loss, model, stepper, position, cfg.batch_size))
            last = position.step == cfg.steps
            if stopping or last or (cfg.save_every and position.step % cfg.save_every == 0):
                _save(cfg, world, model, stepper, position)
            if stopping:
                log.warning("stopping on %s at step %d; run again with resume=auto to continue",
                            stop.signal or "a signal on another rank", position.step)
                return {"step": position.step, "samples": position.samples, "preempted": True}
            if (cfg.eval_every and position.step % cfg.eval_every == 0) or last:
                results = evaluator.run(model)
                if results:
                    metrics.log(position.step, results, kind="eval")
        if position.step < cfg.steps:   # the epoch ran out
            position.epoch, position.epoch_step, position.workers = position.epoch + 1, 0, None
    return {"step": position.step, "samples": position.samples, "loss": float(loss), "preempted": False,
            **_global_counts(position.counts, world)}


def _global_counts(counts: dict, world) -> dict:
    """The dropped / repeated / unsafe counts summed over the ranks (a collective)."""
    t = torch.tensor(list(counts.values()), dtype=torch.float64, device=world.device)
    if world.size > 1:
        torch.distributed.all_reduce(t)
    return {k: int(v) for k, v in zip(counts, t.tolist())}


def _advance(position: Position, batch: dict, global_batch: int) -> None:
    position.step += 1
    position.epoch_step += 1
    position.samples += global_batch
    position.workers[batch["worker"]] = batch["position"]
    for key in position.counts:
        position.counts[key] += int(batch.get(key, 0))


class _Window:
    """Throughput and data-wait figures since the previous log line."""

    def __init__(self, step: int):
        self.step, self.start, self.data_wait = step, time.perf_counter(), 0.0

    def report(self, world, loss, model, stepper, position, global_batch) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        t = torch.tensor([float(loss), self.data_wait / elapsed], device=world.device)
        if world.size > 1:
            torch.distributed.all_reduce(t)
            t /= world.size
        rate = (position.step - self.step) * global_batch / elapsed
        values = {"loss": t[0].item(), "lr": stepper.optimizer.param_groups[0]["lr"],
                  "logit_scale": model.logit_scale.exp().item(), "samples_per_s": rate,
                  "samples_per_s_per_device": rate / world.size, "data_wait_fraction": t[1].item(),
                  "memory_mb": _memory_mb(world.device), "epoch": position.epoch, "samples": position.samples,
                  **_global_counts(position.counts, world)}
        self.step, self.start, self.data_wait = position.step, time.perf_counter(), 0.0
        return values


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _save(cfg, world, model, stepper, position) -> None:
    """Every rank's worker positions and counts are gathered; rank 0 writes; every rank
    waits until it is written (a rank that exits early would have its launcher kill rank 0)."""
    gathered = dist.gather_objects((list(position.workers), dict(position.counts)), world)
    if world.is_main:
        _write(cfg, world, model, stepper, position, [g[0] for g in gathered], [g[1] for g in gathered])
    dist.barrier(world)


def _write(cfg, world, model, stepper, position, positions: list, counts: list) -> None:
    state = {
        "state_dict": model.state_dict(),
        "optimizer": optim.plain_state(stepper.optimizer.state_dict()),
        "scheduler": stepper.schedule.state_dict(),
        "scaler": {},   # bf16 autocast needs no loss scaling
        "step": position.step, "samples": position.samples, "counts": counts,   # per rank
        "data": {"epoch": position.epoch, "epoch_step": position.epoch_step, "positions": positions,
                 "world_size": world.size, "workers": max(1, cfg.workers)},
        "rng": checkpoint.rng_state(),
        "config": cfg.to_dict(),
        "model_name": cfg.model.name,
    }
    checkpoint.save(Path(cfg.run_dir) / "checkpoints", position.step, state, cfg.keep_checkpoints)


# Settings a resumed run must share with its checkpoint: they fix the model and the data stream.
_FIXED_ON_RESUME = ("seed", "batch_size", "accum_steps", "shuffle_window", "model.name", "model.config")


def _restore(state: dict, model, optimizer, schedule, cfg, world) -> Position:
    saved, now = state["config"], cfg.to_dict()
    for key in _FIXED_ON_RESUME:
        before, after = _dotted(saved, key), _dotted(now, key)
        if before != after:
            raise TrainError(f"resume: {key} was {before!r} in the checkpoint, now {after!r}; use the "
                             f"checkpoint's value or a new run_dir")
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(optim.restore_state(state["optimizer"]))
    schedule.load_state_dict(state["scheduler"])
    checkpoint.set_rng_state(state["rng"])
    d = state["data"]
    same_layout = d["world_size"] == world.size and d["workers"] == max(1, cfg.workers)
    if not same_layout:
        log.warning("the checkpoint was written by %d ranks x %d workers, this run has %d x %d: the data "
                    "stream resumes at the same step of epoch %d, but not sample-exact",
                    d["world_size"], d["workers"], world.size, max(1, cfg.workers), d["epoch"])
    workers = d["positions"][world.rank] if same_layout else None
    if workers is None and d["epoch_step"]:
        count, local = max(1, cfg.workers), cfg.batch_size // world.size
        workers = [data.batches_of(w, d["epoch_step"], count) * local for w in range(count)]
    counts = state["counts"]
    if not same_layout:   # rank 0 carries the totals on
        counts = [{k: sum(c[k] for c in counts) for k in counts[0]}] + [dict.fromkeys(counts[0], 0)] * world.size
    return Position(state["step"], state["samples"], d["epoch"], d["epoch_step"], workers, dict(counts[world.rank]))


def _dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree
