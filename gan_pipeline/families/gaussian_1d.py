"""The 1-D GAN of the "GANs in 50 lines" seed: uniform noise in, N(4, 1.25) out.

G is the same small MLP for every point (50 relu, 50 sigmoid, 1 linear) on U(0, 1) noise. The
families differ only in what D sees of each vector of draws before its 50-50-1 MLP:

- ``gaussian_1d``: each value beside its squared deviation from the vector's mean (the seed's
  "data and variances"): it can tell a collapsed G from real data, but in effect it matches
  moments only (KS ~0.09).
- ``gaussian_1d_sorted``: the values in ascending order, the vector's empirical quantiles; a
  linear unit on them can weigh any quantile, so the whole shape of the distribution counts.
(``gaussian_1d_pure``, the seed's comparison without a statistic, is its own module.)
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from gan_pipeline import kinds
from gan_pipeline.families import Family
from gan_pipeline.families.common import OUT


@keras.saving.register_keras_serializable(package="gan_pipeline")
class DeviationFeatures(layers.Layer):
    """Each value beside its squared deviation from the mean of its vector: ``(n,) -> (2n,)``."""

    def call(self, x):
        mean = ops.mean(x, axis=-1, keepdims=True)
        return ops.concatenate([x, ops.square(x - mean)], axis=-1)

    def compute_output_shape(self, input_shape):
        n = input_shape[-1]
        return (*input_shape[:-1], None if n is None else 2 * n)


@keras.saving.register_keras_serializable(package="gan_pipeline")
class SortedValues(layers.Layer):
    """The values of each vector in ascending order: ``(n,) -> (n,)``, its order statistics.
    Sorting is differentiable (a permutation of the inputs)."""

    def call(self, x):
        return ops.sort(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


def order_keeping(fan_in: int) -> dict[str, Any]:
    """Dense settings that keep a layer increasing in each input: weights >= 0 (drawn so, and
    clipped at 0 after every update), so that with increasing activations the whole network
    maps larger noise to larger values."""
    return {"kernel_initializer": keras.initializers.RandomUniform(0.0, 2.0 / fan_in ** 0.5),
            "kernel_constraint": keras.constraints.NonNeg()}


def builder(features, monotone: bool = False):
    """A builder whose D sees ``features(x)`` of each vector (None: the raw values); with
    ``monotone``, G keeps the order of its noise (``order_keeping``)."""

    def build(shape: tuple[int, ...], hp: dict[str, Any], name: str):
        (n,) = shape
        width = hp["g_hidden"]
        keep = order_keeping if monotone else (lambda fan_in: {})
        z = keras.Input((n,), name="z")
        h = layers.Reshape((n, 1))(z)  # Dense on the last axis = the same MLP for every point
        h = layers.Dense(width, activation="relu", **keep(1))(h)
        h = layers.Dense(width, activation="sigmoid", **keep(width))(h)
        h = layers.Dense(1, dtype=OUT, **keep(width))(h)
        generator = keras.Model(z, layers.Reshape((n,), dtype=OUT)(h), name=f"{name}_generator")

        x = keras.Input((n,), name="x")
        h = features()(x) if features else x
        h = layers.Dense(hp["d_hidden"], activation="relu")(h)
        h = layers.Dense(hp["d_hidden"], activation="relu")(h)
        discriminator = keras.Model(x, layers.Dense(1, dtype=OUT)(h),
                                    name=f"{name}_discriminator")
        return generator, discriminator

    return build


DEFAULTS = {"g_hidden": 50, "d_hidden": 50}
FAMILIES = (
    Family("gaussian_1d", builder(DeviationFeatures), DEFAULTS, noise="uniform",
           kind=kinds.VECTORS, summary="the seed: D sees each value and its squared deviation"),
    Family("gaussian_1d_sorted", builder(SortedValues), DEFAULTS, noise="uniform",
           kind=kinds.VECTORS, summary="D sees each vector sorted (its quantiles)"),
    Family("gaussian_1d_monotone", builder(SortedValues, monotone=True), DEFAULTS,
           noise="uniform", kind=kinds.VECTORS,
           summary="D sees each vector sorted; G keeps the order of its noise (it cannot fold)"),
)
