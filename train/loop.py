"""The training run: set-up, resume, the step loop, checkpoints, logging and evaluation.

The run's state lives in its parts, each with `state_dict()` / `load_state_dict()`: the
configuration (`RunConfig`), the model, the optimizer with its schedule
(`optim.Optimization`), the run position (`RunPosition`), the data stream
(`data.TrainStream`: the epoch, the step inside it, every dataloader worker's position;
`mix.MixStream` for several sources or resampled shards)
and the RNGs; one `checkpoint.Checkpointer` saves and restores them all, so a resumed
run sees exactly the data an uninterrupted run would have seen."""

from __future__ import annotations

import logging
import resource
import time
from contextlib import contextmanager
import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from train import checkpoint, dist, optim, parallel
from train.data import mix, stream as data
from train.model import clip as models
from train.model import tune
from train.config import TrainConfig
from train.dist import World
from train.eval.evaluator import Evaluator, NullEvaluator, build_evaluator
from train.metrics import Metrics, NullMetrics
from train.data.shards import list_shards
from train.step import Stepper
from wit.formats.atomic import write_json
from wit.formats.errors import WitError
from wit.formats.locks import OutputLock

log = logging.getLogger("train")
PREEMPTED = 75   # exit status after a signal-requested checkpoint (EX_TEMPFAIL: run again to resume)


@dataclass
class RunPosition:
    """Where the run stands: steps taken and samples seen; the non-finite steps skipped (in
    all, and in a row now) and the step after which the weights last changed."""
    step: int = 0
    samples: int = 0
    skipped: int = 0
    streak: int = 0
    updated: int = 0

    def advance(self, global_batch: int, applied: bool) -> None:
        self.step += 1
        self.samples += global_batch
        self.skipped += not applied
        self.streak = 0 if applied else self.streak + 1
        self.updated = self.step if applied else self.updated

    def state_dict(self) -> dict:
        return {"step": self.step, "samples": self.samples, "skipped": self.skipped, "streak": self.streak,
                "updated": self.updated}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.samples = state["step"], state["samples"]
        self.skipped, self.streak = state.get("skipped", 0), state.get("streak", 0)
        self.updated = state.get("updated", self.step)


class RunConfig:
    """The configuration as a checkpoint part: saved whole; a resume refuses a change of the
    settings that fix the model, the optimizer's state and the data stream, and logs the
    others that changed (they take effect from the resumed step: see optim.Optimization)."""
    FIXED = ("seed", "batch_size", "accum_steps", "shuffle_window", "text_sampling", "model.name", "model.config",
             "model.tokenizer_sha256", "optimizer_state", "loss", "parallel", "lock", "init_sha256",
             "resampled")
    ADDED = {"text_sampling": "fixed", "optimizer_state": "fp32", "loss": "clip", "parallel": "ddp",
             "resampled": False}   # what a checkpoint made before a setting existed had

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def state_dict(self) -> dict:
        return self.cfg.to_dict()

    def load_state_dict(self, saved: dict) -> None:
        now = self.cfg.to_dict()
        for key in self.FIXED:
            before, after = _dotted(saved, key), _dotted(now, key)
            before = self.ADDED.get(key) if before is None and key in self.ADDED else before
            before = _lists(before)
            if before != _lists(after):
                raise WitError(f"resume: {key} was {before!r} in the checkpoint, now {after!r}; use the "
                               f"checkpoint's value or a new run_dir")
        changed = [f"{key} {before!r} -> {after!r}" for key, before, after in _changes(saved, now)
                   if key not in self.FIXED and key != "resume"]
        if changed:
            log.info("resume: changed %s; in effect from the resumed step", ", ".join(changed))


def _lists(value: Any) -> Any:
    """Tuples as lists, all the way down (a saved config holds lists where the config holds tuples)."""
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _changes(before: Any, after: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, old, new) of every leaf value that differs."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in dict.fromkeys([*before, *after]):
            yield from _changes(before.get(key), after.get(key), f"{prefix}{key}.")
    elif before != after and not (isinstance(before, list) and tuple(before) == after):
        yield prefix.rstrip("."), before, after


def _dotted(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) training as configured; return the run summary. Every rank calls it."""
    world = dist.init()
    stop = checkpoint.StopRequest()   # from the start: a signal during set-up still ends in a checkpoint
    with _run_lock(Path(cfg.run_dir), world):
        return _train(cfg, world, stop)


@contextmanager
def _run_lock(run_dir: Path, world: World) -> Iterator[None]:
    """Rank 0 holds RUN/.train.lock for the whole run: a second run on the same run dir is
    refused at once, naming the process that trains in it (wit.formats.locks)."""
    lock = OutputLock(str(run_dir / ".train.lock"), str(run_dir))
    try:
        _on_main(world, lock.acquire)
        yield
    finally:
        lock.release()


def _on_main(world: World, action: Callable[[], Any]) -> None:
    """`action` on rank 0; its error raised on every rank (none waits in a collective)."""
    error = None
    if world.is_main:
        try:
            action()
        except WitError as e:
            error = e
    if dist.any_rank(world, error is not None)[0]:
        raise error or WitError("stopped by rank 0's error (see its log)")


def _train(cfg: TrainConfig, world: World, stop: checkpoint.StopRequest) -> dict:
    run_dir = Path(cfg.run_dir)
    if cfg.batch_size % (world.size * cfg.accum_steps):
        raise WitError(f"batch_size {cfg.batch_size} is not divisible by {world.size} ranks x "
                       f"{cfg.accum_steps} accum_steps")
    local_batch = cfg.batch_size // world.size
    mixed = bool(cfg.data) or cfg.resampled   # several sources, or resampled: mix.MixStream
    if mixed:   # fails early on a bad source
        sources = mix.load_sources(cfg.sources, cfg.seed, world.size, cfg.workers, cfg.resampled)
        shards = [shard for source in sources for shard in source.shards]
    else:
        shards = list_shards(cfg.shards, cfg.sizes)
        data.plan_epoch(shards, cfg.seed, 0, world.size, max(1, cfg.workers), local_batch)   # fail early on bad sizes

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, model=models.record_tokenizer(cfg.model, run_dir, copy_file=world.is_main))
    cfg = tune.record_init(cfg)
    torch.manual_seed(cfg.seed)
    model = models.create(cfg.model, cfg.loss)
    masking = tune.prepare(model, cfg)
    model = parallel.shard(model.to(world.device), cfg, world)   # fsdp: after init and lock, before the optimizer
    tokenize = models.tokenizer(cfg.model)
    mean, std = models.mean_std(model)
    optimization = optim.build(model, cfg)
    settings = data.StreamSettings(cfg.seed, local_batch, models.image_size(model), cfg.shuffle_window, cfg.max_pixels,
                                   cfg.text_sampling)
    stream = (mix.MixStream(sources, settings, world, cfg.workers, tokenize) if mixed else
              data.TrainStream(shards, settings, world, cfg.workers, tokenize))
    position = RunPosition()
    checkpointer = parallel.checkpointer(run_dir / "checkpoints", cfg, world, model, {
        "config": RunConfig(cfg), "state_dict": model, "optimizer": optimization, "position": position,
        "data": stream, "rng": checkpoint.Rng()})   # state_dict: where OpenCLIP looks for the weights
    found = checkpointer.newest_valid(checkpoint.candidates(cfg.resume, checkpointer.directory))
    if found is not None:
        checkpointer.restore_state(found[1])
        log.info("resumed from %s at step %d", found[0], position.step)
    else:
        _on_main(world, partial(checkpoint.start_afresh, cfg.resume, checkpointer.directory))
    if world.is_main:
        write_json(run_dir / "config.json", cfg.to_dict())
        models.write_model_config(cfg.model, run_dir)
        log.info("%s: %.1fM parameters; %d shards, %d samples; global batch %d = %d ranks x %d%s",
                 cfg.model.name, sum(p.numel() for p in model.parameters()) / 1e6, len(shards),
                 sum(s.samples for s in shards), cfg.batch_size, world.size, local_batch,
                 f" ({cfg.accum_steps} micro-batches)" if cfg.accum_steps > 1 else "")

    wrapped = parallel.wrap(model, cfg, world)
    if cfg.model.compile:
        wrapped = torch.compile(wrapped)
    wandb = {"project": cfg.wandb_project, "config": cfg.to_dict()} if cfg.wandb else None
    metrics = (Metrics(run_dir, cfg.tensorboard, cfg.progress, position.step, cfg.steps, wandb) if world.is_main
               else NullMetrics())
    trainer = Trainer(
        cfg=cfg, world=world, model=model, stepper=Stepper(model, wrapped, optimization, cfg, world, mean, std),
        masking=masking,
        stream=stream, position=position, checkpointer=checkpointer, metrics=metrics, stop=stop,
        evaluator=parallel.evaluator(build_evaluator(cfg.eval, world, tokenize, settings.image_size, mean, std,
                                                     cfg.max_pixels), cfg, world))
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
    stream: data.TrainStream | mix.MixStream
    position: RunPosition
    checkpointer: checkpoint.Checkpointer
    evaluator: Evaluator | NullEvaluator
    metrics: Metrics | NullMetrics
    stop: checkpoint.StopRequest
    masking: tune.PatchDropout | None = None

    def run(self) -> dict:
        """Step until `cfg.steps`, or until a stop signal (checkpointed); the run summary."""
        cfg, position = self.cfg, self.position
        window, loss, batches = _Window(position.step), torch.zeros(()), iter(self.stream)
        while position.step < cfg.steps:
            batch = window.next(batches)
            if self.masking is not None:
                self.masking.ratio = tune.patch_ratio(cfg, position.step)
            if dist.any_rank(self.world, "error" in batch)[0]:   # every rank stops, none waits in a collective
                raise WitError(batch.get("error", "a data error on another rank (see its log)"))
            loss, norm = self.stepper(*self.stepper.inputs(batch))
            stopping = self.stop.signal is not None
            # one CPU-GPU sync for both checks; a non-finite update is never applied, nor saved
            nonfinite, stopping = dist.any_rank(self.world, not torch.isfinite(loss + norm).item(), stopping)
            if nonfinite:
                self._skip()
            else:
                self.stepper.finish()
            position.advance(cfg.batch_size, applied=not nonfinite)
            self.stream.advance(batch)
            self.metrics.advance()
            last = position.step == cfg.steps
            if position.step % cfg.log_every == 0 or last:
                self.metrics.log(position.step, window.report(self, loss))
            if stopping or last or (cfg.save_every and position.step % cfg.save_every == 0):
                self.checkpointer.save(position.step, prune=position.streak == 0)
            if stopping:
                log.warning("stopping on %s at step %d; run again with resume=auto to continue",
                            self.stop.signal or "a signal on another rank", position.step)
                return {"step": position.step, "samples": position.samples, "preempted": True}
            if (cfg.eval_every and position.step % cfg.eval_every == 0) or last:
                results = self.evaluator.run(self.model)
                if results:
                    self.metrics.log(position.step, results, kind="eval")
        return {"step": position.step, "samples": position.samples, "loss": float(loss), "preempted": False,
                "skipped_steps": position.skipped, **self.stream.totals()}

    def _skip(self) -> None:
        """A step whose loss or gradient is not finite: no update (the schedule moves on);
        more than `skip_nonfinite` in a row and the run has diverged (`_diverged`)."""
        position, limit = self.position, self.cfg.skip_nonfinite
        if position.streak >= limit:
            self._diverged()
        self.stepper.skip()
        log.warning("step %d: non-finite loss or gradient; skipped without an update (%d in a row, at most %d; "
                    "%d in all)", position.step + 1, position.streak + 1, limit, position.skipped + 1)

    def _diverged(self) -> None:
        """Stop: the weights since the last update give non-finite losses. The checkpoints
        that hold them are set aside, and the error names the last good one."""
        position, directory = self.position, self.checkpointer.directory
        good = checkpoint.set_aside_diverged(directory, position.updated) if self.world.is_main else None
        dist.barrier(self.world)
        then = (f"the last good checkpoint is {good}: run again with a lower lr to continue from it" if good else
                "no checkpoint from before it is left: run again with a lower lr to start from step 0")
        raise WitError(f"non-finite loss or gradient at step {position.step + 1}, {position.streak + 1} steps in a "
                       f"row (skip_nonfinite={self.cfg.skip_nonfinite}): the run diverged after the update of step "
                       f"{position.updated}; its checkpoints from that step on are set aside in "
                       f"{directory / checkpoint.DIVERGED}; {then}")


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
        bias = getattr(run.model, "logit_bias", None)
        values = {"loss": t[0].item(), "lr": run.stepper.optimization.lr,
                  "logit_scale": parallel.full(run.model.logit_scale).exp().item(),
                  **({"logit_bias": parallel.full(bias).item()} if bias is not None else {}), "samples_per_s": rate,
                  "samples_per_s_per_device": rate / world.size, "data_wait_fraction": t[1].item(),
                  "memory_mb": _memory_mb(world.device), "epoch": run.stream.epoch, "samples": position.samples,
                  "skipped_steps": position.skipped,
                  **({"patch_dropout": run.masking.ratio} if run.masking is not None else {}),
                  **run.stream.totals()}
        self.step, self.start, self.data_wait = position.step, time.perf_counter(), 0.0
        return values


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
