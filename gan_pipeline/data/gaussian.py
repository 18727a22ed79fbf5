"""``gaussian_1d``: vectors of ``n_points`` draws from N(mean, std), as in the 1-D seed. The
generator's U(0, 1) input is drawn by the GAN itself. Generators are judged against the exact
N(mean, std): moments, the KS statistic and the Wasserstein-1 distance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow as tf

from gan_pipeline import evaluation, kinds, metrics, sampling
from gan_pipeline.config.schema import Field, Section
from gan_pipeline.data.base import DataSource, mlflow_dataset


class Gaussian1D(DataSource):
    name = "gaussian_1d"
    kind = kinds.VECTORS
    objective = "ks"
    search_objective = "ks"
    fields = {
        "mean": Field(float, 4.0, min=-1e6, max=1e6, help="mean of the real distribution"),
        "std": Field(float, 1.25, min=0, max=1e6, min_exclusive=True, help="its std"),
        "n_points": Field(int, 100, min=1, max=100_000, help="draws per example vector"),
        "num_examples": Field(int, 10_000, min=1, max=10_000_000,
                              help="example vectors per epoch"),
    }

    def __init__(self, settings: Section, seed: int = 0):
        super().__init__(settings, seed)
        self.shape = (settings.n_points,)
        self.num_examples = settings.num_examples
        self.values = self.draw((settings.num_examples, settings.n_points), seed)

    def draw(self, shape: tuple[int, ...], seed: int) -> np.ndarray:
        """Seeded float32 draws from N(mean, std): the data, the preview and the floor."""
        rng = np.random.default_rng(seed)
        return rng.normal(self.settings.mean, self.settings.std, size=shape).astype(np.float32)

    @property
    def label(self) -> str:
        return f"gaussian_1d(mean={self.settings.mean}, std={self.settings.std})"

    def examples(self) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(self.values)

    def real_samples(self, n: int, seed: int = 0) -> np.ndarray:
        return self.draw((n, self.settings.n_points), seed + 1)

    def profile(self) -> tuple[dict[str, Any], Any]:
        v = self.values
        profile = {"name": self.name, "kind": self.kind.name, "examples": int(len(v)),
                   "shape": list(self.shape), "mean": float(v.mean()), "std": float(v.std()),
                   "min": float(v.min()), "max": float(v.max())}
        return profile, mlflow_dataset(v, self.label)

    def evaluator(self, n: int, seed: int = 0, collapse_max_share: float = 0.5):
        return GaussianEvaluator(self, n, seed)


class GaussianEvaluator:
    """Judges 1-D generators against the exact N(mean, std) on ``n`` values."""

    objective = "ks"
    kind = kinds.VECTORS

    def __init__(self, source: Gaussian1D, n: int, seed: int = 0):
        self.source, self.n, self.seed = source, n, seed
        self.mean, self.std = source.settings.mean, source.settings.std

    def __call__(self, generator) -> dict:
        evaluation.check_kind(generator, self.kind)
        vectors = math.ceil(self.n / generator.output_shape[1])
        return self.evaluate(sampling.sample(generator, vectors, self.seed))

    def evaluate(self, samples: np.ndarray) -> dict:
        return metrics.gaussian_fit(np.ravel(samples)[:self.n], self.mean, self.std)

    def collapse(self, figures: dict) -> str | None:
        """A message when the generated values spread less than a tenth of the real std."""
        if figures["std"] < 0.1 * self.std:
            return (f"generated std {figures['std']:.4f} is under a tenth of the real "
                    f"{self.std}: the generator collapsed toward a point")
        return None

    def floor(self) -> dict:
        """The figures of exact draws: what a perfect generator would get."""
        return self.evaluate(self.source.draw((self.n,), self.seed + 1))

    def describe(self) -> dict:
        return {"dataset": Gaussian1D.name, "mean": self.mean, "std": self.std}

    def prepare(self) -> dict:
        return {}
