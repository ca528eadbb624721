"""The SLURM scripts of pipelines/slurm on a real single-node cluster (slurm-wlm + munge,
started by the tests, see slurmcluster.py): training with 2 CPU tasks over gloo, a
time-limit signal -> checkpoint -> requeue -> exact resume, a crawl as a job array
(`wit crawl --part I/N`) against the local test web, its merge (`wit merge-crawl`) and
`wit shard` on the merged dir, the query build.
Needs root (slurmd); installs slurm-wlm and munge with apt-get when they are missing."""

from __future__ import annotations

import json
import math
import os
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from tests.cli import REPO
from tests.pipelines.slurmcluster import SlurmCluster
from tests.support.checkpoints import TINY_MODEL
from tests.support.crawls import write_pool
from tests.support.shards import write_shards
from tests.support.testweb import TestWeb
from tests.support.wikidump import WikiPage, write_dump
from tests.support.witcli import run_wit

SLURM = REPO / "pipelines" / "slurm"
STEPS = 30
CPU_TASKS = ["--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1"]   # 2 gloo ranks on the 2-CPU node

# slurmd runs as root (SlurmUser=root) and the packages are installed by apt-get: root only
pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("slurm"),   # one cluster at a time
              pytest.mark.skipif(os.geteuid() != 0, reason="the single-node SLURM cluster runs slurmd as root")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def job_env(**extra) -> dict:
    """What the jobs see besides the test's own environment (sbatch passes it on)."""
    return {"PYTHON": sys.executable, "WIT_REPO": str(REPO), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
            "NO_ALBUMENTATIONS_UPDATE": "1", **extra}


def write_config(path: Path, shards: Path, run_dir: Path, **overrides) -> Path:
    config = {"shards": str(shards), "run_dir": str(run_dir),
              "model": {"name": "wit-test-tiny", "config": TINY_MODEL}, "batch_size": 8, "steps": 4,
              "lr": 1e-3, "warmup": 2, "workers": 1, "save_every": 0, "log_every": 1, "shuffle_window": 16,
              "tensorboard": False, "progress": False, **overrides}
    path.write_text(yaml.safe_dump(config))
    return path


def train_metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if m["kind"] == "train"]


def submit_train(cluster: SlurmCluster, work: Path, name: str, *overrides: str) -> tuple[str, Path, Path]:
    """train.sbatch with 2 CPU tasks on shards in `work`: (job id, run dir, log file)."""
    shards = work / "shards"
    if not shards.exists():
        write_shards(shards, [13, 11, 16, 9, 14, 12])
    run_dir = work / name   # given as a key=value argument, which overrides the config's
    config = write_config(work / f"{name}.yaml", shards, work / "unused-run-dir")
    log = work / f"{name}.out"
    job = cluster.sbatch(*CPU_TASKS, f"--output={log}", f"--chdir={work}", SLURM / "train.sbatch", config,
                         f"run_dir={run_dir}", *overrides, env=job_env())
    return job, run_dir, log


@pytest.fixture(scope="module")
def straight_run(cluster, tmp_path_factory):
    """A run of STEPS steps that nothing interrupts: (job record, run dir, log)."""
    work = tmp_path_factory.mktemp("train")
    job, run_dir, log = submit_train(cluster, work, "straight", f"steps={STEPS}", "save_every=10")
    [record] = cluster.wait(job, timeout=300)
    return record, run_dir, log


@pytest.mark.slow
def test_train_with_two_gloo_tasks_completes(straight_run):
    record, run_dir, log = straight_run
    output = log.read_text()
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", output[-3000:]
    assert record["Restarts"] == "0" and "requeue" not in output
    assert "global batch 8 = 2 ranks x 4" in output          # two ranks, one per srun task
    assert not (run_dir.parent / "unused-run-dir").exists()   # key=value arguments reach the trainer
    assert (run_dir / "checkpoints" / f"step_{STEPS}.pt").exists()
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert state["position"]["step"] == STEPS and state["data"]["world_size"] == 2
    metrics = train_metrics(run_dir)
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))
    assert all(math.isfinite(m["loss"]) for m in metrics)


@pytest.mark.slow
def test_time_limit_signal_checkpoints_requeues_and_resumes_exactly(cluster, straight_run, tmp_path):
    job, run_dir, log = submit_train(cluster, tmp_path, "preempted", f"steps={STEPS}")
    metrics = run_dir / "metrics.jsonl"

    def reached_step_3() -> bool:
        [record] = cluster.jobs(job)
        assert record["JobState"] in ("PENDING", "RUNNING"), f"the run ended before the signal: {log.read_text()}"
        return metrics.exists() and len(metrics.read_text().splitlines()) >= 3

    cluster.wait_for(reached_step_3, "step 3 of the run", timeout=240, poll=0.05)
    # What SLURM does at --signal=B:USR1@120 when the time limit nears: USR1 to the batch shell only.
    cluster.run("scancel", "--batch", "--signal=USR1", job)
    [record] = cluster.wait(job, timeout=300)
    output = log.read_text()
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", output[-3000:]
    assert record["Restarts"] == "1", output[-3000:]
    assert "SIGUSR1 (time limit near)" in output and "exit code 75" in output
    assert f"requeueing job {job}" in output
    assert "start 1 at" in output and "start 2 at" in output   # one log, appended by both starts

    stopped_at = int(output.split(f"resumed from {run_dir}/checkpoints/step_")[1].split(".pt at step ")[0])
    assert f"resumed from {run_dir}/checkpoints/step_{stopped_at}.pt at step {stopped_at}" in output
    assert 3 <= stopped_at < STEPS
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.pt")) == \
        sorted([f"step_{stopped_at}.pt", f"step_{STEPS}.pt"])
    final = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert final["position"] == {"step": STEPS, "samples": STEPS * 8, "skipped": 0, "streak": 0, "updated": STEPS}
    steps = [m["step"] for m in train_metrics(run_dir)]
    assert steps == list(range(1, STEPS + 1))   # every step once: stopped after `stopped_at`, went on from there
    # Same ranks, same workers: the requeued run ends exactly where the uninterrupted one did.
    reference = torch.load(straight_run[1] / "checkpoints" / "latest.pt", weights_only=True)["state_dict"]
    assert final["state_dict"].keys() == reference.keys()
    assert all(torch.equal(final["state_dict"][k], reference[k]) for k in reference)


@pytest.mark.slow
def test_scancel_checkpoints_without_requeue(cluster, tmp_path):
    job, run_dir, log = submit_train(cluster, tmp_path, "cancelled", f"steps={STEPS * 10}")
    metrics = run_dir / "metrics.jsonl"
    cluster.wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 2,
                     "step 2 of the run", timeout=240, poll=0.05)
    cluster.run("scancel", job)   # SIGTERM to the batch shell and the tasks, as a user's cancel
    [record] = cluster.wait(job, timeout=120)
    output = log.read_text()
    assert record["JobState"] == "CANCELLED" and record["Restarts"] == "0", output[-3000:]
    assert "requeueing" not in output
    cluster.wait_for(lambda: (run_dir / "checkpoints" / "latest.pt").exists(), "the checkpoint", timeout=30)
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    assert 2 <= state["position"]["step"] < STEPS * 10


# ---- the crawl as a job array, merged, then sharded -----------------------------------


@pytest.mark.slow
def test_crawl_array_merge_and_shard(cluster, tmp_path):
    queries = tmp_path / "queries"
    queries.mkdir()
    pq.write_table(pa.table({"query_id": pa.array([0, 1], pa.int32()), "query": ["dog", "cat"]}),
                   queries / "queries.parquet")
    out = tmp_path / "crawl"
    with TestWeb() as web:
        pools = []
        for f in range(3):   # 3 files over 2 tasks: part-0 takes files 0 and 2, part-1 file 1
            rows = [(web.url(f"/img/f{f}-{i}.jpg"), f"a dog, number {i} of file {f}") for i in range(4)]
            rows += [(web.url(f"/img/cat{f}.png"), "a cat"), (web.url("/404"), "a lost dog"),
                     (web.url("/img/shared.jpg"), "the same dog in every file")]
            pools.append(write_pool(tmp_path / f"pool-{f}.parquet", rows))
        crawl = cluster.sbatch("--array=0-1", "--cpus-per-task=1", f"--output={tmp_path}/crawl-%a.out",
                               SLURM / "crawl.sbatch", queries, out, f"{tmp_path}/pool-*.parquet",
                               "--allow-private-hosts", "--threads", "4", "--timeout", "5",
                               "--samples-per-shard", "3", env=job_env())
        merge = cluster.sbatch(f"--dependency=afterok:{crawl}", f"--output={tmp_path}/merge.out",
                               SLURM / "merge_crawl.sbatch", out, env=job_env())
        tasks = cluster.wait(crawl, timeout=300)
        [merged] = cluster.wait(merge, timeout=60)
    logs = "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))
    assert [t["JobState"] for t in tasks] == ["COMPLETED", "COMPLETED"], logs[-4000:]
    assert merged["JobState"] == "COMPLETED", logs[-4000:]

    assert "wit merge-crawl: 2 parts, 21 matched, 21 selected, 18 downloaded" in logs
    for part, files in ((0, [pools[0], pools[2]]), (1, [pools[1]])):   # `wit crawl --part I/2` took them
        summary = json.loads((out / f"part-{part}" / "crawl.json").read_text())
        assert summary["candidate_files"] == [str(p) for p in files] and summary["parameters"]["part"] == f"{part}/2"
    assert not list(out.glob("part-*/partition.json"))
    # The parts' shards, both numbered from 00000, renumbered one part after the other in OUT/crawl.
    crawl = out / "crawl"
    download = crawl / "download"
    counts = [len(list((out / f"part-{part}" / "download").glob("*.tar"))) for part in (0, 1)]
    assert min(counts) >= 2   # names that would collide
    tars = sorted(p.name for p in download.glob("*.tar"))
    assert tars == [f"{i:05d}.tar" for i in range(sum(counts))]
    assert all((download / t).is_symlink() and (download / t).resolve().parents[2] == out.resolve() for t in tars)
    assert os.readlink(download / f"{counts[0]:05d}.tar") == "../../part-1/download/00000.tar"
    assert all((download / t.replace(".tar", "_stats.json")).exists() for t in tars)
    summary = json.loads((crawl / "crawl.json").read_text())
    assert summary["tool"] == "wit merge-crawl" and summary["parts"] == 2 and summary["queries"] == 2
    assert summary["counts"]["read"] == 21 and summary["counts"]["matched"] == 21
    assert summary["download"]["successes"] == 18 and summary["download"]["failed_to_download"] == 3
    entry = pq.read_table(crawl / "entry_counts.parquet").to_pylist()
    assert [(e["query_id"], e["matched"]) for e in entry] == [(0, 18), (1, 3)]

    shards = tmp_path / "shards"
    done = run_wit("shard", "--crawl", crawl, "--out", shards, "--samples-per-shard", "4", "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((shards / "manifest.json").read_text())
    # 12 dogs + 3 cats + the shared dog once (its 3 downloads are one uid)
    assert manifest["total_samples"] == 16 and manifest["counts"]["duplicates_by_uid"] == 2
    assert sum(json.loads((shards / "sizes.json").read_text()).values()) == 16
    with tarfile.open(shards / "000000.tar") as tar:
        assert len([m for m in tar.getnames() if m.endswith(".json")]) == 4


# ---- embeddings, one task per GPU (here: 2 gloo tasks) ------------------------------------


@pytest.mark.slow
def test_embed_with_two_srun_tasks_equals_one_process(cluster, tmp_path):
    from tests.support.checkpoints import write_checkpoint
    from tests.support.shards import shards_dir

    shards = shards_dir(tmp_path / "shards", [5, 4, 6])
    checkpoint = write_checkpoint(tmp_path / "model.pt")
    log = tmp_path / "embed.out"
    job = cluster.sbatch(*CPU_TASKS, f"--output={log}", SLURM / "embed.sbatch", "--checkpoint", checkpoint,
                         "--shards", shards, "--out", tmp_path / "on-slurm", "--workers", "0", env=job_env())
    [record] = cluster.wait(job, timeout=300)
    assert record["JobState"] == "COMPLETED", log.read_text()[-4000:]
    alone = run_wit("embed", "--checkpoint", checkpoint, "--shards", shards, "--out", tmp_path / "alone",
                    "--workers", "0")
    assert alone.returncode == 0, alone.stderr[-3000:]
    on_slurm, one = ({p.name: pq.read_table(p) for p in sorted((tmp_path / d).glob("*.parquet"))}
                     for d in ("on-slurm", "alone"))
    assert sorted(on_slurm) == ["000000.parquet", "000001.parquet", "000002.parquet"]
    for name, table in one.items():
        assert on_slurm[name]["uid"].equals(table["uid"])
        for kind in ("image", "text"):
            assert torch.allclose(torch.tensor(on_slurm[name][kind].to_pylist()), torch.tensor(table[kind].to_pylist()),
                                  atol=1e-6)
    summary = json.loads((tmp_path / "on-slurm" / "embed.json").read_text())
    assert summary["samples"] == 15 and log.read_text().count("wit embed:") == 2   # each task's summary line


# ---- the query list on one node ---------------------------------------------------------


def test_build_queries_uses_every_core_of_the_node(cluster, tmp_path):
    dump = write_dump(tmp_path / "dump.xml", [WikiPage("Alpha", "Alpha beta gamma. Alpha beta delta."),
                                              WikiPage("Beta", "Alpha beta gamma, zeta eta theta.")])
    log = tmp_path / "queries.out"
    job = cluster.sbatch(f"--output={log}", SLURM / "build_queries.sbatch", "--wiki-dump", dump,
                         "--out", tmp_path / "queries", "--min-count", "2", "--min-pmi", "0", env=job_env())
    [record] = cluster.wait(job, timeout=180)
    assert record["JobState"] == "COMPLETED", log.read_text()[-3000:]
    assert f"{cluster.cpus} workers" in log.read_text()
    queries = pq.read_table(tmp_path / "queries" / "queries.parquet").column("query").to_pylist()
    assert {"Alpha", "beta", "gamma"} <= set(queries)
