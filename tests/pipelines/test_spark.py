"""`wit crawl` on a real standalone Spark cluster (master and worker on 127.0.0.1) gives
the same samples as a multiprocessing crawl of the same pool."""

from __future__ import annotations

import pytest

from tests.pipelines.sparkcluster import SparkStandalone
from tests.wit.test_crawl import crawl_args, queries_dir, samples, web, wit_crawl, write_pool  # noqa: F401


@pytest.mark.slow
def test_crawl_on_a_standalone_spark_cluster_equals_multiprocessing(web, queries_dir, tmp_path):  # noqa: F811
    rows = [(web.url(f"/img/spark{i}.jpg"), f"a dog number {i}") for i in range(16)]
    rows += [(web.url("/404"), "a dog that is missing"), ("file:///etc/passwd", "a dog on disk")]
    pool = write_pool(tmp_path / "pool.parquet", rows)
    mp = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / "mp"))
    assert mp.returncode == 0, mp.stderr
    with SparkStandalone(tmp_path / "spark-cluster") as cluster:
        done = wit_crawl(*crawl_args(queries_dir, pool, tmp_path / "spark", "--distributor", "pyspark",
                                     "--spark-master", cluster.master_url), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert list((tmp_path / "spark-cluster" / "work").glob("app-*")), "no application ran on the cluster"
    on_spark, on_mp = samples(tmp_path / "spark" / "download"), samples(tmp_path / "mp" / "download")
    key = lambda s: (s["uid"], s["status"], s.get("sha256"))  # noqa: E731
    assert sorted(map(key, on_spark)) == sorted(map(key, on_mp))
    assert sum(s["status"] == "success" for s in on_spark) == 16
