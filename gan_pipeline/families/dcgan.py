"""The DCGAN of the Keras/TensorFlow tutorials: G Dense (H/4)x(W/4)x128 + BatchNorm, two
UpSampling2D + Conv2D 5x5, tanh; D Conv2D 64/128 5x5 stride 2, LeakyReLU 0.2, Dropout 0.3.

``upsample`` chooses how G doubles its sides: ``"nearest"`` (the seed architecture: repeat each
pixel, then a 5x5 convolution on the doubled grid) or ``"transpose"`` (the TensorFlow
tutorial's stride-2 ``Conv2DTranspose``: the same kernel applied on the small grid, a quarter
of the multiply-adds).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from gan_pipeline.errors import UserError
from gan_pipeline.families import Family
from gan_pipeline.families.common import (OUT, batch_norm, dropout, leaky, minibatch_std,
                                           spectral)


def check_shape(shape: tuple[int, ...], name: str) -> None:
    if shape[0] % 4 or shape[1] % 4:
        raise UserError(f"model {name!r} needs images whose height and width divide by 4 "
                        f"(e.g. 28x28x1, 32x32x3), got shape {shape}; set data.image_size to "
                        "such a size (folders) or choose another model")


def doubled(h, filters: int, hp: dict[str, Any], **conv_kwargs):
    """``h`` at twice its height and width, with ``filters`` channels (``hp["upsample"]``)."""
    if hp["upsample"] == "transpose":
        return layers.Conv2DTranspose(filters, hp["kernel_size"], strides=2, padding="same",
                                      **conv_kwargs)(h)
    h = layers.UpSampling2D()(h)
    return layers.Conv2D(filters, hp["kernel_size"], padding="same", **conv_kwargs)(h)


def generator_body(h, shape: tuple[int, ...], hp: dict[str, Any]):
    """Dense (H/4)x(W/4)xbase + BatchNorm, then doubled twice (``doubled``), tanh."""
    height, width, channels = shape
    slope = hp["leaky_slope"]
    h = layers.Dense((height // 4) * (width // 4) * hp["g_base_filters"], use_bias=False)(h)
    h = leaky(slope)(batch_norm(hp["bn_momentum"])(h))
    h = layers.Reshape((height // 4, width // 4, hp["g_base_filters"]))(h)
    h = doubled(h, hp["g_filters"], hp, use_bias=False)
    h = leaky(slope)(batch_norm(hp["bn_momentum"])(h))
    return doubled(h, channels, hp, activation="tanh", dtype=OUT)


def discriminator_features(x, hp: dict[str, Any]):
    """Strided Conv2D + LeakyReLU + Dropout per ``d_filters``, flattened (and the batch's
    variety as one more feature with ``minibatch_std``); each convolution spectrally
    normalised with ``spectral_norm``."""
    h = x
    for filters in hp["d_filters"]:
        h = spectral(layers.Conv2D(filters, hp["kernel_size"], strides=2, padding="same"),
                     hp["spectral_norm"])(h)
        h = dropout(hp["dropout"])(leaky(hp["leaky_slope"])(h))
    return minibatch_std(layers.Flatten()(h), hp["minibatch_std"])


def build(shape: tuple[int, ...], hp: dict[str, Any], name: str):
    check_shape(shape, name)
    z = keras.Input((hp["latent_dim"],), name="z")
    generator = keras.Model(z, generator_body(z, shape, hp), name=f"{name}_generator")
    x = keras.Input(shape, name="x")
    h = discriminator_features(x, hp)
    logit = spectral(layers.Dense(1, dtype=OUT), hp["spectral_norm"])(h)
    discriminator = keras.Model(x, logit, name=f"{name}_discriminator")
    return generator, discriminator


DEFAULTS = {"latent_dim": 100, "g_base_filters": 128, "g_filters": 64, "d_filters": [64, 128],
            "kernel_size": 5, "dropout": 0.3, "leaky_slope": 0.2, "bn_momentum": 0.8,
            "minibatch_std": False, "upsample": "nearest", "spectral_norm": False}
CHOICES = {"upsample": ("nearest", "transpose")}
FAMILIES = (
    Family("dcgan", build, DEFAULTS, choices=CHOICES,
           summary="the tutorials' DCGAN (sides must divide by 4)"),
)
