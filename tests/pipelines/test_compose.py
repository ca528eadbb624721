"""docker-compose.yml, checked without a container engine: Debian's `docker-compose config`
validates and resolves the file, and every service's command exists in the toolkit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pyspark
import pytest
import yaml

from tests.cli import REPO

SERVICES = {"toolkit", "spark-master", "spark-worker", "web", "tensorboard"}


def compose_config(directory) -> subprocess.CompletedProcess:
    assert shutil.which("docker-compose"), "Debian's docker-compose is not installed (make test installs it)"
    return subprocess.run(["docker-compose", "--project-directory", str(directory), "-f",
                           str(directory / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=120)


def test_compose_file_is_valid_and_wires_the_stack():
    done = compose_config(REPO)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert set(resolved["services"]) == SERVICES
    assert set(resolved["volumes"]) >= {"queries", "crawl", "shards", "runs"}
    worker = resolved["services"]["spark-worker"]
    assert "spark://spark-master:7077" in worker["command"] and "spark-master" in worker["depends_on"]
    assert all(s.get("image") == "wit-toolkit" for s in resolved["services"].values())
    mounts = {v.split(":")[1] for v in resolved["services"]["toolkit"]["volumes"]}
    assert {"/data/queries", "/data/crawl", "/data/shards", "/data/runs"} <= mounts
    assert "/data/runs" in resolved["services"]["tensorboard"]["command"]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_command_exists_in_the_toolkit(service):
    command = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][service]["command"]
    program = command[0]
    if program.startswith("/usr/local/lib/python3.11/site-packages/pyspark/"):
        assert (Path(pyspark.__file__).parent / program.split("pyspark/", 1)[1]).exists()
    elif program == "python":
        assert command[1:3] == ["-m", "http.server"]
    else:
        assert program in {"wit", "tensorboard"}
        assert shutil.which(program, path=str(REPO / ".venv" / "bin")) or shutil.which(program)
