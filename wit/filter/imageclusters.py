"""DataComp's image-based clustering filter: k-means over the pool's image embeddings;
the clusters kept are those that are the nearest to at least one target embedding (an
evaluation set's images, or a class list's zero-shot classifier rows: targets.py).

The clustering covers every sample with an image embedding, whatever the filters before
removed, so that the result does not depend on them: with --clip-score before it, what is
kept is the intersection of the two filters, DataComp's best baseline."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from wit.filter.removal import Annotation, Removed
from wit.filter.semdedup import annotation_values, assign, kmeans, normalised


def nearest_clusters(centroids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The clusters (ascending) that are the nearest by cosine to at least one target."""
    cluster, _ = assign(normalised(targets), centroids)
    return np.unique(cluster)


def nearest_target(centroids: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """float64[k]: each centroid's cosine with its nearest target."""
    import faiss

    index = faiss.IndexFlatIP(targets.shape[1])
    index.add(normalised(targets))
    similarity, _ = index.search(np.ascontiguousarray(centroids, np.float32), 1)
    return np.round(similarity[:, 0].astype(np.float64), 6)


class ImageClusters:
    """Removes the samples whose cluster is not one a target is nearest to (`far_cluster`:
    match the cluster, value its centroid's cosine with the nearest target), and those with
    no image embedding; annotates every clustered sample's cluster."""
    name = "image_clusters"

    @classmethod
    def from_config(cls, config, inputs) -> "ImageClusters | None":
        if not config.image_clusters:
            return None
        from wit.filter import targets

        found = np.concatenate([targets.embed(spec, inputs.model) for spec in config.keep_near])
        return cls(inputs.image_vectors, found, config.image_clusters, config.seed)

    def __init__(self, vectors: np.ndarray, targets: np.ndarray, clusters: int, seed: int = 0) -> None:
        self.vectors, self.targets, self.clusters, self.seed = vectors, targets, clusters, seed
        self.annotations: list = []

    def __call__(self, samples, alive: np.ndarray) -> Iterator[Removed]:
        embedded = ~np.isnan(self.vectors[:, 0])
        rows = np.flatnonzero(embedded)
        x = normalised(self.vectors[rows])
        centroids = kmeans(x, self.clusters, self.seed) if len(rows) else None
        cluster = assign(x, centroids)[0] if len(rows) else np.zeros(0, np.int64)
        clusters, _ = annotation_values(len(alive), rows, cluster)
        self.annotations = [Annotation("image_cluster", ("image_cluster",), clusters)]
        for row in np.flatnonzero(alive & ~embedded):
            yield Removed(int(row), "no_image_embedding")
        if centroids is None:
            return
        kept = np.zeros(len(centroids), bool)
        kept[nearest_clusters(centroids, self.targets)] = True
        closeness = nearest_target(centroids, self.targets)
        for row in np.flatnonzero(alive & embedded & ~kept[clusters.clip(0)]):
            yield Removed(int(row), "far_cluster", str(clusters[row]), float(closeness[clusters[row]]))
