"""The MLP GAN of the tutorials: G Dense 256-512-1024-prod(shape) tanh; D 1024-512-256,
LeakyReLU 0.2, Dropout 0.3. ``mlp_bn`` adds BatchNorm after each generator layer (as in the
Keras-GAN MLP): the plain tanh output starts grey and its bias moves ~lr per step, so it needs
far longer."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import layers

from gan_pipeline.families import Family
from gan_pipeline.families.common import (OUT, batch_norm, dropout, leaky, minibatch_std,
                                           spectral)


def initializer(hp: dict[str, Any]):
    """One N(0, init_std) initializer for all of a family's layers (Keras reuses its seed)."""
    return keras.initializers.RandomNormal(stddev=hp["init_std"])


def generator_body(h, shape: tuple[int, ...], hp: dict[str, Any], init):
    """Dense + LeakyReLU (+ BatchNorm) per ``g_widths``, then tanh, reshaped to ``shape``."""
    for width in hp["g_widths"]:
        h = leaky(hp["leaky_slope"])(layers.Dense(width, kernel_initializer=init)(h))
        if hp["batch_norm"]:
            h = batch_norm(hp["bn_momentum"])(h)
    h = layers.Dense(math.prod(shape), activation="tanh", kernel_initializer=init, dtype=OUT)(h)
    return layers.Reshape(shape, dtype=OUT)(h)


def discriminator_features(x, hp: dict[str, Any], init):
    """The flattened input through Dense + LeakyReLU + Dropout per ``d_widths`` (and the
    batch's variety as one more feature with ``minibatch_std``); each Dense spectrally
    normalised with ``spectral_norm``."""
    h = layers.Flatten()(x)
    for width in hp["d_widths"]:
        dense = spectral(layers.Dense(width, kernel_initializer=init), hp["spectral_norm"])
        h = leaky(hp["leaky_slope"])(dense(h))
        h = dropout(hp["dropout"])(h)
    return minibatch_std(h, hp["minibatch_std"])


def build(shape: tuple[int, ...], hp: dict[str, Any], name: str):
    init = initializer(hp)
    z = keras.Input((hp["latent_dim"],), name="z")
    generator = keras.Model(z, generator_body(z, shape, hp, init), name=f"{name}_generator")
    x = keras.Input(shape, name="x")
    h = discriminator_features(x, hp, init)
    readout = spectral(layers.Dense(1, kernel_initializer=init, dtype=OUT), hp["spectral_norm"])
    discriminator = keras.Model(x, readout(h), name=f"{name}_discriminator")
    return generator, discriminator


DEFAULTS = {"latent_dim": 100, "g_widths": [256, 512, 1024], "d_widths": [1024, 512, 256],
            "dropout": 0.3, "leaky_slope": 0.2, "init_std": 0.02, "batch_norm": False,
            "bn_momentum": 0.8, "minibatch_std": False, "spectral_norm": False}
FAMILIES = (
    Family("mlp", build, DEFAULTS, summary="the tutorials' MLP GAN"),
    Family("mlp_bn", build, {**DEFAULTS, "batch_norm": True},
           summary="the MLP with BatchNorm after each generator layer"),
)
