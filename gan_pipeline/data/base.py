"""What every data source provides, and the parts image sources share.

A data source is opened once per process from the ``[data]`` settings and a seed, then handed
to whatever needs it: training and the tuner's trials (``batches``), pictures (``real_samples``),
the prepare stage (``profile``) and the evaluation (``evaluator``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import numpy as np
import tensorflow as tf

from gan_pipeline import kinds
from gan_pipeline.config.schema import Field, Section
from gan_pipeline.errors import UserError
from gan_pipeline.evaluation import classifier
from gan_pipeline.evaluation.images import ImageEvaluator


LABELS = ("auto", "data", "clusters")


def normalize(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def check_batch_size(batch_size, num_examples: int, what: str) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size = {batch_size!r} is not valid: expected a positive integer")
    if num_examples < batch_size:
        raise UserError(f"batch_size = {batch_size} is larger than the {num_examples} examples "
                        f"of {what}; use a batch_size <= {num_examples}")
    return batch_size


class DataSource:
    """Training data of one kind. Subclasses set the class attributes and implement
    ``examples``, ``real_samples``, ``profile`` and ``evaluator``."""

    name: ClassVar[str] = ""  # the data.dataset value it answers to
    kind: ClassVar[kinds.Kind] = kinds.IMAGES
    fields: ClassVar[dict[str, Field]] = {}  # its own data.* settings
    objective: ClassVar[str] = "frechet_distance"  # its evaluation's headline figure (lower wins)
    # what a search ranks its trials by when tune.objective is empty (lower wins)
    search_objective: ClassVar[str] = "frechet_distance"

    shape: tuple[int, ...]  # one sample: (H, W, C) or (n_points,)
    num_examples: int
    class_names: list[str] | None = None  # the labels, when the data has them

    def __init__(self, settings: Section, seed: int = 0):
        self.settings = settings
        self.seed = seed
        self._cached: dict[bool, tf.data.Dataset] = {}

    @property
    def label(self) -> str:
        """How messages name this data (``mnist:train``, ``folder /data/faces``)."""
        return self.settings.dataset

    def examples(self) -> tf.data.Dataset:
        """The unbatched samples as this source keeps them (images uint8): what ``batches``
        caches and shuffles; ``to_model`` scales them batch by batch."""
        raise NotImplementedError

    def labelled_examples(self) -> tf.data.Dataset:
        """The unbatched ``(sample, label)`` pairs, samples as in ``examples``, labels int32
        indices into ``class_names`` (sources with labels)."""
        raise UserError(f"{self.label} has no labels")

    def to_model(self, samples: tf.Tensor) -> tf.Tensor:
        """A batch of ``examples`` in the range the networks see (images in [-1, 1])."""
        return samples

    def require_labels(self, what: str) -> list[str]:
        """``class_names``, or a ``UserError`` saying that ``what`` needs labelled data."""
        if not self.class_names or len(self.class_names) < 2:
            raise UserError(f"{what} needs labelled data (at least two classes), but "
                            f"{self.label} has no labels; use a labelled TFDS dataset (one with "
                            "a 'label' feature) or a folder with one subfolder per class")
        return list(self.class_names)

    def class_shares(self) -> list[float]:
        """Each class's share of the training samples, in label order."""
        labels = np.concatenate([y.numpy() for _, y in self.labelled_examples().batch(10_000)])
        counts = np.bincount(labels, minlength=len(self.class_names))
        return [float(c) for c in counts / counts.sum()]

    def batches(self, batch_size: int, labels: bool = False) -> tf.data.Dataset:
        """Shuffled (by the seed), batched, prefetched training batches of ``batch_size`` (the
        global batch under any strategy): samples in the networks' range, or ``(samples, labels)``
        with ``labels``. The samples are cached once per source as the source keeps them (MNIST:
        47 MB of uint8 where float32 would take 188 MB, and as much again in the shuffle
        buffer) and scaled after batching. Each call starts its own shuffle, so the order of a
        fresh call is the same for the same seed, whatever ran before it in this process."""
        check_batch_size(batch_size, self.num_examples, self.label)
        if labels not in self._cached:
            ds = self.labelled_examples() if labels else self.examples()
            self._cached[labels] = ds.cache() if self.settings.cache else ds
        ds = self._cached[labels].shuffle(self.settings.shuffle_buffer, seed=self.seed,
                                          reshuffle_each_iteration=True)
        # Multi-worker training shards by DATA: every worker builds the same seeded stream of
        # global batches and keeps its own part of each (tf.data's default, by FILE, fails on
        # one-file datasets such as MNIST and on generated data).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.batch(batch_size, drop_remainder=True).with_options(options)
        scale = ((lambda x, y: (self.to_model(x), y)) if labels else self.to_model)
        # (plain TensorFlow ops: no AutoGraph, whose converted copies are files in TMPDIR that
        # a killed process leaves behind)
        ds = ds.map(tf.autograph.experimental.do_not_convert(scale),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)

    def real_samples(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` real samples (normalised) for pictures and comparisons."""
        raise NotImplementedError

    def profile(self) -> tuple[dict[str, Any], Any]:
        """What the prepare stage records: a JSON-ready profile and an MLflow dataset."""
        raise NotImplementedError

    def evaluator(self, n: int, seed: int = 0, collapse_max_share: float = 0.5):
        """The ``gan_pipeline.evaluation.Evaluator`` that judges generators of this data."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """What identifies the data's contents beyond its settings (a folder's files), so that
        a pipeline stage on changed data is not reused; empty when the settings say it all."""
        return ""

    def spec(self) -> dict[str, Any]:
        """The data settings saved inside generators, so that ``evaluate`` can find them."""
        return self.settings.to_dict()


class ImageSource(DataSource):
    """Images, judged in the features of a classifier trained on this data (see
    ``gan_pipeline.evaluation.images``). Subclasses provide the classifier's data and the real
    images generated ones are compared with."""

    kind = kinds.IMAGES
    objective = "frechet_distance"
    # FD over recall (metrics.fd_over_recall): a short trial's FD alone rewards a G that drops
    # modes (issue 29: the cGAN search's pick had recall 0.2 within a class)
    search_objective = "fd_over_recall"
    # What a family that trains on labels is told (``gan_pipeline.data.clusters``); every image
    # source has these settings, beside its own.
    fields = {
        "labels": Field(str, "auto", choices=lambda: list(LABELS),
                        help="what families that train on labels learn from: 'auto' (the data's "
                             "labels, else k-means clusters of the images), 'data' (its labels "
                             "only) or 'clusters' (clusters even when it has labels)"),
        "clusters": Field(int, 50, min=2, max=1000,
                          help="how many k-means clusters stand in for labels (at most one per "
                               "20 images)"),
    }

    def __init__(self, settings: Section, seed: int = 0):
        super().__init__(settings, seed)
        self._classifier = None
        self._reference_images: np.ndarray | None = None
        self._reference: tuple[np.ndarray, np.ndarray] | None = None

    def to_model(self, samples: tf.Tensor) -> tf.Tensor:
        return normalize(samples)

    # -- what the evaluation needs; see gan_pipeline.evaluation.classifier ---------------------

    def classifier_key(self) -> str:
        """Names the cached classifier: equal keys must mean the same data."""
        raise NotImplementedError

    def classifier_data(self) -> dict[str, Any]:
        """``{"train": ds, "test": ds, "classes": names, "task": str}``: unbatched (image, label)
        datasets for the classifier, and what its labels are."""
        raise NotImplementedError

    def shipped_classifier(self) -> Path | None:
        """The ``.keras`` file of a classifier that ships with the package for exactly this
        data (``evaluation.classifier.SHIPPED_DIR``), used instead of training one; None when
        there is none."""
        return None

    def reference_images(self) -> np.ndarray:
        """The real images generated ones are compared with (e.g. the test split), read once."""
        if self._reference_images is None:
            self._reference_images = self.read_reference_images()
        return self._reference_images

    def read_reference_images(self) -> np.ndarray:
        raise NotImplementedError

    def reference_labels(self) -> np.ndarray:
        """The labels of ``reference_images`` (labelled data), for per-class figures."""
        raise NotImplementedError

    def floor_images(self, n: int, seed: int) -> np.ndarray:
        """Real images outside the reference, for the real-vs-real floor."""
        raise NotImplementedError

    def classifier(self, epochs: int | None = None, verbose: int | str = "auto"):
        """The evaluation classifier of this data (trained once, cached on disk)."""
        if self._classifier is None:
            self._classifier = classifier.feature_classifier(self, epochs=epochs,
                                                             verbose=verbose)
        return self._classifier

    def reference_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Features and class probabilities of the reference images (computed once)."""
        if self._reference is None:
            self._reference = self.classifier().features(self.reference_images())
        return self._reference

    def evaluator(self, n: int, seed: int = 0, collapse_max_share: float = 0.5):
        return ImageEvaluator(self, n, seed, collapse_max_share)


def mlflow_dataset(values: np.ndarray, name: str, source: str | None = None):
    """``values`` as an MLflow dataset (what the prepare stage logs as its input)."""
    with warnings.catch_warnings():  # MLflow registers its local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.data.from_numpy(values, source=source, name=name)


def images_of(ds: tf.data.Dataset) -> np.ndarray:
    """A dataset of normalised images as one float32 array."""
    batches = [b.numpy() for b in ds.batch(2000)]
    return np.concatenate(batches) if batches else np.zeros((0,), np.float32)
