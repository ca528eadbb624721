"""`wit crawl` on a real standalone Spark cluster (master and worker on 127.0.0.1) gives
the same samples as a multiprocessing crawl of the same pool."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pipelines.sparkcluster import SparkStandalone
from tests.support.crawls import crawl_args, samples, wit_crawl, write_pool


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SparkStandalone(tmp_path_factory.mktemp("spark-cluster")) as running:
        yield running


def applications(cluster) -> int:
    return len(list((cluster.workdir / "work").glob("app-*")))


@pytest.mark.slow
def test_crawl_on_a_standalone_spark_cluster_equals_multiprocessing(web, queries_dir, cluster, tmp_path):
    rows = [(web.url(f"/img/spark{i}.jpg"), f"a dog number {i}") for i in range(16)]
    rows += [(web.url("/404"), "a dog that is missing"), ("file:///etc/passwd", "a dog on disk")]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    mp = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / "mp"))
    assert mp.returncode == 0, mp.stderr
    before = applications(cluster)
    done = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / "spark", "--distributor", "pyspark",
                                 "--spark-master", cluster.master_url), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert applications(cluster) == before + 1, "no application ran on the cluster"
    on_spark, on_mp = samples(tmp_path / "spark" / "download"), samples(tmp_path / "mp" / "download")
    key = lambda s: (s["uid"], s["status"], s.get("sha256"))  # noqa: E731
    assert sorted(map(key, on_spark)) == sorted(map(key, on_mp))
    assert sum(s["status"] == "success" for s in on_spark) == 16


@pytest.mark.slow
def test_image_grouping_on_a_standalone_spark_cluster(web, queries_dir, cluster, tmp_path):
    """The groupBy runs in the cluster's executors and writes what a grouping here writes."""
    pool = image_pool(web, tmp_path / "pool.parquet")
    args = ("--unit", "image", "--cap", "20", "--bucket-rows", "40", "--match-only", "--rows-per-partition", "100")
    here = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / "here", *args))
    assert here.returncode == 0, here.stderr
    before = applications(cluster)
    done = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / "spark", *args, "--distributor", "pyspark",
                                 "--spark-master", cluster.master_url), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert applications(cluster) == before + 1
    assert grouped_files(tmp_path / "spark") == grouped_files(tmp_path / "here")

def image_pool(web, path):
    """300 rows of 120 images, most on several rows with other texts."""
    rows = [(web.url(f"/img/g{i % 120}.jpg"), ["a dog", "a cat", "red dog", "a bird", "dog and cat"][i % 5] + f" {i % 7}")
            for i in range(300)]
    pq.write_table(pa.table({"url": [u for u, _ in rows], "text": [t for _, t in rows]}), path, row_group_size=50)
    return path


def grouped_files(crawl):
    """Every file the grouping and selection wrote, by name: candidates/, selected/, the
    bucket counts and entry_counts.parquet."""
    names = [*crawl.glob("candidates/*.parquet"), *crawl.glob("selected/*.parquet"),
             *crawl.glob(".wit/counts/images-*.parquet"), crawl / "entry_counts.parquet"]
    return {str(p.relative_to(crawl)): p.read_bytes() for p in names}


@pytest.mark.slow
def test_image_grouping_on_spark_writes_the_files_of_a_grouping_here(web, queries_dir, tmp_path):
    """--unit image with --distributor pyspark groups by bucket as a Spark groupBy (local
    mode): the same candidates, counts and selection, byte for byte, over 8 buckets."""
    pool = image_pool(web, tmp_path / "pool.parquet")
    args = ("--unit", "image", "--cap", "20", "--oversample", "1", "--bucket-rows", "40", "--match-only",
            "--rows-per-partition", "100")
    here = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / "here", *args))
    assert here.returncode == 0, here.stderr
    spark = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / "spark", *args, "--distributor", "pyspark"),
                      timeout=600)
    assert spark.returncode == 0, spark.stderr[-3000:]
    assert "grouping 8 bucket(s) on Spark" in spark.stderr
    assert not (tmp_path / "spark" / ".wit" / "scratch" / "buckets").exists()   # Spark did the shuffle
    files = grouped_files(tmp_path / "spark")
    assert len([n for n in files if n.startswith("candidates/")]) == 8
    assert files == grouped_files(tmp_path / "here")
    counts = lambda name: json.loads((tmp_path / name / "crawl.json").read_text())["counts"]  # noqa: E731
    assert counts("spark") == counts("here") and counts("spark")["images"] == 120
