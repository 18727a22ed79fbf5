"""Labels for data that has none: k-means clusters of the images (self-conditioning).

A family that trains on labels (``labelled_dcgan``, ``labelled_mlp``) learns much faster and
covers every mode by its share when D judges each image against its class (docs/quality.md).
A user's own folder usually has no labels, so ``Clustered`` gives it some: the images,
downsampled to at most ``MAX_DIMS`` values, are projected on their first ``PCA_DIMS`` principal
components and grouped by k-means into ``data.clusters`` clusters, whose indices stand in for
the labels in training (Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs",
who cluster D's features; pixels' principal components need no trained network and are fixed
for the whole run). The saved generator draws its cluster from its noise, by the clusters'
shares, so it samples without labels as any unconditional generator does.

Everything else (the samples, their scaling, pictures, the profile, the evaluation and its
classifier) is the wrapped source's: clusters change what training is told, not what the data is
or how generators are judged.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from gan_pipeline.data.base import DataSource

MAX_DIMS = 1024  # images are area-downsampled to at most this many values before the PCA
PCA_DIMS = 50
KMEANS_ITERATIONS = 30


def pixel_features(images: np.ndarray, dims: int = PCA_DIMS, seed: int = 0) -> np.ndarray:
    """uint8 images (N, H, W, C) as (N, dims) float32: downsampled to at most ``MAX_DIMS``
    values, scaled to [0, 1], centred and projected on their first ``dims`` principal
    components (of a seeded sample of at most 20,000 images)."""
    n, height, width, channels = images.shape
    factor = max(1, math.ceil(math.sqrt(height * width * channels / MAX_DIMS)))
    x = images.astype(np.float32) / 255.0
    if factor > 1:  # average factor x factor blocks (cropping what does not fit)
        h, w = height // factor, width // factor
        x = x[:, :h * factor, :w * factor].reshape(n, h, factor, w, factor, channels)
        x = x.mean(axis=(2, 4))
    x = x.reshape(n, -1)
    mean = x.mean(axis=0)
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(n, min(n, 20_000), replace=False)] - mean
    cov = (sample.T.astype(np.float64) @ sample) / max(1, len(sample) - 1)
    _, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
    basis = vectors[:, ::-1][:, :min(dims, x.shape[1])].astype(np.float32)
    return (x - mean) @ basis


def kmeans(x: np.ndarray, k: int, seed: int = 0,
           iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Cluster indices (N,) int32 of the rows of ``x`` by k-means (k-means++ seeding, Lloyd's
    iterations), numbered by size: cluster 0 is the largest. The same seed gives the same
    clusters."""
    n = len(x)
    if not 2 <= k <= n:
        raise ValueError(f"k-means needs 2 <= k <= {n} clusters, got {k}")
    rng = np.random.default_rng(seed)
    x = x.astype(np.float32)
    norms = (x * x).sum(axis=1)
    centres = np.empty((k, x.shape[1]), np.float32)
    centres[0] = x[rng.integers(n)]
    nearest = ((x - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):  # k-means++: far points are likelier seeds
        total = float(nearest.sum())
        pick = rng.choice(n, p=nearest / total) if total > 0 else rng.integers(n)
        centres[i] = x[pick]
        nearest = np.minimum(nearest, ((x - centres[i]) ** 2).sum(axis=1))
    labels = np.full(n, -1, np.int64)
    for _ in range(iterations):
        distances = norms[:, None] - 2.0 * (x @ centres.T) + (centres * centres).sum(axis=1)
        new = distances.argmin(axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        _fill_empty(labels, distances[np.arange(n), labels], k)
        order = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[order], np.arange(k))
        counts = np.bincount(labels, minlength=k)
        centres = np.add.reduceat(x[order], starts, axis=0) / counts[:, None]
    order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    return rank[labels].astype(np.int32)


def _fill_empty(labels: np.ndarray, fit: np.ndarray, k: int) -> None:
    """Give each empty cluster the worst-fitting point of a cluster that can spare one."""
    fit = fit.copy()
    counts = np.bincount(labels, minlength=k)
    for c in np.flatnonzero(counts == 0):
        for point in np.argsort(-fit, kind="stable"):
            if counts[labels[point]] > 1:
                counts[labels[point]] -= 1
                labels[point], counts[c], fit[point] = c, 1, -np.inf
                break


class Clustered(DataSource):
    """``source`` with k-means clusters of its images as its labels (``class_names``
    ``cluster 0`` ... ``cluster k-1``, by size). The clusters are computed on first use, once."""

    def __init__(self, source: DataSource, clusters: int):
        super().__init__(source.settings, source.seed)
        self.source, self.k = source, int(clusters)
        self.kind, self.shape = source.kind, source.shape
        self.num_examples = source.num_examples
        self.objective, self.search_objective = source.objective, source.search_objective
        self.class_names = [f"cluster {i}" for i in range(self.k)]
        self._labels: np.ndarray | None = None

    def __getattr__(self, name: str):
        # what an image source has beyond DataSource (its classifier, reference images, ...)
        return getattr(self.source, name)

    @property
    def label(self) -> str:
        return self.source.label

    def cluster_labels(self) -> np.ndarray:
        """Each training image's cluster, in the order of ``examples()``."""
        if self._labels is None:
            images = np.concatenate([b.numpy() for b in self.source.examples().batch(10_000)])
            self._labels = kmeans(pixel_features(images, seed=self.seed), self.k,
                                  seed=self.seed)
        return self._labels

    def examples(self) -> tf.data.Dataset:
        return self.source.examples()

    def labelled_examples(self) -> tf.data.Dataset:
        labels = tf.data.Dataset.from_tensor_slices(self.cluster_labels())
        return tf.data.Dataset.zip(self.source.examples(), labels)

    def class_shares(self) -> list[float]:
        counts = np.bincount(self.cluster_labels(), minlength=self.k)
        return [float(c) for c in counts / counts.sum()]

    def to_model(self, samples: tf.Tensor) -> tf.Tensor:
        return self.source.to_model(samples)

    def real_samples(self, n: int, seed: int = 0) -> np.ndarray:
        return self.source.real_samples(n, seed)

    def profile(self) -> tuple[dict[str, Any], Any]:
        profile, dataset = self.source.profile()
        shares = self.class_shares()
        profile["training_labels"] = {"from": f"{self.k} k-means clusters of the images",
                                      "smallest_share": min(shares),
                                      "largest_share": max(shares)}
        return profile, dataset

    def evaluator(self, n: int, seed: int = 0, collapse_max_share: float = 0.5):
        return self.source.evaluator(n, seed, collapse_max_share)

    def fingerprint(self) -> str:
        return self.source.fingerprint()

    def spec(self) -> dict[str, Any]:
        return self.source.spec()


__all__ = ["Clustered", "kmeans", "pixel_features"]
