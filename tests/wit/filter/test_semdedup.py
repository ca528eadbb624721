"""Semantic deduplication (SemDeDup) and DataComp's image-based clustering on planted
vectors: the blocked search equals the pair-by-pair rule, each planted group keeps the
member furthest from its centroid, and the clusters nearest the targets are the ones kept."""

from __future__ import annotations

import numpy as np
import pytest

from wit.filter import semdedup
from wit.filter.imageclusters import ImageClusters, nearest_clusters
from wit.filter.semdedup import SemanticDedup, assign, brute_force, duplicates, kmeans, normalised


def planted(seed: int, groups: int = 120, dim: int = 48, spread: float = 0.015,
            topics: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in `groups` tight groups of 1 to 5 near-copies, the groups themselves
    drawn around `topics` directions (so that k-means has clusters to find), shuffled;
    with each vector's group."""
    rng = np.random.default_rng(seed)
    centres = normalised(rng.normal(size=(topics, dim)))
    vectors, group = [], []
    for g in range(groups):
        base = normalised(centres[g % topics] + 0.6 * rng.normal(size=(1, dim)) / np.sqrt(dim) * 4)[0]
        for _ in range(1 + g % 5):
            vectors.append(base + spread * rng.normal(size=dim) / np.sqrt(dim) * 4)
            group.append(g)
    order = rng.permutation(len(vectors))
    return normalised(np.array(vectors)[order]), np.array(group)[order]


@pytest.mark.parametrize("k, block", [(1, 1024), (6, 7), (25, 3)])
def test_blocked_search_equals_brute_force_and_keeps_one_per_group(monkeypatch, k, block):
    monkeypatch.setattr(semdedup, "BLOCK", block)   # blocks much smaller than the clusters
    x, group = planted(seed=k)
    cluster, distance = assign(x, kmeans(x, k, seed=0))
    found = {row: (match, cosine) for row, match, cosine in duplicates(x, cluster, distance, eps=0.05)}
    assert {row: match for row, (match, _) in found.items()} == brute_force(x, cluster, distance, 0.05)
    assert all(cosine > 0.95 and np.isclose(cosine, x[row] @ x[match], atol=1e-5)
               for row, (match, cosine) in found.items())
    kept = np.setdiff1d(np.arange(len(x)), list(found))
    assert all(group[row] == group[match] for row, (match, _) in found.items())   # only copies go
    if k == 1:   # one cluster: exactly one member of each group is kept, the furthest from the centroid
        assert sorted(group[kept]) == sorted(set(group))
        for g in set(group):
            members = np.flatnonzero(group == g)
            assert members[np.argmax(distance[members])] in kept


def test_a_larger_eps_removes_more_and_a_tiny_one_only_exact_copies():
    x, group = planted(seed=9)
    x = np.concatenate([x, x[:5]])   # five exact copies
    cluster, distance = assign(x, kmeans(x, 4, seed=1))
    removed = {eps: {r for r, _, _ in duplicates(x, cluster, distance, eps)} for eps in (1e-5, 0.05, 0.8)}
    assert removed[1e-5] <= removed[0.05] <= removed[0.8] and len(removed[0.05]) < len(removed[0.8])
    assert len(removed[1e-5]) == 5 and all(any(np.array_equal(x[r], x[o]) for o in range(len(x)) if o != r)
                                           for r in removed[1e-5])
    # EPS 0.8 removes across the planted groups too (cosine above 0.2): more than the copies
    assert len(removed[0.8]) > len(x) - len(set(group))


def test_the_filter_keeps_samples_without_an_embedding_and_annotates_the_others():
    x, group = planted(seed=4, groups=30)
    vectors = np.concatenate([x, np.full((3, x.shape[1]), np.nan, np.float32)])
    import pyarrow as pa
    samples = pa.table({"uid": [f"u{i:03d}" for i in range(len(vectors))]})
    alive = np.ones(len(vectors), bool)
    alive[0] = False   # removed by a filter before: not clustered, not removed again
    dedup = SemanticDedup(vectors, eps=0.05, clusters=3, seed=0)
    removed = list(dedup(samples, alive))
    rows = {r.row for r in removed}
    assert 0 not in rows and not rows & {len(x), len(x) + 1, len(x) + 2}
    assert all(r.reason == "duplicate" and group[int(r.match[1:])] == group[r.row] for r in removed)
    cluster, distance = (a.values for a in dedup.annotations)
    assert cluster[0] == -1 and np.isnan(distance[0]) and (cluster[-3:] == -1).all()
    assert set(cluster[1:len(x)]) == {0, 1, 2} and (distance[1:len(x)] >= 0).all()


def test_image_clusters_keep_the_clusters_nearest_the_targets():
    """Five topics over-clustered into 20 clusters (as DataComp's 100,000 clusters are finer
    than any class); 60 targets drawn from topics 1 and 3 (an evaluation set's images) vote."""
    rng = np.random.default_rng(5)
    dim, topics = 32, 5
    centres = normalised(rng.normal(size=(topics, dim)))
    topic = np.repeat(np.arange(topics), 80)
    vectors = normalised(centres[topic] + 0.08 * rng.normal(size=(len(topic), dim)))
    targets = normalised(centres[np.repeat([1, 3], 30)] + 0.08 * rng.normal(size=(60, dim)))
    centroids = kmeans(vectors, 20, seed=0)
    cluster, _ = assign(vectors, centroids)
    near = nearest_clusters(centroids, targets)
    assert set(topic[np.isin(cluster, near)]) == {1, 3}   # no cluster of another topic is voted for
    import pyarrow as pa
    samples = pa.table({"uid": [f"u{i:03d}" for i in range(len(topic))]})
    alive = np.ones(len(topic), bool)
    alive[topic == 0] = False   # removed before: clustered all the same, not removed again
    chosen = ImageClusters(vectors, targets, clusters=20, seed=0)
    removed = list(chosen(samples, alive))
    assert {r.row for r in removed} == set(np.flatnonzero(~np.isin(cluster, near) & alive))
    kept = np.setdiff1d(np.flatnonzero(alive), [r.row for r in removed])
    assert set(topic[kept]) == {1, 3} and len(kept) >= 0.9 * 160   # nearly all of the two topics
    assert {r.reason for r in removed} == {"far_cluster"}
    assert all(r.match == str(cluster[r.row]) and -1 <= r.value < 0.99 for r in removed)
    (annotation,) = chosen.annotations
    assert annotation.column == "image_cluster" and (annotation.values == cluster).all()
