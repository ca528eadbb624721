"""docker-compose.yml and the Dockerfile, checked without a container engine: Debian's
`docker-compose config` validates and resolves the file; the image installs the same
package, with the same system packages, as the README's commands."""

from __future__ import annotations

import re
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


def test_the_validator_rejects_a_broken_file(tmp_path):
    text = (REPO / "docker-compose.yml").read_text().replace('ports: ["6006:6006"]', "ports: 6006")
    (tmp_path / "docker-compose.yml").write_text(text)
    (tmp_path / "inputs").mkdir()
    done = compose_config(tmp_path)
    assert done.returncode != 0 and "ports" in done.stderr


def test_the_image_installs_the_package_the_readme_installs():
    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    # the Makefile (what the README's commands run) and the image both pip-install the repository root
    assert re.search(r"pip install -q -e '\.\[test\]'", makefile)
    installed = re.search(r"pip install '\.\[(\w+)\]'", dockerfile)
    extras = _extras()
    assert installed and installed.group(1) in extras
    # nothing in the image that the tested environment lacks: the image's extra is part of the tests'
    assert set(extras[installed.group(1)]) <= set(extras["test"])
    copied = set(re.findall(r"^COPY (\S+)", dockerfile, flags=re.M))
    assert {"pyproject.toml", "wit", "train"} <= copied
    debian = re.search(r"^DEBIAN_PACKAGES := (.*)$", makefile, flags=re.M).group(1).split()
    runtime = {"wordnet-base", "openjdk-17-jre-headless"}
    assert runtime <= set(debian) and all(p in dockerfile for p in runtime)


def _extras() -> dict[str, list[str]]:
    import tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


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
