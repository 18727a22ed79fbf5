"""Labels for data without them: k-means clusters of the images (``gan_pipeline.data.clusters``),
and the labelled families training on them, a folder of unlabelled images included."""

import contextlib
import json
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from gan_pipeline import config, data, kinds
from gan_pipeline.data.clusters import Clustered, kmeans, pixel_features
from gan_pipeline.errors import UserError
from gan_pipeline.factory import gan_for
from tests.helpers import REPO, TINY, TempWorkdir
from tests.test_cli import only_run, run_cli
from tests.test_folder import gray_labelled, rgb_unlabelled, write_image


def two_looks(root: Path, per_look=30) -> Path:
    """An unlabelled folder of two kinds of picture mixed at the top level: faint patterns on
    black, and the same on white."""
    rng = np.random.default_rng(3)
    for i in range(per_look):
        for look, base, sign in (("dark", 0.0, 1.0), ("bright", 255.0, -1.0)):
            path = root / f"{look}{i:03d}.png"
            write_image(path, rng, (16, 16), 1)
            pattern = np.asarray(Image.open(path), np.float32) * 0.15
            Image.fromarray((base + sign * pattern).astype(np.uint8)).save(path)
    return root


def quiet(fn, *args):
    out = io.StringIO()
    with contextlib.redirect_stderr(out):
        result = fn(*args)
    return result, out.getvalue()


class KMeansTest(tf.test.TestCase):
    def test_separated_groups_are_found_numbered_by_size(self):
        rng = np.random.default_rng(0)
        centres = [(0, 0), (8, 8), (0, 8)]
        sizes = [50, 120, 80]
        x = np.concatenate([rng.normal(c, 0.3, (n, 2)) for c, n in zip(centres, sizes)])
        truth = np.repeat([0, 1, 2], sizes)
        labels = kmeans(x, 3, seed=1)
        self.assertEqual(labels.dtype, np.int32)
        self.assertEqual(np.bincount(labels).tolist(), [120, 80, 50])  # 0 is the largest
        for group in range(3):  # each true group lands in one cluster, whole
            self.assertLen(set(labels[truth == group]), 1)
        self.assertAllEqual(labels, kmeans(x, 3, seed=1))  # seeded

    def test_no_cluster_is_left_empty(self):
        x = np.concatenate([np.zeros((20, 2)), np.ones((3, 2))])  # few distinct points
        labels = kmeans(x, 5, seed=0)
        self.assertEqual(sorted(set(labels.tolist())), [0, 1, 2, 3, 4])

    def test_pixel_features_downsample_large_images(self):
        images = np.random.default_rng(0).integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
        feats = pixel_features(images, dims=10)
        self.assertEqual(feats.shape, (40, 10))
        self.assertEqual(feats.dtype, np.float32)
        self.assertAllClose(feats.mean(axis=0), np.zeros(10), atol=1e-4)


class ClusteredSourceTest(tf.test.TestCase):
    def test_a_labelled_family_on_an_unlabelled_folder_trains_on_clusters(self):
        with tempfile.TemporaryDirectory() as tmp:
            folder = two_looks(Path(tmp) / "looks")
            cfg = config.validate({"data": {"dataset": "folder", "path": str(folder),
                                            "clusters": 2},
                                   "model": {"name": "labelled_dcgan"}})
            source, said = quiet(data.open_source, cfg)
            self.assertIsInstance(source, Clustered)
            self.assertLen(said.strip().splitlines(), 1)  # says so in one line
            self.assertIn("has no labels", said)
            self.assertIn("2 k-means clusters", said)
            self.assertEqual(source.class_names, ["cluster 0", "cluster 1"])
            pairs = list(source.labelled_examples())
            images = np.stack([x.numpy() for x, _ in pairs]).astype(np.float32)
            labels = np.array([int(y) for _, y in pairs])
            brightness = images.mean(axis=(1, 2, 3))
            # the two looks are the two clusters: every dark image in one, every bright in the
            # other
            dark = brightness < np.median(brightness)
            self.assertLen(set(labels[dark]), 1)
            self.assertLen(set(labels[~dark]), 1)
            self.assertNotEqual(labels[dark][0], labels[~dark][0])
            self.assertEqual(source.class_shares(), [0.5, 0.5])
            # the rest is the folder's own: samples, shape, evaluation's data
            self.assertEqual(source.shape, (16, 16, 1))
            self.assertEqual(source.num_examples, 60)
            self.assertEqual(source.spec(), source.source.spec())
            self.assertIsNone(source.source.class_names)

    def test_labelled_data_keeps_its_labels_unless_clusters_are_asked_for(self):
        with tempfile.TemporaryDirectory() as tmp:
            folder = gray_labelled(Path(tmp) / "shapes", per_class=30)
            base = {"dataset": "folder", "path": str(folder)}
            cfg = config.validate({"data": base, "model": {"name": "labelled_dcgan"}})
            source, said = quiet(data.open_source, cfg)
            self.assertNotIsInstance(source, Clustered)
            self.assertEqual(said, "")
            self.assertEqual(source.class_names, ["circles", "lines"])
            cfg = config.validate({"data": {**base, "labels": "clusters", "clusters": 3},
                                   "model": {"name": "labelled_dcgan"}})
            source, said = quiet(data.open_source, cfg)
            self.assertIsInstance(source, Clustered)
            self.assertIn("data.labels = 'clusters'", said)
            self.assertLen(source.class_shares(), 3)
            # the default 50 clusters, on 60 images: at most one per 20 images, said as such
            cfg = config.validate({"data": {**base, "labels": "clusters"},
                                   "model": {"name": "labelled_dcgan"}})
            source, said = quiet(data.open_source, cfg)
            self.assertIn("trains on 3 k-means clusters", said)
            self.assertLen(source.class_shares(), 3)
            # an unconditional family is not told about labels at all
            cfg = config.validate({"data": {**base, "labels": "clusters"},
                                   "model": {"name": "dcgan"}})
            self.assertNotIsInstance(quiet(data.open_source, cfg)[0], Clustered)

    def test_a_class_conditional_family_still_needs_real_labels(self):
        with tempfile.TemporaryDirectory() as tmp:
            folder = rgb_unlabelled(Path(tmp) / "photos", n=8)
            cfg = config.validate({"data": {"dataset": "folder", "path": str(folder)},
                                   "model": {"name": "cdcgan"}})
            with self.assertRaisesRegex(UserError, "needs labelled data"):
                data.open_source(cfg)

    def test_bad_label_settings_are_errors_naming_the_allowed_values(self):
        with self.assertRaisesRegex(UserError, "data.labels .*'auto', 'data', 'clusters'"):
            config.validate({"data": {"labels": "kmeans"}})
        with self.assertRaisesRegex(UserError, "data.clusters"):
            config.validate({"data": {"clusters": 1}})

    def test_the_saved_generator_samples_without_labels(self):
        with tempfile.TemporaryDirectory() as tmp:
            folder = two_looks(Path(tmp) / "looks", per_look=8)
            cfg = config.validate({"data": {"dataset": "folder", "path": str(folder),
                                            "clusters": 2},
                                   "model": {"name": "labelled_dcgan",
                                             **TINY["labelled_dcgan"]},
                                   "train": {"fake_labels": "data"}})
            source, _ = quiet(data.open_source, cfg)
            gan = gan_for(cfg, source)
            self.assertEqual(gan.num_classes, 2)
            exported = gan.exported
            self.assertIsNone(kinds.spec_of(exported)["class_names"])
            self.assertLen(exported.inputs, 1)  # noise alone
            z = np.random.default_rng(0).standard_normal((6, *exported.inputs[0].shape[1:]))
            self.assertEqual(tuple(exported(z.astype("float32")).shape), (6, 16, 16, 1))


@pytest.mark.integration
class UnlabelledFolderTrainingTest(tf.test.TestCase):
    def test_the_shipped_dcgan_file_trains_unlabelled_rgb_with_only_data_set(self):
        """The shipped labelled DCGAN file, its networks as they are, on a folder of 32x32 RGB
        images without labels: it says it trains on clusters, trains, and its generator makes
        32x32 RGB images without being given a label."""
        with TempWorkdir() as work:
            folder = rgb_unlabelled(work.path / "rgb", n=64, size=(32, 32))
            code, out, err = run_cli(
                "train", "--config", REPO / "pipelines" / "mnist_dcgan.toml",
                "--set", "data.dataset=folder", "--set", f"data.path={folder}",
                # the length of the run only: a couple of steps, no per-epoch evaluation
                "--set", "epochs=1", "--set", "batch_size=16", "--set", "train.steps_per_epoch=2",
                "--set", "eval.every_epochs=0", "--set", "train.standing_statistics=32")
            self.assertEqual(code, 0, err)
            notes = [line for line in err.splitlines() if "k-means clusters" in line]
            self.assertLen(notes, 1)
            self.assertIn("has no labels", notes[0])
            _, run = only_run(work.uri, "mnist_dcgan")
            self.assertEqual(run.data.params["resolved.labels"], "k-means clusters")
            # 64 images: 3 clusters (one per 20 at most); G trains on 100 noise values, the
            # saved generator takes one more, from which it draws its cluster
            self.assertEqual(run.data.params["resolved.classes"], "3")
            self.assertEqual(run.data.params["resolved.latent_shape"], "[100]")
            self.assertEqual(run.data.params["resolved.sample_noise_shape"], "[101]")
            generators = list(work.path.glob("mlruns/**/generator.keras"))
            self.assertNotEmpty(generators)
            code, out, err = run_cli("sample", "--model", generators[0], "--n", "4",
                                     "--out", work.path / "s.npy")
            self.assertEqual(code, 0, err)
            samples = np.load(work.path / "s.npy")
            self.assertEqual(samples.shape, (4, 32, 32, 3))
            self.assertAllInRange(samples, -1.0, 1.0)
            # evaluate's stdout is its JSON alone: the clusters' note goes to stderr
            code, out, err = run_cli("evaluate", "--model", run.info.run_id, "--n", "60")
            self.assertEqual(code, 0, err)
            self.assertEqual(json.loads(out)["dataset"], "folder")
            self.assertIn("k-means clusters", err)


if __name__ == "__main__":
    tf.test.main()
