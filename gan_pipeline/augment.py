"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of what D sees.

D judges augmented images, real and fake alike, in the D step and in the G step, so G's
gradients flow back through the same random transformations and G is not pushed to make
augmented-looking images. Each transformation draws its own parameters for every sample from a
stateless seed (the GAN's seed stream: a resumed run draws the same ones), keeps the batch's
shape, and keeps values in [-1, 1] when they were.

- ``translation``: shift by up to 1/8 of each side, per sample, filling with -1 (the low end of
  the data's range);
- ``cutout``: set one square of half each side, at a random place per sample, to -1;
- ``color``: brightness, saturation and contrast jitter, clipped to [-1, 1]; RGB images only
  (one-channel images pass unchanged).

``train.augment`` lists the transformations (``["translation", "cutout"]``); the empty list, the
default, switches augmentation off.
"""

from __future__ import annotations

import keras
import tensorflow as tf

FILL = -1.0  # what translation and cutout fill with: the low end of the [-1, 1] range


def _uniform(shape, seed, low=0.0, high=1.0):
    return tf.random.stateless_uniform(shape, seed, low, high)


def translation(x, seed, ratio: float = 0.125):
    """Shift each image by its own (dy, dx), |d| <= ratio * side, filling with FILL."""
    batch, height, width = tf.shape(x)[0], x.shape[1], x.shape[2]
    pad_h, pad_w = max(1, int(height * ratio + 0.5)), max(1, int(width * ratio + 0.5))
    seeds = tf.random.experimental.stateless_split(seed, 2)
    dy = tf.random.stateless_uniform((batch, 1), seeds[0], -pad_h, pad_h + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform((batch, 1), seeds[1], -pad_w, pad_w + 1, dtype=tf.int32)
    padded = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]],
                    constant_values=tf.cast(FILL, x.dtype))
    rows = tf.range(height)[None, :] + pad_h - dy  # (batch, height): source row per output row
    cols = tf.range(width)[None, :] + pad_w - dx
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, cols, axis=2, batch_dims=1)


def cutout(x, seed, ratio: float = 0.5):
    """Set one (ratio * H) x (ratio * W) square per image, at a random place, to FILL."""
    batch, height, width = tf.shape(x)[0], x.shape[1], x.shape[2]
    cut_h, cut_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    # the square's top-left corner, so that it may hang over any edge by up to half its size
    top = tf.random.stateless_uniform((batch, 1, 1), seeds[0], -(cut_h // 2),
                                      height - cut_h + cut_h // 2 + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform((batch, 1, 1), seeds[1], -(cut_w // 2),
                                       width - cut_w + cut_w // 2 + 1, dtype=tf.int32)
    ys = tf.range(height)[None, :, None]
    xs = tf.range(width)[None, None, :]
    inside = (ys >= top) & (ys < top + cut_h) & (xs >= left) & (xs < left + cut_w)
    return tf.where(inside[..., None], tf.cast(FILL, x.dtype), x)


def color(x, seed):
    """Brightness +-0.5, saturation x[0, 2] and contrast x[0.5, 1.5] (on [-1, 1] data: the
    paper's jitter at twice the scale), clipped back to [-1, 1]. RGB only."""
    if x.shape[-1] != 3:
        return x
    seeds = tf.random.experimental.stateless_split(seed, 3)
    shape = (tf.shape(x)[0], 1, 1, 1)
    y = tf.cast(x, tf.float32)
    y = y + _uniform(shape, seeds[0], -0.5, 0.5) * 2.0
    grey = tf.reduce_mean(y, axis=3, keepdims=True)
    y = (y - grey) * _uniform(shape, seeds[1], 0.0, 2.0) + grey
    mean = tf.reduce_mean(y, axis=[1, 2, 3], keepdims=True)
    y = (y - mean) * _uniform(shape, seeds[2], 0.5, 1.5) + mean
    return tf.cast(tf.clip_by_value(y, -1.0, 1.0), x.dtype)


AUGMENTATIONS = {"translation": translation, "cutout": cutout, "color": color}


@keras.saving.register_keras_serializable(package="gan_pipeline")
class DiffAugment:
    """The listed transformations, in the order given, each with its own seed."""

    def __init__(self, policy=()):
        unknown = [name for name in policy if name not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation {unknown[0]!r}; allowed: "
                             f"{', '.join(AUGMENTATIONS)}")
        self.policy = list(policy)

    def __bool__(self) -> bool:
        return bool(self.policy)

    def __call__(self, x, seed):
        if not self.policy:
            return x
        seeds = tf.random.experimental.stateless_split(seed, len(self.policy))
        for i, name in enumerate(self.policy):
            x = AUGMENTATIONS[name](x, seeds[i])
        return x

    def get_config(self):
        return {"policy": self.policy}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
