"""Any tensorflow-datasets dataset with a fixed-size ``image`` feature (mnist, fashion_mnist,
kmnist, cifar10, ...), converted from uint8 to float32 in [-1, 1]. Works offline when the dataset
is prepared under ``TFDS_DATA_DIR`` or ``data.data_dir``.

The evaluation classifier trains on the ``train`` split's ``label`` feature and generated images
are compared with the ``test`` split; 10,000 train images give the real-vs-real floor.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from gan_pipeline.config.schema import Field, Section
from gan_pipeline.data.base import ImageSource, images_of, mlflow_dataset, normalize
from gan_pipeline.errors import UserError, closest
from gan_pipeline.evaluation.classifier import CLASSIFIER_VERSION, SHIPPED_DIR


# Datasets whose evaluation classifier ships with the package (SHIPPED_DIR, made by
# scripts/train_classifier.py): (name, version) -> the split sizes the prepared data must have
# for it to be this data (mocked data has no split sizes: it trains its own), and the test
# accuracy the script requires before it writes the file.
SHIPPED = {("mnist", "3.0.1"): {"splits": {"train": 60_000, "test": 10_000},
                                "min_accuracy": 0.99}}


def resolve_data_dir(data_dir: str | None) -> str | None:
    """The TFDS data dir: ``data_dir`` if set, else ``$TFDS_DATA_DIR``, else None (TFDS' default)."""
    return data_dir or os.environ.get("TFDS_DATA_DIR") or None


# TFDS' own mirror: most datasets' files and every dataset's metadata come from there.
PROBE_HOST = ("storage.googleapis.com", 443)


def network_reachable(timeout: float = 5.0) -> bool:
    """Whether TFDS could download at all: a TCP connection to its mirror opens within
    ``timeout`` seconds (name lookup included). Behind a proxy (``HTTPS_PROXY`` and kin), where
    direct connections may be barred but downloads work, it does not probe. Without it TFDS
    retries every file with back-off for minutes before it fails."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                       "ALL_PROXY", "all_proxy")):
        return True

    reached = []

    def connect():
        try:
            with socket.create_connection(PROBE_HOST, timeout=timeout):
                reached.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)  # a name lookup can hang: not waited
    probe.start()                                          # for past the timeout, nor at exit
    probe.join(timeout)
    return bool(reached)


def _describe_dir(data_dir: str | None) -> str:
    if data_dir:
        return data_dir
    return f"{tfds.core.constants.DATA_DIR} (TFDS' default; set TFDS_DATA_DIR or data.data_dir)"


def image_builder(name: str, data_dir: str | None = None, download: bool = True):
    """The TFDS builder of image dataset ``name``, prepared (downloading it if allowed)."""
    from gan_pipeline import data  # (here: the data package imports this module)

    data_dir = resolve_data_dir(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        ours = sorted(data.SOURCES)
        raise UserError(f"unknown dataset {name!r}: not a TFDS dataset nor one of "
                        f"{', '.join(map(repr, ours))}."
                        + (closest(name, tfds.list_builders() + ours)
                           or " See `tfds.list_builders()` for the names.")) from None
    features = builder.info.features
    image = features["image"] if "image" in features.keys() else None
    if not isinstance(image, tfds.features.Image):
        raise UserError(f"dataset {name!r} has no 'image' feature (it has: "
                        f"{', '.join(features.keys())}); "
                        "GAN image pipelines need an image dataset such as mnist, fashion_mnist, "
                        "kmnist or cifar10, or data.dataset = 'folder'")
    if None in tuple(image.shape):
        raise UserError(f"dataset {name!r} has images of varying size {tuple(image.shape)}; the "
                        "GAN pipelines need fixed-size images (e.g. mnist, fashion_mnist, kmnist, "
                        "cifar10), or a folder with data.image_size")
    if not builder.is_prepared():
        where = _describe_dir(data_dir)
        fix = (f"prepare it there on a machine with internet (`tfds build {name} "
               f"--data_dir DIR`), then copy DIR here and point TFDS_DATA_DIR or data.data_dir at it")
        if not download:
            raise UserError(f"dataset {name!r} is not prepared in {where} and data.download is "
                            f"false: {fix}")
        if _would_download(builder) and not network_reachable():
            raise UserError(f"dataset {name!r} is not prepared in {where}, and this machine "
                            f"has no network to download it: {fix}")
        try:
            builder.download_and_prepare()
        except Exception as exc:  # network errors come in many types (requests, OSError, ...)
            raise UserError(f"dataset {name!r} is not prepared in {where} and could not be "
                            f"downloaded ({type(exc).__name__}): {fix}") from None
    return builder


def _would_download(builder) -> bool:
    """Whether ``download_and_prepare`` would fetch anything: not under
    ``tfds.testing.mock_data``, whose no-op stands in for it (and makes the data up)."""
    method = getattr(type(builder), "download_and_prepare", None)
    return getattr(method, "__name__", "") != "mock_download_and_prepare"


class TFDSImages(ImageSource):
    """A TFDS image dataset, opened once: the builder, its split and its sizes."""

    name = "tfds"  # answers to every data.dataset that is not another source's name
    fields = {
        **ImageSource.fields,
        "data_dir": Field(str, "", help="TFDS data dir; empty = $TFDS_DATA_DIR, then TFDS' "
                                        "default"),
        "download": Field(bool, True, help="let TFDS download a dataset that is not prepared"),
        "split": Field(str, "train", nonempty=True),
    }

    def __init__(self, settings: Section, seed: int = 0):
        super().__init__(settings, seed)
        self.builder = image_builder(settings.dataset, settings.data_dir or None,
                                     settings.download)
        splits = self.builder.info.splits
        if splits and settings.split not in splits:  # split info is empty only for mocked data
            raise UserError(f"dataset {settings.dataset!r} has no split {settings.split!r}; "
                            f"allowed: {', '.join(splits.keys())}")
        self.shape = tuple(int(d) for d in self.builder.info.features["image"].shape)
        self.num_examples = (splits[settings.split].num_examples if splits
                             else int(self._split(settings.split).cardinality()))
        features = self.builder.info.features
        label = features["label"] if "label" in features.keys() else None
        self.class_names = (list(label.names) if isinstance(label, tfds.features.ClassLabel)
                            else None)

    @property
    def label(self) -> str:
        return f"{self.settings.dataset}:{self.settings.split}"

    def _stored(self, split: str, supervised: bool = False) -> tf.data.Dataset:
        """A split's images as TFDS stores them, uint8 (with their labels when ``supervised``)."""
        if supervised:
            return self.builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        ds = self.builder.as_dataset(split=split, shuffle_files=False)
        return ds.map(lambda ex: ex["image"], num_parallel_calls=tf.data.AUTOTUNE,
                      deterministic=True)

    def _split(self, split: str, supervised: bool = False) -> tf.data.Dataset:
        """A split's images normalised to [-1, 1] (with their labels when ``supervised``)."""
        scale = (lambda image, label: (normalize(image), label)) if supervised else normalize
        return self._stored(split, supervised).map(scale, num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)

    def examples(self) -> tf.data.Dataset:
        return self._stored(self.settings.split)

    def labelled_examples(self) -> tf.data.Dataset:
        self.require_labels("labelled batches")
        return self._stored(self.settings.split, supervised=True).map(
            lambda image, label: (image, tf.cast(label, tf.int32)))

    def real_samples(self, n: int, seed: int = 0) -> np.ndarray:
        return images_of(self._split(self.settings.split).take(n))

    def _images(self, split: str, n: int | None = None, seed: int = 0) -> np.ndarray:
        """All (or a seeded random ``n``) normalised images of a split."""
        images = images_of(self._split(split))
        if n is not None and n < len(images):
            images = images[np.random.default_rng(seed).choice(len(images), n, replace=False)]
        return images

    # -- profile and evaluation ----------------------------------------------------------------

    def profile(self) -> tuple[dict[str, Any], Any]:
        d = self.settings
        images = self._images(d.split)
        shape = list(images.shape[1:])
        if shape != list(self.shape) or len(images) == 0:
            raise UserError(f"dataset {d.dataset!r}: split {d.split!r} holds {len(images)} "
                            f"images of shape {shape}, expected shape {list(self.shape)}")
        low, high = float(images.min()), float(images.max())
        if low < -1.0 or high > 1.0:
            raise UserError(f"dataset {d.dataset!r}: normalised values span [{low}, {high}], "
                            "outside [-1, 1]")
        info = self.builder.info
        profile = {"name": d.dataset, "kind": self.kind.name, "version": str(info.version),
                   "split": d.split,
                   "splits": {name: int(s.num_examples) for name, s in info.splits.items()},
                   "examples": int(len(images)), "shape": shape, "value_range": [low, high],
                   "raw_range": [round((low + 1) * 127.5), round((high + 1) * 127.5)],
                   "classes": self.class_names, "data_dir": str(self.builder.data_dir)}
        return profile, mlflow_dataset(images, f"{d.dataset}:{info.version}/{d.split}",
                                       source=str(self.builder.data_dir))

    def classifier_key(self) -> str:
        shipped = self.shipped_classifier()
        if shipped is not None:  # one classifier for every copy of the data
            return shipped.stem + "-shipped"
        # Keyed by the data's folder too: classifiers trained from different copies (or mocks)
        # of a dataset must never stand in for one another.
        source = str(Path(self.builder.data_dir).resolve())
        digest = hashlib.sha1(source.encode()).hexdigest()[:8]
        return f"{self.settings.dataset}-{self.builder.info.version}-v{CLASSIFIER_VERSION}-{digest}"

    def shipped_name(self) -> str | None:
        """``<dataset>-<version>-v<CLASSIFIER_VERSION>`` when ``SHIPPED`` lists this data (its
        name, version and split sizes), whether or not the file has been made; else None."""
        info = self.builder.info
        shipped = SHIPPED.get((self.settings.dataset, str(info.version)))
        if shipped is None:
            return None
        sizes = {name: int(split.num_examples) for name, split in info.splits.items()}
        if any(sizes.get(name) != n for name, n in shipped["splits"].items()):
            return None
        return f"{self.settings.dataset}-{info.version}-v{CLASSIFIER_VERSION}"

    def shipped_classifier(self) -> Path | None:
        name = self.shipped_name()
        path = SHIPPED_DIR / f"{name}.keras" if name else None
        return path if path is not None and path.is_file() else None

    def classifier_data(self) -> dict[str, Any]:
        if self.class_names is None:
            raise UserError(f"dataset {self.settings.dataset!r} has no 'label' feature: the "
                            "evaluation classifier needs a labelled image dataset; turn "
                            "training-time evaluation off with --set eval.every_epochs=0")
        return {"train": self._split("train", supervised=True),
                "test": self._split("test", supervised=True),
                "classes": self.class_names, "task": "labels",
                "data_dir": str(Path(self.builder.data_dir).resolve()),
                "dataset": self.settings.dataset, "version": str(self.builder.info.version)}

    def _check_test_split(self) -> None:
        splits = self.builder.info.splits
        if splits and "test" not in splits:  # split info is empty only for mocked data
            raise UserError(f"dataset {self.settings.dataset!r} has no 'test' split to evaluate "
                            f"against (it has {', '.join(splits.keys())}); turn training-time "
                            "evaluation off with --set eval.every_epochs=0")

    def read_reference_images(self) -> np.ndarray:
        self._check_test_split()
        return self._images("test")

    def reference_labels(self) -> np.ndarray:
        self._check_test_split()
        if getattr(self, "_reference_labels", None) is None:
            ds = self.builder.as_dataset(split="test", as_supervised=True, shuffle_files=False)
            self._reference_labels = np.concatenate(
                [y.numpy() for _, y in ds.batch(10_000)]).astype(np.int64)
        return self._reference_labels

    def floor_images(self, n: int, seed: int) -> np.ndarray:
        return self._images("train", n, seed)

    def floor_labelled(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``floor_images`` with their labels (the same draw)."""
        pairs = list(self._split("train", supervised=True).batch(10_000))
        images = np.concatenate([x.numpy() for x, _ in pairs])
        labels = np.concatenate([y.numpy() for _, y in pairs]).astype(np.int64)
        if n < len(images):
            idx = np.random.default_rng(seed).choice(len(images), n, replace=False)
            images, labels = images[idx], labels[idx]
        return images, labels

    def evaluator(self, n: int, seed: int = 0, collapse_max_share: float = 0.5):
        self._check_test_split()
        return super().evaluator(n, seed, collapse_max_share)

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.settings.dataset, "real": "test split"}


__all__ = ["TFDSImages", "image_builder", "resolve_data_dir"]
