"""Process-group set-up from torchrun's or SLURM's environment; NCCL on GPU, gloo on CPU."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from wit.formats.errors import WitError


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_env(env: dict[str, str] | None = None) -> tuple[int, int, int, str | None, str | None]:
    """(rank, world size, local rank, master address, master port) from torchrun's variables,
    else from SLURM's (`srun`: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the first node of
    SLURM_JOB_NODELIST as master), else a single process."""
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return (int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                env.get("MASTER_ADDR"), env.get("MASTER_PORT"))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        addr = env.get("MASTER_ADDR") or (first_node(nodes) if nodes else "127.0.0.1")
        port = env.get("MASTER_PORT") or str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 1000)
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)), addr, port
    return 0, 1, 0, None, None


def first_node(nodelist: str) -> str:
    """The first host of a SLURM node list (`node[01-04,07]` -> `node01`), through
    `scontrol show hostnames` when available."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, check=True, timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    head = nodelist.split(",")[0]
    if "[" not in head:
        return head
    prefix, ranges = nodelist.split("[", 1)
    return prefix + ranges.split(",")[0].split("-")[0].rstrip("]")


def init() -> World:
    """Join the process group (if there is more than one process) and pick the device."""
    rank, size, local_rank, addr, port = launch_env()
    if torch.cuda.is_available():
        # a site that binds one GPU to each task shows it as device 0
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", addr or "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", port or "29500")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=size,
                                device_id=device if device.type == "cuda" else None)
    return World(rank, size, local_rank, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_rank(world: World, *flags: bool) -> list[bool]:
    """Each flag, true on every rank when it is true on any rank: one collective for all
    of them (every rank must call it)."""
    t = torch.tensor([int(f) for f in flags], device=world.device)
    if world.size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(world: World) -> None:
    """Every rank waits here for every other."""
    if world.size > 1:
        dist.barrier()


def gather_objects(obj, world: World) -> list:
    """`obj` of every rank, in rank order, on every rank."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def local_device(name: str = "auto") -> torch.device:
    """`auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`; a GPU that is not there
    is a WitError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise WitError(f"--device {name}: no GPU is available")
    return torch.device(name)


def world_of(device: str = "auto") -> World:
    """This process's rank and device: torchrun's or srun's process group (its local GPU),
    else one process on `device`."""
    if launch_env()[1] > 1:
        return init()
    return World(0, 1, 0, local_device(device))
