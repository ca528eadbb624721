"""The seam between the crawler and img2dataset. The URL policy hangs on img2dataset's
internals: `wit.crawl.image_fetch` puts its `download_image` and `write_stats` in
`img2dataset.downloader`, and `wit.crawl.img2dataset_download` swaps `Downloader`, `Reader`
and `signal` in `img2dataset.main`. So img2dataset is pinned below its next minor version,
these tests fail at once when a patched symbol, its signature or its call site changes,
and a private address is refused through the public `img2dataset.download` call."""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import img2dataset

from tests.cli import REPO
from tests.support.testweb import TestWeb

SOURCE = Path(img2dataset.__file__).parent


def functions(module: str) -> dict[str, ast.FunctionDef]:
    """Every function and method of an img2dataset module's source, by (qualified) name."""
    tree = ast.parse((SOURCE / f"{module}.py").read_text())
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            found.update({f"{node.name}.{f.name}": f for f in node.body if isinstance(f, ast.FunctionDef)})
    return found


def parameters(node: ast.FunctionDef) -> list[str]:
    return [a.arg for a in node.args.args]


def calls(node: ast.AST) -> set[str]:
    """The names called in `node` (`f(...)` and `x.f(...)`)."""
    return {c.func.id if isinstance(c.func, ast.Name) else c.func.attr for c in ast.walk(node)
            if isinstance(c, ast.Call) and isinstance(c.func, (ast.Name, ast.Attribute))}


def test_img2dataset_is_pinned_below_its_next_minor_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirement = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "img2dataset")
    installed = Version(importlib.metadata.version("img2dataset"))
    assert installed in requirement.specifier
    upper = [s for s in requirement.specifier if s.operator == "<"]
    assert upper and Version(upper[0].version) <= Version(f"{installed.major}.{installed.minor + 1}")


def test_the_patched_symbols_and_their_call_sites_are_unchanged():
    downloader, main, reader = functions("downloader"), functions("main"), functions("reader")
    # the image fetch: replaced by wit.crawl.image_fetch.download_image, called by name from the retry loop
    assert parameters(downloader["download_image"]) == ["row", "timeout", "user_agent_token",
                                                        "disallowed_header_directives"]
    assert "download_image" in calls(downloader["download_image_with_retry"])
    assert "download_image_with_retry" in calls(downloader["Downloader.download_shard"])
    assert parameters(downloader["Downloader.download_shard"]) == ["self", "row"]
    # write_stats: imported into downloader and called there by name, so the module attribute is what runs
    source = (SOURCE / "downloader.py").read_text()
    assert "from .logger import write_stats" in source and "write_stats" in calls(downloader["Downloader.download_shard"])
    assert parameters(functions("logger")["write_stats"])[:2] == ["output_folder", "shard_id"]
    # main: Downloader, Reader and signal are module attributes used by download()
    main_source = (SOURCE / "main.py").read_text()
    for line in ("from .reader import Reader", "from .downloader import Downloader", "import signal"):
        assert line in main_source.splitlines()
    assert {"Reader", "Downloader", "signal"} <= calls(main["download"])
    assert "start_shard_id" in parameters(reader["Reader.__init__"])
    # every keyword the crawl passes is still a parameter of download()
    from wit.crawl import img2dataset_download

    passed = {k.arg for c in ast.walk(ast.parse(inspect.getsource(img2dataset_download.download)))
              if isinstance(c, ast.Call) and getattr(c.func, "attr", None) == "download" for k in c.keywords}
    assert passed and passed <= set(inspect.signature(img2dataset.download).parameters)
    # and the patches are in place once the crawl's modules are imported
    from img2dataset import downloader as i2d_downloader

    from wit.crawl import image_fetch

    assert i2d_downloader.download_image is image_fetch.download_image


DOWNLOAD = """
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
from wit.crawl.config import CrawlConfig
from wit.crawl.img2dataset_download import download
from wit.formats.errors import Unfinished

if __name__ == "__main__":
    root, url = sys.argv[1], sys.argv[2]
    pq.write_table(pa.table({"uid": ["0" * 32], "url": [url], "text": ["a dog"], "query_ids": [[0]]}),
                   f"{root}/selected/0.parquet")
    config = CrawlConfig(queries="unused", out=root, candidates=("unused",), processes=1, threads=1, timeout=5,
                         respect_robots=False, samples_per_shard=10)
    download(config, f"{root}/selected", f"{root}/download", f"{root}/counters")
    table = pq.read_table(f"{root}/download/00000.parquet", columns=["status", "error_message"])
    print(json.dumps(table.to_pylist()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_private_address_is_refused_through_img2datasets_download(tmp_path, host):
    (tmp_path / "selected").mkdir()
    with TestWeb() as web:
        done = subprocess.run([sys.executable, "-c", DOWNLOAD, str(tmp_path),
                               web.url("/img/a.jpg").replace("127.0.0.1", host)],
                              capture_output=True, text=True, timeout=300,
                              env={"PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr[-3000:]
        assert web.requests() == []   # not one request left the crawler
    [row] = __import__("json").loads(done.stdout.strip().splitlines()[-1])
    assert row["status"] == "failed_to_download" and row["error_message"].startswith("refused_url: ")
