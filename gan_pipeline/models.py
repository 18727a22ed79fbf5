"""The classic GAN architectures, in a registry by name, built from hyperparameters.

Each family builds a ``(generator, discriminator)`` pair for a data shape: ``(H, W, C)`` images or
``(n_points,)`` vectors for the 1-D GAN. Generators map noise ``z`` to samples; discriminators output
one logit per sample (no sigmoid). The generator is named ``<family>_generator`` so that a saved
generator says which noise it expects (``noise_for``).

- ``gaussian_1d``: the 1-D seed. G is a per-point MLP (50 relu, 50 sigmoid, 1 linear) on uniform
  noise; D sees every point beside its squared deviation from its vector's mean, then 50-50-1.
  ``gaussian_1d_sorted`` keeps that G; its D sees the vector sorted (its order statistics), so it
  can compare the whole shape of the distribution with the real one, not only its moments.
- ``mlp``: G Dense 256-512-1024-prod(shape) tanh; D 1024-512-256, LeakyReLU 0.2, Dropout 0.3.
  ``mlp_bn`` adds BatchNorm after each generator layer.
- ``dcgan``: G Dense (H/4)x(W/4)x128 + BN, two UpSampling2D + Conv2D 5x5; D Conv2D 64/128 stride 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import keras
from keras import layers, ops

from gan_pipeline.errors import UserError, closest


@keras.saving.register_keras_serializable(package="gan_pipeline")
class DeviationFeatures(layers.Layer):
    """Each value beside its squared deviation from the mean of its vector: ``(n,) -> (2n,)``.

    The discriminator of the 1-D seed ("GANs in 50 lines") sees this statistic so it can tell a
    collapsed generator (all points alike) from real data. A proper layer, so it serialises.
    """

    def call(self, x):
        mean = ops.mean(x, axis=-1, keepdims=True)
        return ops.concatenate([x, ops.square(x - mean)], axis=-1)

    def compute_output_shape(self, input_shape):
        n = input_shape[-1]
        return (*input_shape[:-1], None if n is None else 2 * n)


@keras.saving.register_keras_serializable(package="gan_pipeline")
class SortedValues(layers.Layer):
    """The values of each vector in ascending order: ``(n,) -> (n,)``, its order statistics.

    A discriminator that sees sorted draws sees the empirical quantile function: a linear unit on
    it can weigh any quantile, so a generator that matches mean and spread but not the shape of
    the distribution still loses. Sorting is differentiable (a permutation of the inputs).
    """

    def call(self, x):
        return ops.sort(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


# Output layers compute in float32 under any mixed-precision policy: samples and logits stay
# float32 (stable losses, float32 saved generators), while the layers before them may use
# bfloat16 or float16.
OUT = "float32"


def _leaky(slope: float) -> layers.Layer:
    return layers.LeakyReLU(negative_slope=slope)


def build_gaussian_1d(shape: tuple[int, ...], hp: dict[str, Any]):
    if len(shape) != 1:
        raise UserError(f"the gaussian_1d models need 1-D data (n_points,), got shape {shape}; "
                        "use dataset = 'gaussian_1d'")
    (n,) = shape
    z = keras.Input((n,), name="z")
    h = layers.Reshape((n, 1))(z)  # Dense on the last axis = the same small MLP for every point
    h = layers.Dense(hp["g_hidden"], activation="relu")(h)
    h = layers.Dense(hp["g_hidden"], activation="sigmoid")(h)
    h = layers.Dense(1, dtype=OUT)(h)
    generator = keras.Model(z, layers.Reshape((n,), dtype=OUT)(h), name="gaussian_1d_generator")

    x = keras.Input((n,), name="x")
    h = SortedValues()(x) if hp["sorted_input"] else DeviationFeatures()(x)
    h = layers.Dense(hp["d_hidden"], activation="relu")(h)
    h = layers.Dense(hp["d_hidden"], activation="relu")(h)
    discriminator = keras.Model(x, layers.Dense(1, dtype=OUT)(h), name="gaussian_1d_discriminator")
    return generator, discriminator


def build_mlp(shape: tuple[int, ...], hp: dict[str, Any]):
    init = keras.initializers.RandomNormal(stddev=hp["init_std"])
    z = keras.Input((hp["latent_dim"],), name="z")
    h = z
    for width in hp["g_widths"]:
        h = _leaky(hp["leaky_slope"])(layers.Dense(width, kernel_initializer=init)(h))
        if hp["batch_norm"]:
            h = layers.BatchNormalization(momentum=hp["bn_momentum"])(h)
    h = layers.Dense(math.prod(shape), activation="tanh", kernel_initializer=init, dtype=OUT)(h)
    generator = keras.Model(z, layers.Reshape(shape, dtype=OUT)(h), name=f"{hp['family']}_generator")

    x = keras.Input(shape, name="x")
    h = layers.Flatten()(x)
    for width in hp["d_widths"]:
        h = _leaky(hp["leaky_slope"])(layers.Dense(width, kernel_initializer=init)(h))
        h = layers.Dropout(hp["dropout"])(h)
    discriminator = keras.Model(x, layers.Dense(1, kernel_initializer=init, dtype=OUT)(h),
                                name=f"{hp['family']}_discriminator")
    return generator, discriminator


def build_dcgan(shape: tuple[int, ...], hp: dict[str, Any]):
    if len(shape) != 3 or shape[0] % 4 or shape[1] % 4:
        raise UserError(f"model 'dcgan' needs images whose height and width divide by 4 "
                        f"(e.g. 28x28x1, 32x32x3), got shape {shape}")
    height, width, channels = shape
    k, slope = hp["kernel_size"], hp["leaky_slope"]
    z = keras.Input((hp["latent_dim"],), name="z")
    h = layers.Dense((height // 4) * (width // 4) * hp["g_base_filters"], use_bias=False)(z)
    h = _leaky(slope)(layers.BatchNormalization(momentum=hp["bn_momentum"])(h))
    h = layers.Reshape((height // 4, width // 4, hp["g_base_filters"]))(h)
    h = layers.UpSampling2D()(h)
    h = layers.Conv2D(hp["g_filters"], k, padding="same", use_bias=False)(h)
    h = _leaky(slope)(layers.BatchNormalization(momentum=hp["bn_momentum"])(h))
    h = layers.UpSampling2D()(h)
    out = layers.Conv2D(channels, k, padding="same", activation="tanh", dtype=OUT)(h)
    generator = keras.Model(z, out, name="dcgan_generator")

    x = keras.Input(shape, name="x")
    h = x
    for filters in hp["d_filters"]:
        h = layers.Conv2D(filters, k, strides=2, padding="same")(h)
        h = layers.Dropout(hp["dropout"])(_leaky(slope)(h))
    h = layers.Flatten()(h)
    discriminator = keras.Model(x, layers.Dense(1, dtype=OUT)(h), name="dcgan_discriminator")
    return generator, discriminator


@dataclass(frozen=True)
class Family:
    build: Callable[[tuple[int, ...], dict[str, Any]], tuple[keras.Model, keras.Model]]
    defaults: dict[str, Any] = field(default_factory=dict)
    noise: str = "normal"  # the distribution of z: "normal" N(0, 1) or "uniform" U(0, 1)


_1D = {"g_hidden": 50, "d_hidden": 50, "sorted_input": False}
_MLP = {"latent_dim": 100, "g_widths": [256, 512, 1024], "d_widths": [1024, 512, 256],
        "dropout": 0.3, "leaky_slope": 0.2, "init_std": 0.02, "batch_norm": False,
        "bn_momentum": 0.8}

FAMILIES: dict[str, Family] = {
    "gaussian_1d": Family(build_gaussian_1d, _1D, noise="uniform"),
    # The seed's D matches moments (mean and squared deviations) but not the shape: KS ~0.09.
    "gaussian_1d_sorted": Family(build_gaussian_1d, {**_1D, "sorted_input": True},
                                 noise="uniform"),
    "mlp": Family(build_mlp, _MLP),
    # The MLP with BatchNorm after each generator layer (as in the Keras-GAN MLP): the seed's
    # tanh output starts grey and its bias moves ~lr per step, so it needs far longer.
    "mlp_bn": Family(build_mlp, {**_MLP, "batch_norm": True}),
    "dcgan": Family(build_dcgan, {
        "latent_dim": 100, "g_base_filters": 128, "g_filters": 64, "d_filters": [64, 128],
        "kernel_size": 5, "dropout": 0.3, "leaky_slope": 0.2, "bn_momentum": 0.8}),
}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise UserError(f"unknown model {name!r}; allowed: {', '.join(sorted(FAMILIES))}."
                        + closest(name, FAMILIES))
    return FAMILIES[name]


def build(name: str, shape: tuple[int, ...], **hyperparameters) -> tuple[keras.Model, keras.Model]:
    """Build ``(generator, discriminator)`` of family ``name`` for samples of ``shape``.

    Hyperparameters not given take the family's defaults; unknown ones are an error.
    """
    family = get_family(name)
    unknown = set(hyperparameters) - set(family.defaults)
    if unknown:
        key = sorted(unknown)[0]
        raise UserError(f"unknown hyperparameter {key!r} for model {name!r}; allowed: "
                        f"{', '.join(sorted(family.defaults))}." + closest(key, family.defaults))
    hp = {**family.defaults, **hyperparameters, "family": name}
    return family.build(tuple(int(d) for d in shape), hp)


def noise_for(generator: keras.Model) -> str:
    """The noise distribution a generator was trained on, from its ``<family>_generator`` name."""
    family = generator.name.removesuffix("_generator")
    return FAMILIES[family].noise if family in FAMILIES else "normal"
