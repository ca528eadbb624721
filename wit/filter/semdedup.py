"""Semantic deduplication (SemDeDup, Abbas et al. 2023, as NeMo Curator ships it): k-means
over the image embeddings, then within each cluster, of two samples whose cosine is above
1 - EPS, one is removed.

Which one is kept: the one further from its cluster's centroid (SemDeDup's default,
`keep_hard`: a sample far from the centroid is the less prototypical one, and removing
the prototypical copies keeps the cluster's spread). Precisely, a cluster's members are
ordered by their cosine distance to the centroid, furthest first (ties by row), and a
member is removed when its cosine with any member before it is above 1 - EPS: the rule of
SemDeDup's reference code, which compares with every earlier member, removed or not. The
match recorded is the earlier member it is most similar to.

Memory is flat in the number of clusters and in the pool: the clusters are done one after
another, and within a cluster the cosines are computed a block of rows at a time against
the members before them (`BLOCK` x cluster size floats at most)."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from wit.filter.removal import Annotation, Removed

BLOCK = 1024          # rows of a cluster compared at a time
ASSIGN_BLOCK = 65536  # rows assigned to their nearest centroid at a time
PER_CLUSTER = 10_000  # samples per cluster when K is not given (SemDeDup: ~9,000 on LAION-440M)
ITERATIONS = 20


def normalised(vectors: np.ndarray) -> np.ndarray:
    """float32 rows of unit length (a zero row stays zero)."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, iterations: int = ITERATIONS) -> np.ndarray:
    """float32[k, dim] unit-length centroids of spherical k-means over unit-length
    `vectors` (faiss; at most 256 training points per centroid, drawn with `seed`)."""
    import faiss

    k = max(1, min(k, len(vectors)))
    model = faiss.Kmeans(vectors.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False)
    model.train(np.ascontiguousarray(vectors, np.float32))
    return normalised(model.centroids)


def assign(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid by cosine (int64) and its cosine distance to it
    (float32, 1 - cosine), computed a block of rows at a time."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    cluster = np.empty(len(vectors), np.int64)
    distance = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), ASSIGN_BLOCK):
        similarity, nearest = index.search(np.ascontiguousarray(vectors[start:start + ASSIGN_BLOCK]), 1)
        cluster[start:start + len(nearest)] = nearest[:, 0]
        distance[start:start + len(nearest)] = 1 - similarity[:, 0]
    return cluster, distance


def cluster_order(cluster: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Rows by cluster, then furthest from the centroid first, then by row."""
    rows = np.arange(len(cluster))
    return np.lexsort((rows, -distance.astype(np.float64), cluster))


def duplicates(vectors: np.ndarray, cluster: np.ndarray, distance: np.ndarray,
               eps: float) -> Iterator[tuple[int, int, float]]:
    """(row, the earlier row it duplicates, their cosine) for every row SemDeDup removes
    (see the module's doc); `vectors` unit-length."""
    threshold = 1 - eps
    order = cluster_order(cluster, distance)
    bounds = np.flatnonzero(np.diff(cluster[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        x = vectors[members]
        for start in range(1, len(members), BLOCK):
            stop = min(start + BLOCK, len(members))
            similarity = x[start:stop] @ x[:stop].T   # each row of the block against every member up to it
            later = np.arange(start, stop)[:, None] <= np.arange(stop)[None, :]
            similarity[later] = -np.inf               # only the members before it count
            earlier = similarity.argmax(axis=1)
            best = similarity[np.arange(stop - start), earlier]
            for i in np.flatnonzero(best > threshold):
                yield int(members[start + i]), int(members[earlier[i]]), float(best[i])


def brute_force(vectors: np.ndarray, cluster: np.ndarray, distance: np.ndarray, eps: float) -> dict[int, int]:
    """The rule written out pair by pair (the reference the blocked version must equal):
    removed row -> the earlier row it duplicates."""
    removed = {}
    order = cluster_order(cluster, distance)
    for position, row in enumerate(order):
        best, match = -np.inf, None
        for earlier in order[:position]:
            if cluster[earlier] != cluster[row]:
                continue
            cosine = float(np.dot(vectors[row].astype(np.float64), vectors[earlier].astype(np.float64)))
            if cosine > best:
                best, match = cosine, int(earlier)
        if match is not None and best > 1 - eps:
            removed[int(row)] = match
    return removed


def annotation_values(n: int, rows: np.ndarray, cluster: np.ndarray,
                      distance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per input sample: its cluster (-1: none) and its distance to the centroid (NaN: none)."""
    clusters = np.full(n, -1, np.int64)
    clusters[rows] = cluster
    distances = np.full(n, np.nan)
    if distance is not None:
        distances[rows] = distance
    return clusters, distances


class SemanticDedup:
    """SemDeDup over the kept samples' image embeddings (see the module's doc); a sample
    with no image embedding is kept. Annotates each clustered sample's cluster and its
    distance to the centroid."""
    name = "semantic_dedup"

    @classmethod
    def from_config(cls, config, inputs) -> "SemanticDedup | None":
        if config.semantic_dedup is None:
            return None
        return cls(inputs.image_vectors, config.semantic_dedup, config.semdedup_clusters, config.seed)

    def __init__(self, vectors: np.ndarray, eps: float, clusters: int = 0, seed: int = 0) -> None:
        self.vectors, self.eps, self.clusters, self.seed = vectors, eps, clusters, seed
        self.annotations: list = []

    def __call__(self, samples, alive: np.ndarray) -> Iterator[Removed]:
        rows = np.flatnonzero(alive & ~np.isnan(self.vectors[:, 0]))
        x = normalised(self.vectors[rows])
        k = self.clusters or max(1, round(len(rows) / PER_CLUSTER))
        cluster, distance = assign(x, kmeans(x, k, self.seed)) if len(rows) else (np.zeros(0, np.int64),
                                                                                   np.zeros(0, np.float32))
        distance = np.round(distance.astype(np.float64), 6)   # what is written decides the order
        clusters, distances = annotation_values(len(alive), rows, cluster, distance)
        self.annotations = [Annotation("semdedup_cluster", ("semdedup", "cluster"), clusters),
                            Annotation("semdedup_distance", ("semdedup", "distance"), distances)]
        uids = samples["uid"]
        for row, earlier, cosine in duplicates(x, cluster, distance, self.eps):
            yield Removed(int(rows[row]), "duplicate", uids[int(rows[earlier])].as_py(), round(cosine, 6))
