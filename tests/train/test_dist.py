"""The launch environment (`train.dist`): torchrun's, SLURM's, or none."""

from __future__ import annotations

from train import dist


def test_launch_environment_from_torchrun_slurm_or_none():
    torchrun = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"}
    assert dist.launch_env(torchrun) == (3, 8, 1, "n1", "1234")
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_JOB_NODELIST": "gpu[07-08,11]", "SLURM_JOB_ID": "4242"}
    rank, size, local, addr, port = dist.launch_env(slurm)
    assert (rank, size, local) == (5, 8, 1) and addr == "gpu07" and port == str(29500 + 4242 % 1000)
    assert dist.launch_env({}) == (0, 1, 0, None, None)
