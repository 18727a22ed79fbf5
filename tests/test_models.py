"""Architectures: shapes for every family and data shape, the seed layouts, serialisable layers."""

import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from gan_pipeline import models
from gan_pipeline.errors import UserError
from tests.helpers import TINY


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def reloaded(model):
    """``model`` saved to a .keras file and loaded back with ``safe_mode=True``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{model.name}.keras"
        model.save(path)
        return keras.models.load_model(path, safe_mode=True)


class ShapesTest(tf.test.TestCase):
    def test_every_image_family_on_every_image_shape(self):
        for family in ("mlp", "mlp_bn", "dcgan"):
            for shape in ((28, 28, 1), (32, 32, 3)):
                g, d = models.build(family, shape, **TINY[family])
                z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
                x = g(z, training=False).numpy()
                self.assertEqual(x.shape, (3, *shape), f"{family} {shape}")
                self.assertLessEqual(np.abs(x).max(), 1.0, "tanh output must stay in [-1, 1]")
                self.assertEqual(d(x, training=False).shape, (3, 1))

    def test_gaussian_1d_maps_uniform_vectors_to_vectors(self):
        g, d = models.build("gaussian_1d", (100,))
        z = np.random.default_rng(0).uniform(size=(4, 100)).astype(np.float32)
        self.assertEqual(g(z).shape, (4, 100))
        self.assertEqual(d(g(z)).shape, (4, 1))
        self.assertEqual(models.get_family("gaussian_1d").noise, "uniform")

    def test_default_architectures_follow_the_seeds(self):
        g, d = models.build("dcgan", (28, 28, 1))
        self.assertEqual(g.layers[1].units, 7 * 7 * 128)
        self.assertEqual(layer_types(g).count("UpSampling2D"), 2)
        self.assertEqual(layer_types(g).count("BatchNormalization"), 2)
        convs = [l for l in d.layers if isinstance(l, keras.layers.Conv2D)]
        self.assertEqual([(c.filters, c.strides, c.kernel_size) for c in convs],
                         [(64, (2, 2), (5, 5)), (128, (2, 2), (5, 5))])
        self.assertEqual(d.output_shape, (None, 1))
        self.assertEqual(d.layers[-1].activation.__name__, "linear", "D outputs logits")

        g, d = models.build("mlp", (28, 28, 1))
        self.assertEqual([l.units for l in g.layers if isinstance(l, keras.layers.Dense)],
                         [256, 512, 1024, 784])
        self.assertEqual([l.units for l in d.layers if isinstance(l, keras.layers.Dense)],
                         [1024, 512, 256, 1])
        self.assertEqual({l.rate for l in d.layers if isinstance(l, keras.layers.Dropout)}, {0.3})
        slopes = {l.negative_slope for l in g.layers + d.layers
                  if isinstance(l, keras.layers.LeakyReLU)}
        self.assertEqual(slopes, {0.2})

        g, d = models.build("gaussian_1d", (100,))
        dense = [l for l in g.layers if isinstance(l, keras.layers.Dense)]
        self.assertEqual([(l.units, l.activation.__name__) for l in dense],
                         [(50, "relu"), (50, "sigmoid"), (1, "linear")])
        self.assertIn("DeviationFeatures", layer_types(d))

    def test_mlp_bn_adds_batch_norm_to_the_generator_only(self):
        g, d = models.build("mlp_bn", (28, 28, 1))
        self.assertEqual(layer_types(g).count("BatchNormalization"), 3)
        self.assertNotIn("BatchNormalization", layer_types(d))
        self.assertNotIn("BatchNormalization", layer_types(models.build("mlp", (28, 28, 1))[0]))
        self.assertEqual(models.noise_for(g), "normal")

    def test_hyperparameters_change_the_models(self):
        g, _ = models.build("mlp", (28, 28, 1), latent_dim=32, g_widths=[64])
        self.assertEqual(g.input_shape, (None, 32))
        self.assertEqual([l.units for l in g.layers if isinstance(l, keras.layers.Dense)],
                         [64, 784])


class DeviationFeaturesTest(tf.test.TestCase):
    def test_values_beside_squared_deviation_from_their_vector_mean(self):
        x = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]], dtype=np.float32)
        out = models.DeviationFeatures()(x).numpy()
        self.assertAllClose(out, [[1, 2, 3, 1, 0, 1], [5, 5, 5, 0, 0, 0]])

    def test_discriminator_with_it_loads_in_safe_mode(self):
        _, d = models.build("gaussian_1d", (10,), **TINY["gaussian_1d"])
        x = np.random.default_rng(1).normal(4, 1.25, (5, 10)).astype(np.float32)
        self.assertAllClose(reloaded(d)(x), d(x))


class SortedValuesTest(tf.test.TestCase):
    def test_values_in_ascending_order_per_vector(self):
        x = np.array([[3.0, 1.0, 2.0], [0.5, -1.0, 0.0]], dtype=np.float32)
        self.assertAllClose(models.SortedValues()(x), [[1, 2, 3], [-1, 0, 0.5]])

    def test_sorted_discriminator_judges_the_draws_not_their_order(self):
        # The seed's D sees the points in order; the sorted variant sees only their values,
        # so shuffling the draws of a vector cannot change its verdict, and it still saves.
        g_seed, d_seed = models.build("gaussian_1d", (10,))
        g, d = models.build("gaussian_1d_sorted", (10,))
        self.assertEqual(layer_types(g), layer_types(g_seed))
        self.assertIn("SortedValues", layer_types(d))
        x = np.random.default_rng(2).normal(4, 1.25, (5, 10)).astype(np.float32)
        shuffled = x[:, np.random.default_rng(3).permutation(10)]
        self.assertAllClose(d(shuffled), d(x), atol=1e-6)
        self.assertNotAllClose(d_seed(shuffled), d_seed(x))
        self.assertAllClose(reloaded(d)(x), d(x))


class ModelErrorsTest(tf.test.TestCase):
    def test_unknown_family_and_hyperparameter(self):
        with self.assertRaisesRegex(UserError, r"unknown model 'dcgam'.*'dcgan'"):
            models.build("dcgam", (28, 28, 1))
        with self.assertRaisesRegex(UserError, r"unknown hyperparameter 'latent'.*latent_dim"):
            models.build("mlp", (28, 28, 1), latent=10)

    def test_dcgan_needs_sides_divisible_by_four(self):
        with self.assertRaisesRegex(UserError, r"divide by 4.*\(30, 30, 3\)"):
            models.build("dcgan", (30, 30, 3))

    def test_noise_is_recovered_from_a_generator(self):
        self.assertEqual(models.noise_for(models.build("gaussian_1d", (5,))[0]), "uniform")
        self.assertEqual(models.noise_for(models.build("mlp", (4, 4, 1), **TINY["mlp"])[0]),
                         "normal")
