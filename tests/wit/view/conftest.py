"""The world `wit view` is tested on: a worldwide SHARDS dir built by `wit shard` from a crawl
of captions in nine languages (one of them hostile), photo-like images with a planted
near-duplicate and a planted copy of an evaluation image; its EMBED dir (`wit embed`, the
tiny model) and a FILTER dir (`wit filter --near-dup --decontaminate`); and `wit view`
serving all of it in a subprocess, driven by a headless Chromium."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import free_port
from tests.support.checkpoints import write_checkpoint
from tests.support.crawls import add
from tests.support.images import encode, photo
from tests.support.witcli import run_wit
from tests.support.worldwide import CAPTIONS, ENTRIES, write_lists
from wit.formats.uids import url_uid

HOSTILE = '<script>window.hacked=1</script><img src=x onerror="window.hacked=2"> a black cat'
ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts" / "view"
PAGE_SIZE = 10
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@dataclass
class Item:
    url: str
    text: str
    lang: str
    image: bytes

    @property
    def uid(self) -> str:
        return url_uid(self.url)

    @property
    def query_ids(self) -> list[int]:
        return [i for i, entry in enumerate(ENTRIES[self.lang]) if entry in self.text][:3]


def recompressed(image: bytes) -> bytes:
    from io import BytesIO

    from PIL import Image

    return encode(Image.open(BytesIO(image)), quality=35)


def items(eval_images: list[bytes]) -> list[Item]:
    """Every caption of every language once (each with its own photo), the hostile caption,
    a near-duplicate of one photo, and a copy of an evaluation image."""
    found = [Item(f"http://w.example/{lang}/{c}.jpg", caption, lang, photo(100 * n + c))
             for n, (lang, captions) in enumerate(CAPTIONS.items()) for c, caption in enumerate(captions)]
    found.append(Item("http://evil.example/x.jpg", HOSTILE, "en", photo(5000)))
    found.append(Item("http://w.example/copy.jpg", "A black cat, a copy of the photo", "en",
                      recompressed(found[0].image)))
    found.append(Item("http://w.example/leak.jpg", "A leaked cat photo", "en", recompressed(eval_images[1])))
    return found


def write_crawl(crawl: Path, samples: list[Item], queries: Path) -> Path:
    """A worldwide crawl in img2dataset's layout (what `wit crawl` leaves for `wit shard`)."""
    download = crawl / "download"
    download.mkdir(parents=True)
    languages = {lang: {"queries": len(entries)} for lang, entries in ENTRIES.items()}
    (crawl / "crawl.json").write_text(json.dumps({
        "tool": "wit crawl", "queries": sum(v["queries"] for v in languages.values()), "languages": languages,
        "parameters": {"queries": str(queries)}}))
    for shard, start in enumerate(range(0, len(samples), 20)):
        with tarfile.open(download / f"{shard:05d}.tar", "w") as tar:
            for i, s in enumerate(samples[start:start + 20]):
                key = f"{shard:05d}{i:04d}"
                meta = {"uid": s.uid, "url": s.url, "caption": s.text, "key": key, "status": "success",
                        "query_ids": s.query_ids, "lang": s.lang, "width": 256, "height": 192,
                        "original_width": 256, "original_height": 192,
                        "sha256": hashlib.sha256(s.image).hexdigest()}
                add(tar, f"{key}.jpg", s.image)
                add(tar, f"{key}.txt", s.text.encode())
                add(tar, f"{key}.json", json.dumps(meta).encode())
        (download / f"{shard:05d}_stats.json").write_text(json.dumps({"count": len(samples[start:start + 20])}))
    return crawl


def checked(process: subprocess.Popen, what: str) -> None:
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, f"{what}: {err}"


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    from wit.shards.build import ShardConfig, run as shard

    root = tmp_path_factory.mktemp("view")
    evals = root / "folder_eval"
    eval_images = []
    for label in range(2):
        (evals / f"class{label}").mkdir(parents=True)
        for i in range(3):
            eval_images.append(photo(20_000 + 10 * label + i))
            (evals / f"class{label}" / f"{i}.jpg").write_bytes(eval_images[-1])
    samples = items(eval_images)
    crawl = write_crawl(root / "crawl", samples, write_lists(root / "queries"))
    shards = root / "shards"
    manifest = shard(ShardConfig(crawl=str(crawl), out=str(shards), samples_per_shard=8, workers=1, cap=1000))
    assert manifest["total_samples"] == len(samples)
    checkpoint = write_checkpoint(root / "ckpt.pt")
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    checked(run_wit("embed", "--checkpoint", checkpoint, "--shards", shards, "--out", root / "embed",
                    "--batch-size", 16, "--workers", 0, **pipes), "wit embed")
    # semantic dedup at EPS 0 removes nothing here, but annotates every sample
    checked(run_wit("filter", "--shards", shards, "--out", root / "filtered", "--near-dup", "--decontaminate", evals,
                    "--semantic-dedup", 0, "--embeddings", root / "embed", "--workers", 1, **pipes), "wit filter")
    return {"root": root, "shards": shards, "embed": root / "embed", "filtered": root / "filtered",
            "checkpoint": checkpoint, "samples": samples, "evals": evals, "eval_images": eval_images,
            "hostile": HOSTILE}


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    page_size: int = PAGE_SIZE


def start_view(world, *extra, index: Path) -> Server:
    port = free_port()
    log = world["root"] / f"view-{port}.log"
    with open(log, "w") as err:
        process = run_wit("view", world["shards"], "--port", port, "--index", index, "--page-size", PAGE_SIZE,
                          "--workers", 1, *extra, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return Server(url, process, log)
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            stop(process)
            raise AssertionError(f"wit view did not start: {log.read_text()}")
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def server(world, tmp_path_factory):
    """`wit view` over the world's SHARDS, EMBED and FILTER dirs, with text search."""
    found = start_view(world, "--embeddings", world["embed"], "--filtered", world["filtered"],
                       "--checkpoint", world["checkpoint"], index=tmp_path_factory.mktemp("index"))
    yield found
    stop(found.process)


@pytest.fixture(scope="session")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def screenshot(browser):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)

    def save(name: str) -> None:
        browser.save_screenshot(str(ARTEFACTS / f"{name}.png"))

    return save
