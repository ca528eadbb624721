"""A real standalone Spark cluster on 127.0.0.1: one master and one worker, started from
the pyspark package's own `spark-class` launcher and stopped by their process ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark

from tests.cli import REPO, free_port

SPARK_HOME = Path(pyspark.__file__).parent


class SparkStandalone:
    """`with SparkStandalone(workdir) as cluster:` gives `cluster.master_url` (spark://...)."""

    def __init__(self, workdir: Path, cores: int = 2, memory: str = "2g"):
        self.workdir, self.cores, self.memory = workdir, cores, memory
        self.processes: list[subprocess.Popen] = []
        self.port, self.ui_port = free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"

    def __enter__(self) -> "SparkStandalone":
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                        "--port", str(self.port), "--webui-port", str(self.ui_port))
            self._start("worker", "org.apache.spark.deploy.worker.Worker", self.master_url, "--host", "127.0.0.1",
                        "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()),
                        "--work-dir", str(self.workdir / "work"))
            self._wait_for_worker()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def _start(self, name: str, *args: str) -> None:
        env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1",
               "SPARK_LOG_DIR": str(self.workdir), "SPARK_WORKER_DIR": str(self.workdir / "work")}
        log = open(self.workdir / f"{name}.log", "wb")
        self.processes.append(subprocess.Popen([str(SPARK_HOME / "bin" / "spark-class"), *args], env=env,
                                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

    def _wait_for_worker(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited early; see {self.workdir}/*.log")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as r:
                    if json.load(r).get("aliveworkers", 0) >= 1:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"no Spark worker registered within {timeout} s; see {self.workdir}/*.log")
