"""Data sources: values in [-1, 1], shapes per dataset, seeded order, 1-D moments, clear errors."""

import os
import socket
import tempfile
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from gan_pipeline import config, data, visualize
from gan_pipeline.data import tfds_images
from gan_pipeline.errors import UserError
from tests.helpers import free_port, real_tfds_dir


def open_data(dataset="mnist", seed=0, **settings):
    """The source ``data.dataset = dataset`` with ``settings``, as a pipeline would open it."""
    model = "gaussian_1d" if dataset == "gaussian_1d" else "mlp"
    cfg = config.validate({"seed": seed, "data": {"dataset": dataset, **settings},
                           "model": {"name": model}})
    return data.open_source(cfg)


def first_batch(source, batch_size=16):
    return next(iter(source.batches(batch_size))).numpy()


class NormalizeTest(tf.test.TestCase):
    def test_uint8_maps_onto_minus_one_to_one(self):
        x = data.normalize(tf.constant([0, 127, 128, 255], dtype=tf.uint8)).numpy()
        self.assertEqual(x.dtype, np.float32)
        self.assertAllClose(x, [-1.0, -0.00392157, 0.00392157, 1.0])

    def test_denormalize_inverts_normalize(self):
        pixels = np.arange(256, dtype=np.uint8)
        self.assertAllEqual(visualize.denormalize(data.normalize(pixels).numpy()), pixels)


class TFDSImagesTest(tf.test.TestCase):
    """Any TFDS image dataset by name, mocked (random images with the real features)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp()

    def load(self, name, seed=0):
        # Under mock_data, download_and_prepare is a no-op, so download=True never touches the net.
        return open_data(name, seed=seed, data_dir=self.tmp, shuffle_buffer=64)

    def test_batches_are_float32_in_range_with_the_dataset_shape(self):
        expected = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "kmnist": (28, 28, 1),
                    "cifar10": (32, 32, 3)}
        with tfds.testing.mock_data(num_examples=64):
            for name, shape in expected.items():
                source = self.load(name)
                batch = first_batch(source)
                self.assertEqual(source.shape, shape)
                self.assertEqual(batch.shape, (16, *shape))
                self.assertEqual(batch.dtype, np.float32)
                self.assertGreaterEqual(batch.min(), -1.0)
                self.assertLessEqual(batch.max(), 1.0)
                self.assertGreater(batch.std(), 0.1, "images should not be constant")
                self.assertLen(source.class_names, 10)

    def test_order_is_reproducible_for_a_seed(self):
        with tfds.testing.mock_data(num_examples=64):
            source = self.load("mnist", seed=3)
            a = first_batch(source)
            b = first_batch(self.load("mnist", seed=3))
            c = first_batch(self.load("mnist", seed=4))
            again = first_batch(source)  # a second stream of the same source starts the same
        self.assertAllEqual(a, b)
        self.assertAllEqual(a, again)
        self.assertNotAllClose(a, c)

    def test_images_are_kept_as_uint8_and_scaled_after_batching(self):
        # A quarter of the memory in the cache and the shuffle buffer, same batches: a batch is
        # the stored images, in the shuffled order, each scaled as normalize() scales it.
        with tfds.testing.mock_data(num_examples=64):
            source = self.load("mnist")
            self.assertEqual(source.examples().element_spec.dtype, tf.uint8)
            self.assertEqual(source.labelled_examples().element_spec[0].dtype, tf.uint8)
            stored = np.stack([x.numpy() for x in source.examples()])
            images, labels = next(iter(source.batches(16, labels=True)))
        self.assertEqual(images.dtype, tf.float32)
        found = [np.flatnonzero((stored == x).all(axis=(1, 2, 3)))
                 for x in np.rint((images.numpy() + 1) * 127.5).astype(np.uint8)]
        self.assertTrue(all(len(f) for f in found), "every image is one of the stored ones")
        self.assertAllEqual(images, data.normalize(stored[[f[0] for f in found]]))
        self.assertEqual(labels.dtype, tf.int32)

    def test_batch_size_larger_than_the_data_is_an_error(self):
        with tfds.testing.mock_data(num_examples=8):
            with self.assertRaisesRegex(UserError, "batch_size = 16 is larger than the 8"):
                first_batch(self.load("mnist"))


class DataErrorsTest(tf.test.TestCase):
    def test_unknown_dataset_suggests_close_names(self):
        with self.assertRaisesRegex(UserError, r"unknown dataset 'mnsit'.*Did you mean 'mnist'"):
            open_data("mnsit")
        with self.assertRaisesRegex(UserError, r"Did you mean 'folder'"):
            open_data("foldr")

    def test_dataset_without_image_feature(self):
        with self.assertRaisesRegex(UserError, r"'imdb_reviews' has no 'image' feature"):
            open_data("imdb_reviews")

    def test_non_positive_batch_size(self):
        source = open_data("gaussian_1d", num_examples=64, n_points=5)
        for bad in (0, -1):
            with self.assertRaisesRegex(UserError, f"batch_size = {bad} is not valid"):
                source.batches(bad)

    def test_unprepared_dataset_offline_names_dataset_and_directory(self):
        with tempfile.TemporaryDirectory() as empty:
            with self.assertRaises(UserError) as ctx:
                open_data("fashion_mnist", data_dir=empty, download=False)
            message = str(ctx.exception)
            self.assertIn("'fashion_mnist' is not prepared in " + empty, message)
            self.assertIn("TFDS_DATA_DIR", message)
            self.assertEqual(os.listdir(empty), [], "nothing may be left half-written")

    def test_unprepared_dataset_without_network_fails_at_once(self):
        """With downloads allowed but no network, the error comes before TFDS' download (which
        retries each file with back-off for minutes), names the dataset and the fix, and leaves
        nothing behind. The probe is pointed at a local port that nothing listens on."""
        closed = ("127.0.0.1", free_port())
        with tempfile.TemporaryDirectory() as empty, \
                mock.patch.object(tfds_images, "PROBE_HOST", closed), \
                mock.patch.dict(os.environ, {k: "" for k in ("HTTPS_PROXY", "https_proxy",
                                                            "HTTP_PROXY", "http_proxy",
                                                            "ALL_PROXY", "all_proxy")}), \
                mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare") as download:
            with self.assertRaisesRegex(UserError, "'fashion_mnist' is not prepared in "
                                        + empty + ", and this machine has no network"):
                open_data("fashion_mnist", data_dir=empty, download=True)
            download.assert_not_called()
            self.assertEqual(os.listdir(empty), [], "nothing may be left half-written")

    def test_the_network_probe_sees_a_listening_host(self):
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with mock.patch.object(tfds_images, "PROBE_HOST", server.getsockname()), \
                    mock.patch.dict(os.environ, {"HTTPS_PROXY": "", "https_proxy": "",
                                                 "HTTP_PROXY": "", "http_proxy": "",
                                                 "ALL_PROXY": "", "all_proxy": ""}):
                self.assertTrue(tfds_images.network_reachable(timeout=5.0))

    def test_tfds_data_dir_is_honoured(self):
        with tempfile.TemporaryDirectory() as empty:
            old = os.environ.get("TFDS_DATA_DIR")
            os.environ["TFDS_DATA_DIR"] = empty
            try:
                self.assertEqual(data.resolve_data_dir(None), empty)
                with self.assertRaisesRegex(UserError, "not prepared in " + empty):
                    open_data("kmnist", download=False)
            finally:
                if old is None:
                    del os.environ["TFDS_DATA_DIR"]
                else:
                    os.environ["TFDS_DATA_DIR"] = old


class GaussianSourceTest(tf.test.TestCase):
    def test_vectors_of_n_points_from_the_configured_normal(self):
        source = open_data("gaussian_1d", seed=1, n_points=100, mean=4.0, std=1.25,
                           num_examples=1000)
        values = np.concatenate([b.numpy() for b in source.batches(50)])
        self.assertEqual(source.shape, (100,))
        self.assertEqual(values.shape, (1000, 100))
        self.assertAllClose(values.mean(), 4.0, atol=0.02)
        self.assertAllClose(values.std(), 1.25, atol=0.02)
        self.assertIsNone(source.class_names)

    def test_mean_std_and_n_points_are_configurable(self):
        source = open_data("gaussian_1d", n_points=7, mean=-2.0, std=0.5, num_examples=2000)
        values = np.concatenate([b.numpy() for b in source.batches(10)])
        self.assertEqual(values.shape[1], 7)
        self.assertAllClose(values.mean(), -2.0, atol=0.03)
        self.assertAllClose(values.std(), 0.5, atol=0.03)
        real = source.real_samples(500)
        self.assertEqual(real.shape, (500, 7))
        self.assertAllClose(real.mean(), -2.0, atol=0.03)


@pytest.mark.slow
class RealMnistDataTest(tf.test.TestCase):
    def test_real_mnist_offline_is_normalised(self):
        data_dir = real_tfds_dir(self)
        source = open_data("mnist", data_dir=data_dir, download=False)
        self.assertEqual(source.num_examples, 60_000)
        batch = first_batch(source, 256)
        self.assertEqual(batch.shape, (256, 28, 28, 1))
        self.assertEqual((batch.min(), batch.max()), (-1.0, 1.0))
