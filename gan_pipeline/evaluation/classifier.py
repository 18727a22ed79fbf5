"""The evaluation classifier: a small CNN per dataset (its penultimate 128 units are the feature
space the image metrics use), cached under ``$GAN_PIPELINE_CACHE`` (default
``~/.cache/gan-pipeline``) and reused. Inception weights cannot be downloaded offline and do not
fit 28x28 digits anyway.

Where one ships with the package for exactly the data at hand (``SHIPPED_DIR``: MNIST, see
``gan_pipeline.data.tfds_images.SHIPPED``), it is copied into the cache instead of trained: every
machine then judges MNIST in the same features, as FID uses one fixed Inception network, and the
first evaluation needs no minutes of training. ``scripts/train_classifier.py`` makes those files
with ``_train`` below. Any other data trains its own the first time it is needed.

The data comes from the image source (``classifier_data``): labels where the data has them, a
self-supervised task where it has not (see ``gan_pipeline.data.folder``).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from gan_pipeline import progress

FEATURES_LAYER = "features"
CLASSIFIER_VERSION = 1  # bump when the classifier's architecture or training changes
MIN_STEPS = 1200  # small datasets train for more epochs, up to MAX_EPOCHS
MAX_EPOCHS = 60
SHIPPED_DIR = Path(__file__).parent / "shipped"  # <dataset>-<version>-v<CLASSIFIER_VERSION>.keras


def cache_dir() -> Path:
    return Path(os.environ.get("GAN_PIPELINE_CACHE") or Path.home() / ".cache" / "gan-pipeline")


def build_classifier(shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """A small CNN; its 128-unit penultimate layer is the feature space for the metrics."""
    x = keras.Input(shape, name="image")
    h = x
    for filters in (32, 64):
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Dropout(0.25)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(128, activation="relu", name=FEATURES_LAYER)(h)
    h = keras.layers.Dropout(0.4)(h)
    out = keras.layers.Dense(num_classes, activation="softmax", name="probs")(h)
    return keras.Model(x, out, name="feature_classifier")


@dataclass
class Classifier:
    model: keras.Model
    info: dict
    path: Path
    extractor: keras.Model = field(init=False)

    def __post_init__(self):
        self.extractor = keras.Model(self.model.input,
                                     [self.model.get_layer(FEATURES_LAYER).output,
                                      self.model.output])

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    def features(self, images: np.ndarray, batch_size: int = 250) -> tuple[np.ndarray, np.ndarray]:
        """Penultimate features and class probabilities of ``images``, ``batch_size`` at a time
        (the convolutions' activations of 1,000 MNIST images took ~0.27 GB more at the evaluate
        stage's peak, for the same figures and time)."""
        feats, probs = [], []
        for i in range(0, len(images), batch_size):
            f, p = self.extractor(images[i:i + batch_size], training=False)
            feats.append(np.asarray(f))
            probs.append(np.asarray(p))
        return np.concatenate(feats), np.concatenate(probs)


def feature_classifier(source, epochs: int | None = None,
                       verbose: int | str = "auto") -> Classifier:
    """The cached classifier of an image ``source``: the first time it is needed, the one that
    ships for this data (``source.shipped_classifier()``) is copied in, else one is trained
    (also when ``epochs`` asks for a training of its own).

    One writer at a time: a process that finds another one training the same classifier waits
    for it (saying so) and loads what it wrote, rather than training it a second time."""
    key = source.classifier_key()
    path = cache_dir() / "classifiers" / f"{key}.keras"
    cached = _load_cached(path, source)
    if cached is not None:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another process training the evaluation classifier for "
                  f"{source.label} ({path})", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _load_cached(path, source)  # the other process may have finished it
        if cached is not None:
            return cached
        shipped = source.shipped_classifier() if epochs is None else None
        if shipped is not None:
            return _install(shipped, path, source)
        return _train(source, path, epochs, verbose)


def _install(shipped: Path, path: Path, source) -> Classifier:
    """Copy the shipped classifier ``shipped`` (and its metadata) into the cache as ``path``,
    atomically, with the data folder it judges here; load it."""
    info = json.loads(shipped.with_suffix(".json").read_text())
    info["data_dir"] = source.classifier_data()["data_dir"]
    print(f"Evaluation classifier for {source.label}: the one shipped with gan-pipeline "
          f"(test accuracy {info['test_accuracy']:.4f}; {shipped.name}), copied to {path}",
          flush=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        shutil.copyfile(shipped, Path(tmp) / path.name)
        (Path(tmp) / path.with_suffix(".json").name).write_text(json.dumps(info, indent=2))
        os.replace(Path(tmp) / path.with_suffix(".json").name, path.with_suffix(".json"))
        os.replace(Path(tmp) / path.name, path)
    return _load_cached(path, source)


def export_shipped(classifier: Classifier, out_dir: Path, stem: str, **about) -> Path:
    """Write ``classifier`` as a file to ship: its weights in a fresh, uncompiled model (no
    optimizer state) as ``out_dir/<stem>.keras``, and its metadata plus ``about`` beside it."""
    model = build_classifier(tuple(classifier.model.input_shape[1:]),
                             int(classifier.model.output_shape[-1]))
    model.set_weights(classifier.model.get_weights())
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{stem}.keras"
    info = {**classifier.info, **about, "source": "shipped"}
    info.pop("data_dir", None)  # set to the data it judges when it is installed
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        model.save(Path(tmp) / target.name)
        (Path(tmp) / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        os.replace(Path(tmp) / "info.json", target.with_suffix(".json"))
        os.replace(Path(tmp) / target.name, target)
    return target


def _load_cached(path: Path, source) -> Classifier | None:
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    model = keras.models.load_model(path, safe_mode=True)
    info = json.loads(meta_path.read_text())
    info.setdefault("class_names", list(source.class_names or []))  # cached before v0.2
    return Classifier(model, info, path)


def _train(source, path: Path, epochs: int | None, verbose: int | str) -> Classifier:
    meta_path = path.with_suffix(".json")
    data = source.classifier_data()
    classes = list(data["classes"])
    train = data["train"].cache()
    n_train = int(train.cardinality())
    if n_train < 0:  # unknown: count once
        n_train = int(train.reduce(0, lambda n, _: n + 1))
    batch = min(128, n_train)
    if epochs is None:  # 3 passes over MNIST; more for small folders, to a similar step count
        epochs = min(MAX_EPOCHS, max(3, math.ceil(MIN_STEPS / max(1, n_train // batch))))
    print(f"Training the evaluation classifier for {source.label} (once; cached in {path})",
          flush=True)
    keras.utils.set_random_seed(0)
    model = build_classifier(source.shape, len(classes))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    shuffled = train.shuffle(20_000, seed=0).batch(batch).prefetch(tf.data.AUTOTUNE)
    model.fit(shuffled, epochs=epochs, verbose=progress.verbosity(verbose))
    _, accuracy = model.evaluate(data["test"].batch(500), verbose=0)
    info = {"dataset": data.get("dataset", source.label), "version": data.get("version", ""),
            "data_dir": data["data_dir"], "task": data["task"], "class_names": classes,
            "test_accuracy": float(accuracy), "epochs": epochs, "feature_dim": 128,
            "classes": len(classes)}
    print(f"Evaluation classifier: test accuracy {accuracy:.4f}", flush=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # atomic: write, then rename
        model.save(Path(tmp) / path.name)
        (Path(tmp) / meta_path.name).write_text(json.dumps(info, indent=2))
        os.replace(Path(tmp) / meta_path.name, meta_path)
        os.replace(Path(tmp) / path.name, path)
    return Classifier(model, info, path)


def read_info(classifier: Classifier) -> dict:
    """The classifier's metadata file as it is now (the floor figures are added to it)."""
    meta = classifier.path.with_suffix(".json")
    return json.loads(meta.read_text()) if meta.is_file() else dict(classifier.info)


def write_info(classifier: Classifier, info: dict) -> None:
    meta = classifier.path.with_suffix(".json")
    tmp = meta.with_suffix(f".json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, meta)
