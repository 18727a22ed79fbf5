"""Evaluation: quality figures for a generator against the data it was trained to imitate.

Image generators are judged in the feature space of a small CNN trained on the dataset's own train
split (Inception weights cannot be downloaded offline and do not fit 28x28 digits anyway). The
classifier is trained once per dataset and version, cached under ``$GAN_PIPELINE_CACHE`` (default
``~/.cache/gan-pipeline``), and reused. Generated samples are compared with the test split; the
same figures for a train-split subset against the test split give the real-vs-real floor.

1-D generators are judged against the exact N(mean, std): moments, KS and Wasserstein-1.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from gan_pipeline import data as data_mod
from gan_pipeline import metrics
from gan_pipeline.errors import UserError

FEATURES_LAYER = "features"
CLASSIFIER_VERSION = 1  # bump when the classifier's architecture or training changes


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


def _labelled(builder, split: str, batch_size: int, shuffle: bool) -> tf.data.Dataset:
    ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    ds = ds.map(lambda image, label: (data_mod.normalize(image), label),
                num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        ds = ds.shuffle(20_000, seed=0)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _images(builder, split: str, n: int | None = None, seed: int = 0) -> np.ndarray:
    """All (or a seeded random ``n``) normalised images of a split, as one array."""
    images = data_mod.split_images(builder, split)
    if n is not None and n < len(images):
        images = images[np.random.default_rng(seed).choice(len(images), n, replace=False)]
    return images


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

    def features(self, images: np.ndarray, batch_size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        for i in range(0, len(images), batch_size):
            f, p = self.extractor(images[i:i + batch_size], training=False)
            feats.append(np.asarray(f))
            probs.append(np.asarray(p))
        return np.concatenate(feats), np.concatenate(probs)


def feature_classifier(dataset: str, data_dir: str | None = None, download: bool = True,
                       epochs: int = 3, verbose: int | str = "auto") -> Classifier:
    """The cached classifier of ``dataset``; trained on its train split the first time."""
    builder = data_mod.image_builder(dataset, data_dir, download)
    if "label" not in builder.info.features.keys():
        raise UserError(f"dataset {dataset!r} has no 'label' feature: the evaluation classifier "
                        "needs a labelled image dataset; turn training-time evaluation off with "
                        "--set eval.every_epochs=0")
    # Keyed by the data's folder too: classifiers trained from different copies (or mocks) of a
    # dataset must never stand in for one another.
    source = str(Path(builder.data_dir).resolve())
    digest = hashlib.sha1(source.encode()).hexdigest()[:8]
    key = f"{dataset}-{builder.info.version}-v{CLASSIFIER_VERSION}-{digest}"
    path = cache_dir() / "classifiers" / f"{key}.keras"
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        model = keras.models.load_model(path, safe_mode=True)
        return Classifier(model, json.loads(meta_path.read_text()), path)

    print(f"Training the evaluation classifier for {dataset} (once; cached in {path})", flush=True)
    shape = tuple(builder.info.features["image"].shape)
    num_classes = builder.info.features["label"].num_classes
    keras.utils.set_random_seed(0)
    model = build_classifier(shape, num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    test = _labelled(builder, "test", 500, shuffle=False)
    model.fit(_labelled(builder, "train", 128, shuffle=True), epochs=epochs, verbose=verbose)
    _, accuracy = model.evaluate(test, verbose=0)
    info = {"dataset": dataset, "version": str(builder.info.version), "data_dir": source,
            "test_accuracy":
            float(accuracy), "epochs": epochs, "feature_dim": 128, "classes": num_classes}
    print(f"Evaluation classifier: test accuracy {accuracy:.4f}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # atomic: write, then rename
        model.save(Path(tmp) / path.name)
        os.replace(Path(tmp) / path.name, path)
    meta_path.write_text(json.dumps(info, indent=2))
    return Classifier(model, info, path)


class ImageEvaluator:
    """Scores image samples against the test split of ``dataset`` in classifier features."""

    def __init__(self, dataset: str, data_dir: str | None = None, download: bool = True):
        self.dataset = dataset
        self.builder = data_mod.image_builder(dataset, data_dir, download)
        splits = self.builder.info.splits
        if splits and "test" not in splits:  # split info is empty only for mocked data
            raise UserError(f"dataset {dataset!r} has no 'test' split to evaluate against (it "
                            f"has {', '.join(splits.keys())}); turn training-time evaluation "
                            "off with --set eval.every_epochs=0")
        self.shape = tuple(self.builder.info.features["image"].shape)
        self.classifier = feature_classifier(dataset, data_dir, download)
        self.real_images = _images(self.builder, "test")
        self.real_features, self.real_probs = self.classifier.features(self.real_images)

    def evaluate(self, samples: np.ndarray, seed: int = 0, manifold: bool = True) -> dict:
        """Figures for ``samples`` (N, H, W, C) in [-1, 1] against the test split.

        Frechet distance and KID use all test images; precision/recall and density/coverage use
        an equally sized random subset of them (the k-NN metrics assume equal sample counts).
        """
        feats, probs = self.classifier.features(samples)
        kid, kid_se = metrics.kernel_inception_distance(self.real_features, feats, seed=seed)
        hist = metrics.class_histogram(probs)
        out = {
            "n": int(len(samples)),
            "frechet_distance": metrics.frechet_distance(self.real_features, feats),
            "kid": kid, "kid_stderr": kid_se,
            "classifier_score": metrics.classifier_score(probs),
            "class_min_share": float(hist.min()), "class_max_share": float(hist.max()),
            "class_histogram": [round(float(h), 5) for h in hist],
        }
        if manifold:
            rng = np.random.default_rng(seed)
            idx = rng.choice(len(self.real_features), min(len(feats), len(self.real_features)),
                             replace=False)
            real = self.real_features[idx]
            out["precision"], out["recall"] = metrics.precision_recall(real, feats, k=3)
            out["density"], out["coverage"] = metrics.density_coverage(real, feats, k=5)
        return out

    def floor(self, n: int = 10_000, seed: int = 0) -> dict:
        """The same figures for ``n`` real train images: what a perfect generator would get."""
        meta_path = self.classifier.path.with_suffix(".json")
        info = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        key = f"floor_n{n}_seed{seed}"
        if key not in info:
            info[key] = self.evaluate(_images(self.builder, "train", n, seed), seed=seed)
            if meta_path.is_file():
                meta_path.write_text(json.dumps(info, indent=2))
        return info[key]


def evaluate_1d(samples: np.ndarray, mean: float, std: float, n_points: int = 10_000) -> dict:
    """Figures for 1-D samples against the exact N(mean, std), on ``n_points`` values."""
    values = np.ravel(samples)[:n_points]
    return metrics.gaussian_fit(values, mean, std)


def objective_name(cfg: dict) -> str:
    """The headline figure for ``cfg``'s data (lower is better): the KS statistic for the 1-D
    GAN, the Frechet distance for images. Searches minimise it; the registry compares it."""
    return "ks" if cfg["data"]["dataset"] == data_mod.GAUSSIAN_1D else "frechet_distance"


class GeneratorEvaluator:
    """Judges generators for the data a validated config trains on: ``evaluator(generator)``.

    Samples come from a fixed noise seed, so successive calls measure the generator, not the
    noise. ``n`` counts samples (images) or values (1-D); it defaults to ``eval.n_samples``.
    """

    def __init__(self, cfg: dict, n: int | None = None, seed: int | None = None):
        self.data = cfg["data"]
        self.collapse_max_share = cfg["eval"]["collapse_max_share"]
        self.n = n or cfg["eval"]["n_samples"]
        self.seed = cfg["seed"] if seed is None else seed
        self.one_d = self.data["dataset"] == data_mod.GAUSSIAN_1D
        self.images = None if self.one_d else ImageEvaluator(
            self.data["dataset"], self.data["data_dir"] or None, self.data["download"])

    def __call__(self, generator: keras.Model) -> dict:
        from gan_pipeline import sampling

        d = self.data
        if self.one_d:
            vectors = -(-self.n // d["n_points"])  # ceil
            samples = sampling.sample(generator, vectors, self.seed)
            return evaluate_1d(samples, d["mean"], d["std"], self.n)
        produced = tuple(generator.output_shape[1:])
        if produced != self.images.shape:
            raise UserError(f"the generator makes {produced} samples but {self.data['dataset']} "
                            f"images are {self.images.shape}; name its dataset with "
                            "--set data.dataset=... (or --config)")
        return self.images.evaluate(sampling.sample(generator, self.n, self.seed), seed=self.seed)

    def collapse(self, figures: dict) -> str | None:
        """A message when ``figures`` show mode collapse, else None.

        Images: one predicted class holds more than ``eval.collapse_max_share`` of the samples.
        1-D: the generated values spread less than a tenth of the real std.
        """
        if self.one_d:
            if figures["std"] < 0.1 * self.data["std"]:
                return (f"generated std {figures['std']:.4f} is under a tenth of the real "
                        f"{self.data['std']}: the generator collapsed toward a point")
            return None
        share = figures["class_max_share"]
        if share > self.collapse_max_share:
            top = int(np.argmax(figures["class_histogram"]))
            return (f"{share:.0%} of generated samples are classified as class {top} (limit "
                    f"{self.collapse_max_share:.0%}): mode collapse")
        return None

    def floor(self) -> dict:
        """The figures real data gets: a train subset (images) or exact draws (1-D)."""
        if self.one_d:
            rng = np.random.default_rng(self.seed + 1)
            real = rng.normal(self.data["mean"], self.data["std"], self.n)
            return evaluate_1d(real, self.data["mean"], self.data["std"], self.n)
        return self.images.floor(n=10_000, seed=self.seed)

    def report(self, generator: keras.Model, model: str) -> dict:
        """The full evaluation of ``generator`` (named ``model``) as one JSON-ready dict: the
        settings, the figures and the real-vs-real floor beside them."""
        return {"model": model, "n": self.n, "seed": self.seed, **self.describe(),
                "figures": self(generator), "real_vs_real_floor": self.floor()}

    def describe(self) -> dict:
        if self.one_d:
            return {"dataset": data_mod.GAUSSIAN_1D, "mean": self.data["mean"],
                    "std": self.data["std"]}
        return {"dataset": self.data["dataset"], "real": "test split",
                "classifier": self.images.classifier.info | {"path": str(self.images.classifier
                                                                         .path)}}
