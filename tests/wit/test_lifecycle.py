"""Two runs on one output, and SIGINT / SIGTERM to a running stage, with real processes:
the second run is refused at once naming the first's pid and the first is not disturbed;
a lock left by a killed run is taken over; a signal ends the command within 10 s with
130 or 143 and one line, no child process survives, and the rerun equals a straight run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cli import REPO, run_module
from tests.support.checkpoints import write_checkpoint
from tests.support.crawls import pool, samples, write_download, write_pool
from tests.support.images import drawing
from tests.support.outputs import files, markers
from tests.support.shards import shards_dir
from tests.support.witcli import assert_one_line_error, run_wit
from wit.formats.embeddings import read_embeddings
from wit.formats.locks import OutputLock

SECONDS = 10   # a signalled command ends within this


def marked_processes(mark: str) -> list[psutil.Process]:
    """Every live process started with WIT_TEST_MARK=mark in its environment (a command and
    all it started: spawn, forkserver and pool workers inherit it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("WIT_TEST_MARK") == mark and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            pass
    return found


def start(*args, mark: str = "", slow: tuple = ()) -> subprocess.Popen:
    """`wit ARGS` started in a session of its own; with `slow` (MODULE:FUNCTION, SECONDS),
    through tests.wit.slowed."""
    popen = dict(start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                 env={"WIT_TEST_MARK": mark} if mark else None)
    if slow:
        return run_module("tests.wit.slowed", *slow, *args, **popen)
    return run_wit(*args, **popen)


def wait_until(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        assert proc.poll() is None, f"the command ended before {what}: {proc.stderr.read().decode()[-2000:]}"
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s")


def lock_of(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def held_by(lock: Path, pid: int) -> bool:
    try:
        return json.loads(lock.read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False


def collide(args: list, out: Path, command: str, slow: tuple = ()) -> subprocess.Popen:
    """Start `wit ARGS --out OUT`; when it holds its output's lock, freeze it (SIGSTOP, so it
    is surely still running) and run the same command: refused at once, naming the first's
    pid. The first is then let go; returned, to be waited for."""
    first = start(*args, "--out", out, slow=slow)
    wait_until(lambda: held_by(lock_of(out), first.pid), first, "the lock was taken")
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        second = run_wit(*args, "--out", out, timeout=120)
        refused_in = time.monotonic() - started
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert_one_line_error(second, command, str(out), f"another run is writing it (pid {first.pid} on ")
    assert refused_in < 30   # the time to start Python and import the stage, not to wait for the first
    return first


def interrupt(args: list, sig: int, to_group: bool, ready, command: str, slow: tuple = (),
              children: bool = True) -> str:
    """Start `wit ARGS`, and when `ready()`, send `sig` to its leader or to its whole process
    group: it must end within SECONDS with 128 + sig and one line, leaving no process."""
    mark = uuid.uuid4().hex
    proc = start(*args, mark=mark, slow=slow)
    wait_until(ready, proc, "the stage was under way")
    if children:
        assert len(marked_processes(mark)) > 1   # the leader and what it started
    sent = time.monotonic()
    (os.killpg if to_group else os.kill)(proc.pid, sig)
    try:
        _, err = proc.communicate(timeout=SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{command}: still running {SECONDS} s after {signal.Signals(sig).name}")
    assert time.monotonic() - sent < SECONDS
    err = err.decode()
    assert proc.returncode == 128 + sig, err[-3000:]
    name = signal.Signals(sig).name
    assert err.rstrip().splitlines()[-1] == f"wit {command}: interrupted by {name}; run the same command again to " \
                                             "resume", err[-3000:]
    # no traceback from the toolkit's code or its pools (img2dataset's logger process may print its own)
    assert "/wit/" not in err and "ForkServerProcess" not in err and "SpawnPoolWorker" not in err, err[-3000:]
    deadline = time.time() + 2
    while marked_processes(mark) and time.time() < deadline:
        time.sleep(0.05)
    assert marked_processes(mark) == [], "processes outlived the command"
    return err


# ---- the lock itself ---------------------------------------------------------------


HOLD = """
import sys, time
from wit.formats.embeddings import read_embeddings
from wit.formats.locks import OutputLock
OutputLock(sys.argv[1], "out").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_is_refused_while_held_and_taken_over_from_a_dead_holder(tmp_path):
    lock = tmp_path / ".out.lock"
    holder = subprocess.Popen([os.sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(Exception, match=f"another run is writing it \\(pid {holder.pid} on "):
            OutputLock(str(lock), "out").acquire()
    finally:
        holder.kill()   # kill -9: no clean-up of any kind
        holder.wait()
    assert lock.exists()   # left behind by the dead holder, and free
    with OutputLock(str(lock), "out"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


# ---- two runs on one output --------------------------------------------------------


@pytest.mark.slow
def test_two_crawls_on_one_output(web, queries_dir, tmp_path):
    rows = [(web.url(f"/img/c{i}.jpg?delay=0.1"), f"dog {i}") for i in range(20)]
    pool_file = write_pool(tmp_path / "pool.parquet", rows)
    args = ["crawl", "--queries", queries_dir, "--candidates", pool_file, "--allow-private-hosts", "--processes",
            "1", "--threads", "2", "--samples-per-shard", "5", "--timeout", "5"]
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    out = tmp_path / "crawl"
    first = collide(args, out, "crawl")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()[-3000:]
    outcome = lambda d: sorted((s["uid"], s["status"]) for s in samples(d / "download"))  # noqa: E731
    assert outcome(out) == outcome(tmp_path / "straight") and len(outcome(out)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crawl", "pool.parquet", "queries", "straight"]


@pytest.mark.slow
def test_two_shard_runs_on_one_output_and_a_killed_holder(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    args = ["shard", "--crawl", crawl, "--cap", "1000", "--samples-per-shard", "4", "--workers", "2"]
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    out = tmp_path / "shards"
    first = collide(args, out, "shard")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()[-3000:]
    strip = lambda d: {k: v for k, v in files(d).items() if k != "manifest.json"}  # noqa: E731
    assert strip(out) == strip(tmp_path / "straight")

    # a run killed with -9 leaves its lock file: the next run takes it over and resumes
    again = tmp_path / "again"
    proc = start(*args, "--out", again)
    units = tmp_path / ".again.partial" / ".wit" / "units"
    wait_until(lambda: len(list(units.glob("*.json"))) >= 3, proc, "units were written")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock_of(again).exists()
    resumed = run_wit(*args, "--out", again)
    assert resumed.returncode == 0, resumed.stderr
    assert strip(again) == strip(tmp_path / "straight") and not lock_of(again).exists()


@pytest.mark.slow
def test_two_filter_runs_on_one_output(tmp_path):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    assert run_wit("shard", "--crawl", crawl, "--out", tmp_path / "in", "--cap", "1000").returncode == 0
    args = ["filter", "--shards", tmp_path / "in", "--near-dup", "--workers", "2"]
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    first = collide(args, tmp_path / "out", "filter")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()[-3000:]
    assert files(tmp_path / "out").keys() == files(tmp_path / "straight").keys()
    assert pq.read_table(tmp_path / "out" / "removed.parquet") == pq.read_table(tmp_path / "straight" /
                                                                                "removed.parquet")


@pytest.mark.slow
def test_two_query_builds_on_one_output(enwiki_excerpt, wordnet_dir, tmp_path):
    args = ["build-queries", "--wiki-dump", enwiki_excerpt, "--wordnet", wordnet_dir, "--min-count", "5",
            "--workers", "2", "--chunk-mb", "0.5"]
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    first = collide(args, tmp_path / "queries", "build-queries")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()[-3000:]
    for name in ("queries.parquet", "metadata.json"):
        assert (tmp_path / "queries" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


# ---- signals -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signalled_crawl_ends_non_zero_leaves_no_process_and_resumes(web, queries_dir, tmp_path,
                                                                         sig, to_group):
    rows = [(web.url(f"/img/s{i}.jpg?delay=0.2"), f"dog {i}") for i in range(40)]
    pool_file = write_pool(tmp_path / "pool.parquet", rows)
    args = ["crawl", "--queries", queries_dir, "--candidates", pool_file, "--allow-private-hosts", "--processes",
            "2", "--threads", "2", "--samples-per-shard", "5", "--timeout", "5"]
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    out = tmp_path / "crawl"
    building = tmp_path / ".crawl.partial" / "download"
    interrupt([*args, "--out", out], sig, to_group, lambda: len(list(building.glob("*_stats.json"))) >= 1, "crawl")
    assert not out.exists()
    resumed = run_wit(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    table = lambda d: sorted(zip(*pa.concat_tables(  # noqa: E731
        [pq.read_table(p, columns=["uid", "status"]) for p in (d / "download").glob("*.parquet")]).to_pydict().values()))
    assert table(out) == table(tmp_path / "straight") and len(table(out)) == 40


@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGTERM, True),
                                           (signal.SIGINT, False)])
@pytest.mark.slow
def test_a_signalled_shard_run_ends_non_zero_leaves_no_process_and_resumes(tmp_path, sig, to_group):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    args = ["shard", "--crawl", crawl, "--cap", "1000", "--samples-per-shard", "1", "--workers", "2"]
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    out = tmp_path / "shards"
    units = tmp_path / ".shards.partial" / ".wit" / "units"
    interrupt([*args, "--out", out], sig, to_group, lambda: len(list(units.glob("*.json"))) >= 20, "shard")
    resumed = run_wit(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    strip = lambda d: {k: v for k, v in files(d).items() if k != "manifest.json"}  # noqa: E731
    assert strip(out) == strip(tmp_path / "straight")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crawl", "shards", "straight"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signalled_query_build_ends_non_zero_leaves_no_process_and_resumes(enwiki_excerpt, wordnet_dir,
                                                                             tmp_path, sig):
    args = ["build-queries", "--wiki-dump", enwiki_excerpt, "--wordnet", wordnet_dir, "--min-count", "5",
            "--workers", "2", "--chunk-mb", "0.1"]
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    units = tmp_path / ".queries.partial" / ".wit" / "units"
    interrupt([*args, "--out", tmp_path / "queries"], sig, True, lambda: len(list(units.glob("*.json"))) >= 2,
              "build-queries")
    resumed = run_wit(*args, "--out", tmp_path / "queries")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("queries.parquet", "metadata.json"):
        assert (tmp_path / "queries" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


# ---- wit embed, wit filter and wit merge-crawl -------------------------------------


@pytest.fixture(scope="module")
def embedding(tmp_path_factory):
    """`wit embed` arguments (one image a batch, a loader worker) and a straight run's output."""
    root = tmp_path_factory.mktemp("embed")
    shards = shards_dir(root / "shards", [40] * 6, image=drawing)
    args = ["embed", "--checkpoint", write_checkpoint(root / "ckpt.pt"), "--shards", shards, "--batch-size", "1",
            "--workers", "1"]
    assert run_wit(*args, "--out", root / "straight").returncode == 0
    return args, read_embeddings(str(root / "straight"))


@pytest.mark.slow
def test_two_embed_runs_on_one_output(embedding, tmp_path):
    args, straight = embedding
    first = collide(args, tmp_path / "E", "embed")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()[-3000:]
    assert read_embeddings(str(tmp_path / "E")).equals(straight)


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signalled_embed_run_ends_non_zero_leaves_no_process_and_resumes(embedding, tmp_path, sig, to_group):
    args, straight = embedding
    out, units = tmp_path / "E", tmp_path / ".E.partial" / ".wit" / "units"
    interrupt([*args, "--out", out], sig, to_group, lambda: len(markers(units)) >= 1, "embed")
    assert not out.exists() and 1 <= len(markers(units)) < 6
    resumed = run_wit(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert read_embeddings(str(out)).equals(straight)


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group", [(signal.SIGTERM, True), (signal.SIGINT, False)])
def test_a_signalled_filter_run_ends_non_zero_leaves_no_process_and_resumes(tmp_path, sig, to_group):
    shards, _ = pool()
    crawl = write_download(tmp_path / "crawl", shards)
    made = run_wit("shard", "--crawl", crawl, "--out", tmp_path / "in", "--cap", "1000", "--samples-per-shard", "2")
    assert made.returncode == 0, made.stderr
    args = ["filter", "--shards", tmp_path / "in", "--near-dup", "--workers", "2"]
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    out, units = tmp_path / "out", tmp_path / ".out.partial" / ".wit" / "units"
    interrupt([*args, "--out", out], sig, to_group, lambda: len(list(units.glob("*.json"))) >= 3, "filter")
    assert not out.exists()
    resumed = run_wit(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    strip = lambda d: {k: v for k, v in files(d).items() if k not in ("manifest.json", "filter.json")}  # noqa: E731
    assert strip(out) == strip(tmp_path / "straight") and len(strip(out)) > 100
    assert pq.read_table(out / "removed.parquet") == pq.read_table(tmp_path / "straight" / "removed.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crawl", "in", "out", "straight"]


MERGE_SLOWLY = ("wit.crawl.merge:_link", "0.25")   # a merge takes milliseconds: 0.25 s before each link


def merge_parts(queries: Path, tmp_path: Path) -> list:
    """Two `wit crawl --part I/2 --match-only` parts of a four-file pool; the merge's arguments."""
    for f in range(4):
        write_pool(tmp_path / f"pool-{f}.parquet", [(f"http://127.0.0.1:9/p{f}-{i}.jpg", f"a dog {f} {i}")
                                                     for i in range(5 + f)])
    for i in range(2):
        done = run_wit("crawl", "--queries", queries, "--candidates", f"{tmp_path}/pool-*.parquet", "--out",
                       tmp_path / "parts" / f"part-{i}", "--part", f"{i}/2", "--match-only")
        assert done.returncode == 0, done.stderr[-3000:]
    return ["merge-crawl", "--parts", f"{tmp_path}/parts/part-*"]


def merged(directory: Path) -> tuple:
    """A merged dir's links (name, target), entry counts and summary (less its time)."""
    links = sorted((str(p.relative_to(directory)), os.readlink(p)) for p in directory.rglob("*") if p.is_symlink())
    summary = json.loads((directory / "crawl.json").read_text())
    summary.pop("seconds")
    return links, (directory / "entry_counts.parquet").read_bytes(), summary


@pytest.mark.slow
def test_two_merges_on_one_output(queries_dir, tmp_path):
    args = merge_parts(queries_dir, tmp_path)
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    first = collide(args, tmp_path / "merged", "merge-crawl", slow=MERGE_SLOWLY)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err.decode()[-3000:]
    assert merged(tmp_path / "merged") == merged(tmp_path / "straight") and len(merged(tmp_path / "merged")[0]) > 4


@pytest.mark.slow
@pytest.mark.parametrize("sig, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signalled_merge_ends_non_zero_and_resumes(queries_dir, tmp_path, sig, to_group):
    args = merge_parts(queries_dir, tmp_path)
    assert run_wit(*args, "--out", tmp_path / "straight").returncode == 0
    out, building = tmp_path / "merged", tmp_path / ".merged.partial" / "candidates"
    interrupt([*args, "--out", out], sig, to_group, lambda: building.is_dir() and any(building.iterdir()),
              "merge-crawl", slow=MERGE_SLOWLY, children=False)
    assert not out.exists()
    resumed = run_wit(*args, "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert merged(out) == merged(tmp_path / "straight")
