"""Conditional families: ask for a class, get a sample of it (Mirza & Osindero 2014).

G takes ``[z, label]``: the label's learnt embedding is concatenated to z, then the
unconditional family's body makes the sample. D takes ``[x, label]`` in one of two ways, the
``d_conditioning`` hyperparameter:

- ``"projection"`` (the default; Miyato & Koyama 2018): the unconditional body's features ``h``
  give ``logit = w . h + b + embed(label) . h``, so the label decides which direction in feature
  space counts as real;
- ``"concat"`` (Mirza & Osindero 2014, the keras-io example): a learnt HxW plane per class is
  stacked onto the image as one more channel, and the unconditional D reads both.

Labels are integers of shape ``(batch, 1)``. What each measured: docs/quality.md.

``labelled_dcgan`` and ``labelled_mlp`` train exactly as ``cdcgan`` and ``cmlp`` but save an
unconditional generator (``Family.mixes_classes``): its noise has one more coordinate, from
which it draws the class by ``train.fake_labels``' shares. For unconditional samples of
labelled data: D judging each image against its class trains G much faster than D judging
images alone (docs/quality.md).
"""

from __future__ import annotations

import functools
from typing import Any

import keras
from keras import layers

from gan_pipeline.families import Family, dcgan, mlp
from gan_pipeline.families.common import OUT, spectral


def label_input() -> keras.KerasTensor:
    return keras.Input((1,), dtype="int32", name="label")


def embedded(label, num_classes: int, dim: int, name: str):
    """``label`` (batch, 1) as a learnt ``dim``-vector (batch, dim)."""
    return layers.Flatten()(layers.Embedding(num_classes, dim, name=name)(label))


def projection_logit(h, label, num_classes: int, readout: layers.Layer):
    """One logit per sample: the unconditional linear ``readout`` of ``h`` plus the projection
    of ``h`` on the label's embedding."""
    unconditional = readout(h)
    projected = layers.Dot(axes=1, dtype=OUT)(
        [h, embedded(label, num_classes, int(h.shape[-1]), "d_label_embedding")])
    return layers.Add(dtype=OUT)([unconditional, projected])


def label_plane(x, label, num_classes: int):
    """``x`` (batch, H, W, C) with one more channel: a learnt HxW plane for each class."""
    height, width = int(x.shape[1]), int(x.shape[2])
    plane = layers.Reshape((height, width, 1))(
        embedded(label, num_classes, height * width, "d_label_plane"))
    return layers.Concatenate()([x, plane])


def discriminator(x, label, num_classes: int, features, hp: dict[str, Any], name: str,
                  **dense_kwargs) -> keras.Model:
    """D on ``[x, label]``: ``features`` (the unconditional body, ``x -> h``) conditioned the
    ``d_conditioning`` way."""
    projection = hp["d_conditioning"] == "projection"  # else "concat"
    h = features(x) if projection else features(label_plane(x, label, num_classes))
    readout = spectral(layers.Dense(1, dtype=OUT, **dense_kwargs), hp["spectral_norm"])
    logit = projection_logit(h, label, num_classes, readout) if projection else readout(h)
    return keras.Model([x, label], logit, name=f"{name}_discriminator")


def build_cdcgan(shape: tuple[int, ...], hp: dict[str, Any], name: str, num_classes: int):
    dcgan.check_shape(shape, name)
    z, label = keras.Input((hp["latent_dim"],), name="z"), label_input()
    h = layers.Concatenate()([z, embedded(label, num_classes, hp["label_dim"],
                                          "g_label_embedding")])
    generator = keras.Model([z, label], dcgan.generator_body(h, shape, hp),
                            name=f"{name}_generator")
    features = functools.partial(dcgan.discriminator_features, hp=hp)
    return generator, discriminator(keras.Input(shape, name="x"), label_input(), num_classes,
                                    features, hp, name)


def build_cmlp(shape: tuple[int, ...], hp: dict[str, Any], name: str, num_classes: int):
    init = mlp.initializer(hp)
    z, label = keras.Input((hp["latent_dim"],), name="z"), label_input()
    h = layers.Concatenate()([z, embedded(label, num_classes, hp["label_dim"],
                                          "g_label_embedding")])
    generator = keras.Model([z, label], mlp.generator_body(h, shape, hp, init),
                            name=f"{name}_generator")
    features = functools.partial(mlp.discriminator_features, hp=hp, init=init)
    return generator, discriminator(keras.Input(shape, name="x"), label_input(), num_classes,
                                    features, hp, name, kernel_initializer=init)


CONDITIONING = {"label_dim": 50, "d_conditioning": "projection"}
CHOICES = {"d_conditioning": ("projection", "concat")}
DCGAN_CHOICES = {**dcgan.CHOICES, **CHOICES}
FAMILIES = (
    Family("cdcgan", build_cdcgan, {**dcgan.DEFAULTS, **CONDITIONING}, choices=DCGAN_CHOICES,
           conditional=True,
           summary="the DCGAN conditioned on the class: label embedding into G, projection "
                   "(or concat) D"),
    Family("cmlp", build_cmlp, {**mlp.DEFAULTS, **CONDITIONING}, choices=CHOICES,
           conditional=True,
           summary="the MLP GAN conditioned on the class: label embedding into G, projection "
                   "(or concat) D"),
    Family("labelled_dcgan", build_cdcgan, {**dcgan.DEFAULTS, **CONDITIONING},
           choices=DCGAN_CHOICES,
           conditional=True, mixes_classes=True,
           summary="cdcgan trained on the labels, saved unconditional: G draws the class from "
                   "its noise"),
    Family("labelled_mlp", build_cmlp, {**mlp.DEFAULTS, "batch_norm": True, **CONDITIONING},
           choices=CHOICES,
           conditional=True, mixes_classes=True,
           summary="cmlp with BatchNorm in G (as mlp_bn) trained on the labels, saved "
                   "unconditional: G draws the class from "
                   "its noise"),
)
