"""Conditional families: ask for a class, get a sample of it (Mirza & Osindero 2014).

G takes ``[z, label]``: the label's learnt embedding is concatenated to z, then the
unconditional family's body makes the sample. D takes ``[x, label]`` as a projection
discriminator (Miyato & Koyama 2018): the unconditional body's features ``h`` give
``logit = w . h + b + embed(label) . h``, so the label decides which direction in feature space
counts as real. Labels are integers of shape ``(batch, 1)``.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from gan_pipeline.families import Family, dcgan, mlp
from gan_pipeline.families.common import OUT


def label_input() -> keras.KerasTensor:
    return keras.Input((1,), dtype="int32", name="label")


def embedded(label, num_classes: int, dim: int, name: str):
    """``label`` (batch, 1) as a learnt ``dim``-vector (batch, dim)."""
    return layers.Flatten()(layers.Embedding(num_classes, dim, name=name)(label))


def projection_logit(h, label, num_classes: int, **dense_kwargs):
    """One logit per sample: an unconditional linear read-out of ``h`` plus the projection of
    ``h`` on the label's embedding."""
    unconditional = layers.Dense(1, dtype=OUT, **dense_kwargs)(h)
    projected = layers.Dot(axes=1, dtype=OUT)(
        [h, embedded(label, num_classes, int(h.shape[-1]), "d_label_embedding")])
    return layers.Add(dtype=OUT)([unconditional, projected])


def build_cdcgan(shape: tuple[int, ...], hp: dict[str, Any], name: str, num_classes: int):
    dcgan.check_shape(shape, name)
    z, label = keras.Input((hp["latent_dim"],), name="z"), label_input()
    h = layers.Concatenate()([z, embedded(label, num_classes, hp["label_dim"],
                                          "g_label_embedding")])
    generator = keras.Model([z, label], dcgan.generator_body(h, shape, hp),
                            name=f"{name}_generator")
    x, d_label = keras.Input(shape, name="x"), label_input()
    h = dcgan.discriminator_features(x, hp)
    discriminator = keras.Model([x, d_label], projection_logit(h, d_label, num_classes),
                                name=f"{name}_discriminator")
    return generator, discriminator


def build_cmlp(shape: tuple[int, ...], hp: dict[str, Any], name: str, num_classes: int):
    init = mlp.initializer(hp)
    z, label = keras.Input((hp["latent_dim"],), name="z"), label_input()
    h = layers.Concatenate()([z, embedded(label, num_classes, hp["label_dim"],
                                          "g_label_embedding")])
    generator = keras.Model([z, label], mlp.generator_body(h, shape, hp, init),
                            name=f"{name}_generator")
    x, d_label = keras.Input(shape, name="x"), label_input()
    h = mlp.discriminator_features(x, hp, init)
    discriminator = keras.Model(
        [x, d_label], projection_logit(h, d_label, num_classes, kernel_initializer=init),
        name=f"{name}_discriminator")
    return generator, discriminator


FAMILIES = (
    Family("cdcgan", build_cdcgan, {**dcgan.DEFAULTS, "label_dim": 50}, conditional=True,
           summary="the DCGAN conditioned on the class: label embedding into G, projection D"),
    Family("cmlp", build_cmlp, {**mlp.DEFAULTS, "label_dim": 50}, conditional=True,
           summary="the MLP GAN conditioned on the class: label embedding into G, "
                   "projection D"),
)
