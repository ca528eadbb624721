"""A real single-node SLURM cluster for tests: Debian's slurm-wlm and munge, run as root.

`SlurmCluster(directory)` writes `slurm.conf` (no systemd, no cgroups, free ports, every
path inside `directory`), starts its own munged on a private socket, then slurmctld and
slurmd in the foreground, and waits for `sinfo` to show the node idle. On exit it cancels
the jobs still queued, then stops exactly the daemons it started, by process id.

    with SlurmCluster(tmp_path / "slurm") as cluster:
        job = cluster.sbatch("pipelines/slurm/train.sbatch", "CONFIG")
        cluster.wait(job)

Client commands need `cluster.env` (it names the configuration in SLURM_CONF);
`sbatch` passes that environment on to the job."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.cli import free_port

PACKAGES = ("slurm-wlm", "munge")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel", "srun")
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED"}
FIELD = re.compile(r"(\w+)=(\S*)")


class SlurmError(RuntimeError):
    pass


def ensure_installed(timeout: float = 600) -> None:
    """Install slurm-wlm and munge with apt-get when their commands are missing (root only)."""
    if all(shutil.which(name) for name in COMMANDS):
        return
    if os.geteuid() != 0:
        raise SlurmError("slurm-wlm and munge are missing and only root can install them: "
                         "`sudo apt-get install -y slurm-wlm munge` (or `make system-packages`)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode:
            raise SlurmError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    missing = [name for name in COMMANDS if not shutil.which(name)]
    if missing:
        raise SlurmError(f"installed {', '.join(PACKAGES)} but still missing: {', '.join(missing)}")


class SlurmCluster:
    """One node (this machine, `cpus` CPUs) in one partition `test`."""

    start_timeout = 60.0
    stop_timeout = 15.0

    def __init__(self, directory: Path, cpus: int = 2):
        if os.geteuid() != 0:
            raise SlurmError("the test SLURM cluster runs slurmd as root (SlurmUser=root): run the tests as root")
        ensure_installed()
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)   # munged refuses a socket directory others can write to
        self.node = socket.gethostname()
        self.cpus = cpus
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge.socket"
        self._socket_dir = None
        if len(str(self.munge_socket)) > 100:   # a unix socket's path holds at most 107 bytes
            self._socket_dir = Path(tempfile.mkdtemp(prefix="munge-"))
            self.munge_socket = self._socket_dir / "socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for name in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_NODELIST", "SLURM_JOB_NODELIST"):
            self.env.pop(name, None)   # never mistake the test process for a job
        self.procs: list[subprocess.Popen] = []

    # ---- start and stop ------------------------------------------------------------

    def __enter__(self) -> SlurmCluster:
        try:
            self._write_conf()
            self._start_munged()
            self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
            self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
            self._wait_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _write_conf(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "munge"):
            (d / sub).mkdir(exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=wittest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire=5",   # also the delay before a requeued job may start (120 s by default)
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=bf_interval=1,sched_interval=1",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "MinJobAge=3600",
            "KillWait=10",
            "InactiveLimit=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _start_munged(self) -> None:
        d = self.dir / "munge"
        self._start("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                               f"--seed-file={d / 'munged.seed'}"])
        deadline = time.monotonic() + self.start_timeout
        while not self.munge_socket.exists():
            self._check_running()
            if time.monotonic() > deadline:
                raise SlurmError(f"munged did not create {self.munge_socket}: {self._logs()}")
            time.sleep(0.05)

    def _start(self, name: str, command: list[str]) -> None:
        log = open(self.dir / f"{name}.out", "wb")
        try:
            self.procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               env=self.env, cwd=self.dir))
        finally:
            log.close()

    def _check_running(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise SlurmError(f"{proc.args[0]} exited with status {proc.returncode}: {self._logs()}")

    def _wait_idle(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_running()
            done = self.run("sinfo", "--noheader", "--Node", "--format=%t", check=False)
            state = done.stdout.strip()
            if done.returncode == 0 and state == "idle":
                return
            time.sleep(0.2)
        raise SlurmError(f"the node is not idle after {self.start_timeout:.0f} s (sinfo: {state!r}): {self._logs()}")

    def stop(self) -> None:
        """Cancel the jobs still queued (their processes belong to slurmd's step daemons),
        then stop the daemons this cluster started, newest first, by pid."""
        if len(self.procs) == 3 and all(p.poll() is None for p in self.procs):
            self._cancel_all()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs = []
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def _cancel_all(self) -> None:
        try:
            if not self.run("squeue", "--noheader", "--format=%i", check=False).stdout.strip():
                return
            self.run("scancel", "--user=root", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if not self.run("squeue", "--noheader", "--format=%i", check=False).stdout.strip():
                    return
                time.sleep(0.5)
        except (OSError, subprocess.SubprocessError):
            pass

    def _logs(self, chars: int = 1500) -> str:
        parts = []
        for path in sorted(self.dir.glob("*.out")) + sorted(self.dir.glob("*.log")) + \
                sorted((self.dir / "munge").glob("*.log")):
            text = path.read_text(errors="replace")[-chars:]
            if text.strip():
                parts.append(f"--- {path.name}:\n{text}")
        return "\n".join(parts)

    # ---- client commands ------------------------------------------------------------

    def run(self, *command: str, check: bool = True, timeout: float = 30,
            env: dict | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})})
        if check and done.returncode:
            raise SlurmError(f"{' '.join(map(str, command))}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def sbatch(self, *args, env: dict | None = None) -> str:
        """Submit; the job id."""
        return self.run("sbatch", "--parsable", *args, env=env).stdout.strip().split(";")[0]

    def jobs(self, job: str) -> list[dict[str, str]]:
        """`scontrol show job` fields of the job (of each task of an array job)."""
        done = self.run("scontrol", "--oneliner", "show", "job", job)
        return [dict(FIELD.findall(line)) for line in done.stdout.splitlines() if line.strip()]

    def wait(self, job: str, timeout: float = 300, poll: float = 0.5) -> list[dict[str, str]]:
        """Wait until the job (every task of an array job) has finished; its records."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.jobs(job)
            if records and all(r.get("JobState") in FINISHED for r in records):
                return records
            if time.monotonic() > deadline:
                states = [(r.get("JobId"), r.get("JobState"), r.get("Reason")) for r in records]
                raise SlurmError(f"job {job} not finished after {timeout:.0f} s: {states}")
            self._check_running()
            time.sleep(poll)

    def wait_for(self, predicate, what: str, timeout: float = 120, poll: float = 0.1) -> None:
        """Poll `predicate()` until it is true (the daemons must keep running)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SlurmError(f"timed out after {timeout:.0f} s waiting for {what}")
            self._check_running()
            time.sleep(poll)
