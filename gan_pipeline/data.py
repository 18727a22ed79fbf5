"""Training data as ``tf.data`` pipelines.

- Images: any tensorflow-datasets dataset with an ``image`` feature (mnist, fashion_mnist, kmnist,
  cifar10, ...), converted from uint8 to float32 in [-1, 1], then cached, shuffled (seeded),
  batched and prefetched. Works offline when the dataset is prepared under ``TFDS_DATA_DIR`` or
  ``data_dir``.
- ``gaussian_1d``: vectors of ``n_points`` draws from N(mean, std), as in the 1-D seed. The
  generator's U(0, 1) input is drawn by the GAN itself (see ``gan_pipeline.gan``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from gan_pipeline.errors import UserError, closest

GAUSSIAN_1D = "gaussian_1d"


@dataclass(frozen=True)
class TrainData:
    """A batched training dataset and what the models need to know about it."""

    dataset: tf.data.Dataset
    shape: tuple[int, ...]  # one sample: (H, W, C) or (n_points,)
    num_examples: int
    name: str


def normalize(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def denormalize(x):
    """float [-1, 1] -> uint8 [0, 255] (numpy), for pictures."""
    return np.clip(np.round((np.asarray(x, dtype=np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size = {batch_size!r} is not valid: expected a positive integer")
    return batch_size


def resolve_data_dir(data_dir: str | None) -> str | None:
    """The TFDS data dir: ``data_dir`` if set, else ``$TFDS_DATA_DIR``, else None (TFDS' default)."""
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


def _describe_dir(data_dir: str | None) -> str:
    if data_dir:
        return data_dir
    import tensorflow_datasets as tfds

    return f"{tfds.core.constants.DATA_DIR} (TFDS' default; set TFDS_DATA_DIR or data.data_dir)"


def image_builder(name: str, data_dir: str | None = None, download: bool = True):
    """The TFDS builder of image dataset ``name``, prepared (downloading it if allowed)."""
    import tensorflow_datasets as tfds

    data_dir = resolve_data_dir(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        known = tfds.list_builders()
        raise UserError(f"unknown dataset {name!r}: not a TFDS dataset nor {GAUSSIAN_1D!r}."
                        + (closest(name, known + [GAUSSIAN_1D])
                           or " See `tfds.list_builders()` for the names.")) from None
    features = builder.info.features
    image = features["image"] if "image" in features.keys() else None
    if not isinstance(image, tfds.features.Image):
        raise UserError(f"dataset {name!r} has no 'image' feature (it has: "
                        f"{', '.join(features.keys())}); "
                        "GAN image pipelines need an image dataset such as mnist, fashion_mnist, "
                        "kmnist or cifar10")
    if None in tuple(image.shape):
        raise UserError(f"dataset {name!r} has images of varying size {tuple(image.shape)}; the "
                        "GAN pipelines need fixed-size images (e.g. mnist, fashion_mnist, kmnist, "
                        "cifar10)")
    if not builder.is_prepared():
        where = _describe_dir(data_dir)
        fix = (f"prepare it there on a machine with internet (`tfds build {name} "
               f"--data_dir DIR`), then copy DIR here and point TFDS_DATA_DIR or data.data_dir at it")
        if not download:
            raise UserError(f"dataset {name!r} is not prepared in {where} and data.download is "
                            f"false: {fix}")
        try:
            builder.download_and_prepare()
        except Exception as exc:  # network errors come in many types (requests, OSError, ...)
            raise UserError(f"dataset {name!r} is not prepared in {where} and could not be "
                            f"downloaded ({type(exc).__name__}): {fix}") from None
    return builder


def image_dataset(name: str = "mnist", batch_size: int = 128, *, split: str = "train",
                  data_dir: str | None = None, download: bool = True, shuffle_buffer: int = 10_000,
                  seed: int = 0, cache: bool = True) -> TrainData:
    """Batches of images in [-1, 1] from TFDS dataset ``name``; the order is fixed by ``seed``."""
    _check_batch_size(batch_size)
    builder = image_builder(name, data_dir, download)
    splits = builder.info.splits
    if splits and split not in splits:  # split info is empty only for mocked data
        raise UserError(f"dataset {name!r} has no split {split!r}; allowed: "
                        f"{', '.join(splits.keys())}")
    ds = builder.as_dataset(split=split, shuffle_files=False)
    num_examples = splits[split].num_examples if splits else int(ds.cardinality())
    if num_examples < batch_size:
        raise UserError(f"batch_size = {batch_size} is larger than the {num_examples} examples "
                        f"of {name}:{split}; use a batch_size <= {num_examples}")
    ds = ds.map(lambda ex: normalize(ex["image"]), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    if cache:
        ds = ds.cache()
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    shape = tuple(int(d) for d in builder.info.features["image"].shape)
    return TrainData(ds, shape, num_examples, name)


def gaussian_dataset(batch_size: int = 128, *, n_points: int = 100, mean: float = 4.0,
                     std: float = 1.25, num_examples: int = 10_000, seed: int = 0,
                     shuffle_buffer: int = 10_000) -> TrainData:
    """Batches of ``(n_points,)`` vectors of N(mean, std) draws, reproducible for a seed."""
    _check_batch_size(batch_size)
    if std <= 0 or n_points < 1 or num_examples < batch_size:
        raise UserError(f"gaussian_1d needs std > 0, n_points >= 1 and num_examples >= batch_size; "
                        f"got std={std}, n_points={n_points}, num_examples={num_examples}, "
                        f"batch_size={batch_size}")
    rng = np.random.default_rng(seed)
    real = rng.normal(mean, std, size=(num_examples, n_points)).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(real)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return TrainData(ds, (n_points,), num_examples, GAUSSIAN_1D)


def from_config(cfg: dict) -> TrainData:
    """The training data a validated pipeline config asks for."""
    d = cfg["data"]
    if d["dataset"] == GAUSSIAN_1D:
        return gaussian_dataset(cfg["batch_size"], n_points=d["n_points"], mean=d["mean"],
                                std=d["std"], num_examples=d["num_examples"], seed=cfg["seed"],
                                shuffle_buffer=d["shuffle_buffer"])
    return image_dataset(d["dataset"], cfg["batch_size"], split=d["split"],
                         data_dir=d["data_dir"] or None, download=d["download"],
                         shuffle_buffer=d["shuffle_buffer"], seed=cfg["seed"], cache=d["cache"])


def real_samples(cfg: dict, n: int, seed: int = 0) -> np.ndarray:
    """``n`` real samples (unbatched, normalised) for pictures and comparisons."""
    d = cfg["data"]
    if d["dataset"] == GAUSSIAN_1D:
        rng = np.random.default_rng(seed + 1)
        return rng.normal(d["mean"], d["std"], size=(n, d["n_points"])).astype(np.float32)
    builder = image_builder(d["dataset"], d["data_dir"] or None, d["download"])
    return split_images(builder, d["split"], take=n)


def split_images(builder, split: str, take: int | None = None) -> np.ndarray:
    """The first ``take`` (or all) images of a split, normalised, as one float32 array."""
    ds = builder.as_dataset(split=split, shuffle_files=False)
    if take is not None:
        ds = ds.take(take)
    ds = ds.map(lambda ex: normalize(ex["image"]), num_parallel_calls=tf.data.AUTOTUNE)
    return np.concatenate([b.numpy() for b in ds.batch(2000)])

