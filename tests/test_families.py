"""Families: shapes for every family and data shape, the seed layouts, serialisable layers, and
a new family plugged in through its registry entry alone."""

import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from unittest import mock

from gan_pipeline import config, families, kinds
from gan_pipeline.errors import UserError
from gan_pipeline.factory import build_gan
from gan_pipeline.families.common import ByteDropout, MinibatchStd, SpectralNorm
from gan_pipeline.families.gaussian_1d import DeviationFeatures, SortedValues
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
                g, d = families.build(family, shape, **TINY[family])
                z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
                x = g(z, training=False).numpy()
                self.assertEqual(x.shape, (3, *shape), f"{family} {shape}")
                self.assertLessEqual(np.abs(x).max(), 1.0, "tanh output must stay in [-1, 1]")
                self.assertEqual(d(x, training=False).shape, (3, 1))

    def test_gaussian_1d_maps_uniform_vectors_to_vectors(self):
        g, d = families.build("gaussian_1d", (100,))
        z = np.random.default_rng(0).uniform(size=(4, 100)).astype(np.float32)
        self.assertEqual(g(z).shape, (4, 100))
        self.assertEqual(d(g(z)).shape, (4, 1))
        self.assertEqual(families.get("gaussian_1d").noise, "uniform")

    def test_default_architectures_follow_the_seeds(self):
        g, d = families.build("dcgan", (28, 28, 1))
        self.assertEqual(g.layers[1].units, 7 * 7 * 128)
        self.assertEqual(layer_types(g).count("UpSampling2D"), 2)
        self.assertEqual(layer_types(g).count("BatchNormalization"), 2)
        convs = [l for l in d.layers if isinstance(l, keras.layers.Conv2D)]
        self.assertEqual([(c.filters, c.strides, c.kernel_size) for c in convs],
                         [(64, (2, 2), (5, 5)), (128, (2, 2), (5, 5))])
        self.assertEqual(d.output_shape, (None, 1))
        self.assertEqual(d.layers[-1].activation.__name__, "linear", "D outputs logits")

        g, d = families.build("mlp", (28, 28, 1))
        self.assertEqual([l.units for l in g.layers if isinstance(l, keras.layers.Dense)],
                         [256, 512, 1024, 784])
        self.assertEqual([l.units for l in d.layers if isinstance(l, keras.layers.Dense)],
                         [1024, 512, 256, 1])
        self.assertEqual({l.rate for l in d.layers if isinstance(l, ByteDropout)}, {0.3})
        slopes = {l.negative_slope for l in g.layers + d.layers
                  if isinstance(l, keras.layers.LeakyReLU)}
        self.assertEqual(slopes, {0.2})

        g, d = families.build("gaussian_1d", (100,))
        dense = [l for l in g.layers if isinstance(l, keras.layers.Dense)]
        self.assertEqual([(l.units, l.activation.__name__) for l in dense],
                         [(50, "relu"), (50, "sigmoid"), (1, "linear")])
        self.assertIn("DeviationFeatures", layer_types(d))

    def test_mlp_bn_adds_batch_norm_to_the_generator_only(self):
        g, d = families.build("mlp_bn", (28, 28, 1))
        self.assertEqual(layer_types(g).count("BatchNormalization"), 3)
        self.assertNotIn("BatchNormalization", layer_types(d))
        self.assertNotIn("BatchNormalization", layer_types(families.build("mlp", (28, 28, 1))[0]))

    def test_hyperparameters_change_the_models(self):
        g, _ = families.build("mlp", (28, 28, 1), latent_dim=32, g_widths=[64])
        self.assertEqual(g.input_shape, (None, 32))
        self.assertEqual([l.units for l in g.layers if isinstance(l, keras.layers.Dense)],
                         [64, 784])

    def test_transposed_upsampling_doubles_the_sides_on_the_small_grid(self):
        for name, extra in (("dcgan", {}), ("labelled_dcgan", {"num_classes": 10})):
            for shape in ((28, 28, 1), (32, 32, 3)):
                with self.subTest(name, shape=shape):
                    g, _ = families.build(name, shape, upsample="transpose", **extra)
                    self.assertNotIn("UpSampling2D", layer_types(g))
                    convs = [l for l in g.layers if isinstance(l, keras.layers.Conv2DTranspose)]
                    self.assertEqual([(c.filters, c.strides, c.kernel_size) for c in convs],
                                     [(64, (2, 2), (5, 5)), (shape[-1], (2, 2), (5, 5))])
                    z = np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32)
                    inputs = [z, np.zeros((3, 1), np.int32)] if extra else z
                    x = g(inputs, training=False).numpy()
                    self.assertEqual(x.shape, (3, *shape))
                    self.assertLessEqual(np.abs(x).max(), 1.0)
                    # the same parameters as the seed's UpSampling2D + Conv2D, on a quarter of
                    # the positions
                    seed, _ = families.build(name, shape, **extra)
                    self.assertEqual(g.count_params(), seed.count_params())
        self.assertEqual(type(reloaded(g).layers[-1]).__name__, "Conv2DTranspose")
        with self.assertRaisesRegex(UserError, "upsample must be one of 'nearest', 'transpose'"):
            families.build("dcgan", (28, 28, 1), upsample="bilinear")
        with self.assertRaisesRegex(UserError, "model.upsample = 'bilinear' is not"):
            config.validate({"model": {"name": "labelled_dcgan", "upsample": "bilinear"}})

class DeviationFeaturesTest(tf.test.TestCase):
    def test_values_beside_squared_deviation_from_their_vector_mean(self):
        x = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]], dtype=np.float32)
        out = DeviationFeatures()(x).numpy()
        self.assertAllClose(out, [[1, 2, 3, 1, 0, 1], [5, 5, 5, 0, 0, 0]])

    def test_discriminator_with_it_loads_in_safe_mode(self):
        _, d = families.build("gaussian_1d", (10,), **TINY["gaussian_1d"])
        x = np.random.default_rng(1).normal(4, 1.25, (5, 10)).astype(np.float32)
        self.assertAllClose(reloaded(d)(x), d(x))


class ByteDropoutTest(tf.test.TestCase):
    def test_drops_at_the_rate_keeps_the_mean_and_passes_through_at_inference(self):
        layer = ByteDropout(0.3, seed=1)
        x = np.ones((1001, 7), np.float32)  # a size that is not a multiple of 4
        y = layer(x, training=True).numpy()
        self.assertEqual(y.shape, x.shape)
        kept = y > 0
        self.assertAllClose(kept.mean(), 1 - 77 / 256, atol=0.01)  # 0.3 acts as 77/256
        self.assertAllClose(np.unique(y[kept]), [256 / 179], rtol=1e-5)
        self.assertAllClose(y.mean(), 1.0, atol=0.02)
        self.assertNotAllClose(y, layer(x, training=True), msg="a new mask each call")
        self.assertAllEqual(layer(x, training=False), x)
        self.assertAllEqual(ByteDropout(0.0)(x, training=True), x)

    def test_gradients_flow_through_kept_elements_only(self):
        layer = ByteDropout(0.5, seed=2)
        x = tf.ones((64, 33))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            total = tf.reduce_sum(y)
        grad = tape.gradient(total, x).numpy()
        self.assertAllClose(grad, np.where(y.numpy() > 0, 2.0, 0.0))

    def test_a_model_with_it_round_trips_in_safe_mode(self):
        _, d = families.build("mlp", (28, 28, 1), d_widths=[8], g_widths=[8])
        x = np.random.default_rng(1).uniform(-1, 1, (3, 28, 28, 1)).astype(np.float32)
        again = reloaded(d)
        self.assertEqual([l.rate for l in again.layers if isinstance(l, ByteDropout)], [0.3])
        self.assertAllClose(again(x), d(x))


class SpectralNormTest(tf.test.TestCase):
    def test_divides_the_kernel_by_its_largest_singular_value_and_keeps_the_weight(self):
        layer = SpectralNorm(keras.layers.Dense(2, use_bias=False))
        eye = np.eye(2, dtype=np.float32)
        layer(eye)
        layer.layer.kernel.assign(np.diag([3.0, 1.0]).astype(np.float32))
        for _ in range(15):  # one power iteration per training call converges on sigma = 3
            layer(eye, training=True)
        self.assertAllClose(layer(eye), np.diag([1.0, 1.0 / 3]), atol=1e-4)
        # the optimizer's weight is W itself, not W / sigma (Keras' wrapper overwrites it)
        self.assertAllClose(layer.layer.kernel, np.diag([3.0, 1.0]))
        u = layer.u.numpy()
        layer(eye, training=False)
        self.assertAllClose(layer.u, u, msg="inference leaves u alone")

    def test_a_convolution_is_at_most_1_lipschitz_in_its_kernel_and_gets_gradients(self):
        conv = keras.layers.Conv2D(8, 3, strides=2, padding="same")
        layer = SpectralNorm(conv)
        x = np.random.default_rng(0).normal(size=(4, 9, 9, 3)).astype(np.float32)
        for _ in range(30):
            layer(x, training=True)
        kernel = layer.normalised_kernel().numpy().reshape(-1, 8)
        self.assertAllClose(np.linalg.svd(kernel, compute_uv=False)[0], 1.0, atol=1e-3)
        # the same output as the plain layer with W / sigma
        plain = keras.layers.Conv2D(8, 3, strides=2, padding="same")
        plain.build(x.shape)
        plain.set_weights([layer.normalised_kernel().numpy(), conv.bias.numpy()])
        self.assertAllClose(layer(x), plain(x), atol=1e-5)
        # the gradient passes through sigma: scaling W changes nothing, so the gradient
        # is orthogonal to W
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(layer(x, training=False) ** 2)
        grad = tape.gradient(total, conv.kernel).numpy()
        self.assertGreater(np.abs(grad).max(), 0)
        self.assertAllClose(np.sum(grad * conv.kernel.numpy()), 0.0, atol=1e-3)

    def test_every_d_layer_of_the_image_families_and_a_safe_mode_round_trip(self):
        x = np.random.default_rng(1).uniform(-1, 1, (3, 28, 28, 1)).astype(np.float32)
        labels = np.zeros((3, 1), np.int32)
        # the tiny D's two hidden layers and its read-out
        for name, extra, count in (("mlp", {}, 3), ("dcgan", {}, 3),
                                   ("labelled_dcgan", {"num_classes": 10}, 3),
                                   ("cmlp", {"num_classes": 10}, 3)):
            with self.subTest(name):
                _, d = families.build(name, (28, 28, 1), spectral_norm=True,
                                      **{**TINY[name], **extra})
                self.assertEqual(sum(isinstance(l, SpectralNorm) for l in d.layers), count)
                inputs = [x, labels] if extra else x
                self.assertAllClose(reloaded(d)(inputs), d(inputs), atol=1e-5)
                _, plain = families.build(name, (28, 28, 1), **{**TINY[name], **extra})
                self.assertFalse(any(isinstance(l, SpectralNorm) for l in plain.layers))
        with self.assertRaisesRegex(ValueError, "wraps Dense or Conv2D"):
            SpectralNorm(keras.layers.Embedding(3, 2))

    def test_a_gan_trains_with_it_under_each_precision_policy(self):
        for precision in ("float32", "mixed_bfloat16", "mixed_float16"):
            with self.subTest(precision):
                cfg = config.validate(config.apply_overrides({}, [
                    "model.name=dcgan", "model.spectral_norm=true",
                    f"train.precision={precision}",
                    *[f"model.{k}={v}" for k, v in TINY["dcgan"].items()]]))
                gan = build_gan(cfg, (8, 8, 1))
                real = np.random.default_rng(0).uniform(-1, 1, (32, 8, 8, 1)).astype("float32")
                d_before = [w.numpy() for w in gan.discriminator.trainable_weights]
                history = gan.fit(tf.data.Dataset.from_tensor_slices(real).batch(16),
                                  epochs=1, verbose=0).history
                self.assertTrue(np.isfinite(history["d_loss"]).all())
                self.assertTrue(np.isfinite(history["g_loss"]).all())
                self.assertTrue(any(not np.allclose(a, b.numpy()) for a, b in
                                    zip(d_before, gan.discriminator.trainable_weights)))
                for layer in gan.discriminator.layers:
                    if isinstance(layer, SpectralNorm):
                        kernel = layer.normalised_kernel().numpy().astype(np.float32)
                        top = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]),
                                            compute_uv=False)[0]
                        self.assertLess(top, 1.3, layer.name)  # ~1 after a few iterations


class MinibatchStdTest(tf.test.TestCase):
    def test_appends_the_batchs_mean_feature_spread_to_every_sample(self):
        x = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0], [6.0, 10.0]], np.float32)
        out = MinibatchStd()(x).numpy()
        self.assertAllClose(out[:, :2], x)
        # per-feature std over the batch: sqrt(5) and 0; their mean, on every row
        self.assertAllClose(out[:, 2], [np.sqrt(5.0) / 2] * 4, rtol=1e-4)
        same = MinibatchStd()(np.ones((6, 3), np.float32)).numpy()
        self.assertAllClose(same[:, 3], np.zeros(6), atol=1e-3)  # no variety: ~0

    def test_lets_d_tell_a_varied_batch_from_a_copied_one(self):
        for name in ("mlp", "labelled_dcgan"):
            with self.subTest(name):
                small = {"mlp": {"d_widths": [8], "g_widths": [8]},
                         "labelled_dcgan": TINY["cdcgan"]}[name]
                args = {"num_classes": 10} if name == "labelled_dcgan" else {}
                _, d = families.build(name, (28, 28, 1), minibatch_std=True, **small, **args)
                _, plain = families.build(name, (28, 28, 1), **small, **args)
                self.assertIn("MinibatchStd", layer_types(d))
                self.assertNotIn("MinibatchStd", layer_types(plain))
                rng = np.random.default_rng(1)
                x = rng.uniform(-1, 1, (6, 28, 28, 1)).astype(np.float32)
                inputs = [x, np.arange(6).reshape(6, 1)] if args else x
                copied = ([np.repeat(x[:1], 6, 0), np.zeros((6, 1), np.int64)] if args
                          else np.repeat(x[:1], 6, 0))
                # one sample judged alone in a varied batch and among copies of itself
                self.assertNotAllClose(d(inputs)[0], d(copied)[0])
                self.assertAllClose(plain(inputs)[0], plain(copied)[0])  # without it: alike
                self.assertAllClose(reloaded(d)(inputs), d(inputs))


class SortedValuesTest(tf.test.TestCase):
    def test_values_in_ascending_order_per_vector(self):
        x = np.array([[3.0, 1.0, 2.0], [0.5, -1.0, 0.0]], dtype=np.float32)
        self.assertAllClose(SortedValues()(x), [[1, 2, 3], [-1, 0, 0.5]])

    def test_sorted_discriminator_judges_the_draws_not_their_order(self):
        # The seed's D sees the points in order; the sorted variant sees only their values,
        # so shuffling the draws of a vector cannot change its verdict, and it still saves.
        g_seed, d_seed = families.build("gaussian_1d", (10,))
        g, d = families.build("gaussian_1d_sorted", (10,))
        self.assertEqual(layer_types(g), layer_types(g_seed))
        self.assertIn("SortedValues", layer_types(d))
        x = np.random.default_rng(2).normal(4, 1.25, (5, 10)).astype(np.float32)
        shuffled = x[:, np.random.default_rng(3).permutation(10)]
        self.assertAllClose(d(shuffled), d(x), atol=1e-6)
        self.assertNotAllClose(d_seed(shuffled), d_seed(x))
        self.assertAllClose(reloaded(d)(x), d(x))


class MonotoneFamilyTest(tf.test.TestCase):
    def test_generator_keeps_the_order_of_its_noise_through_training(self):
        # G's weights start >= 0 and are clipped at 0 after every update, so G (and its EMA
        # copy) maps larger noise to larger values however hard it is pushed: it cannot fold.
        cfg = config.load(Path(__file__).resolve().parents[1] / "pipelines/gaussian_1d.toml",
                          ["model.name=gaussian_1d_monotone", "model.g_hidden=16",
                           "model.d_hidden=16", "data.n_points=20", "batch_size=16",
                           "train.g_learning_rate=0.05", "train.d_learning_rate=0.05",
                           "train.lr_schedule=constant", "train.ema_decay=0.5"])
        gan = build_gan(cfg, (20,))
        real = np.random.default_rng(0).normal(4, 1.25, (16, 20)).astype(np.float32)
        u = np.linspace(0.0, 1.0, 400, dtype=np.float32).reshape(20, 20)
        before = gan.generator(u).numpy().ravel()
        for _ in range(30):
            gan.train_step(tf.constant(real))
        for network in (gan.generator, gan.ema_generator):
            kernels = [w.numpy() for w in network.weights if "kernel" in w.path]
            self.assertLen(kernels, 3)
            self.assertTrue(all((k >= 0).all() for k in kernels))
            values = network(u).numpy().ravel()
            self.assertTrue((np.diff(values) >= -1e-5).all(), network.name)
        self.assertNotAllClose(gan.generator(u).numpy().ravel(), before)  # it did train
        self.assertAllClose(reloaded(gan.generator)(u), gan.generator(u))

    def test_the_sorted_familys_generator_is_not_held_to_order(self):
        g, _ = families.build("gaussian_1d_sorted", (20,))
        kernels = [w.numpy() for w in g.weights if "kernel" in w.path]
        self.assertTrue(any((k < 0).any() for k in kernels))


class ModelErrorsTest(tf.test.TestCase):
    def test_unknown_family_and_hyperparameter(self):
        with self.assertRaisesRegex(UserError, r"unknown model 'dcgam'.*'dcgan'"):
            families.build("dcgam", (28, 28, 1))
        with self.assertRaisesRegex(UserError, r"unknown hyperparameter 'latent'.*latent_dim"):
            families.build("mlp", (28, 28, 1), latent=10)

    def test_dcgan_needs_sides_divisible_by_four(self):
        with self.assertRaisesRegex(UserError, r"divide by 4.*\(30, 30, 3\)"):
            families.build("dcgan", (30, 30, 3))

    def test_a_family_makes_the_kind_of_samples_its_data_holds(self):
        with self.assertRaisesRegex(UserError, r"needs 1-D|not vectors|rank 1"):
            families.build("gaussian_1d", (28, 28, 1))
        with self.assertRaisesRegex(UserError, r"makes images but data.dataset = 'gaussian_1d' "
                                               r"holds vectors.*'gaussian_1d_pure'"):
            config.validate({"data": {"dataset": "gaussian_1d"}, "model": {"name": "mlp"}})


class PureFamilyTest(tf.test.TestCase):
    def test_the_seeds_gan_pure_discriminator_sees_the_raw_values(self):
        g_seed, _ = families.build("gaussian_1d", (10,))
        g, d = families.build("gaussian_1d_pure", (10,))
        self.assertEqual(layer_types(g), layer_types(g_seed))
        self.assertNotIn("DeviationFeatures", layer_types(d))
        self.assertNotIn("SortedValues", layer_types(d))
        dense = [l for l in d.layers if isinstance(l, keras.layers.Dense)]
        self.assertEqual([l.units for l in dense], [50, 50, 1])
        self.assertEqual(dense[0].kernel.shape, (10, 50), "D's first layer sees the 10 values")
        self.assertEqual(families.get("gaussian_1d_pure").noise, "uniform")


def _tiny_conv_family():
    """An architecture-only family as a user would write it in its own module."""

    def build(shape, hp, name):
        z = keras.Input((hp["latent_dim"],))
        h = keras.layers.Dense(shape[0] * shape[1] * shape[2], activation="tanh")(z)
        g = keras.Model(z, keras.layers.Reshape(shape)(h), name=f"{name}_generator")
        x = keras.Input(shape)
        h = keras.layers.Conv2D(hp["filters"], 3, strides=2)(x)
        d = keras.Model(x, keras.layers.Dense(1)(keras.layers.Flatten()(h)))
        return g, d

    return families.Family("tiny_conv", build, {"latent_dim": 4, "filters": 2})


class NewFamilyTest(tf.test.TestCase):
    def test_a_registry_entry_is_all_a_new_family_needs(self):
        family = _tiny_conv_family()
        with mock.patch.dict(families.FAMILIES, {family.name: family}):
            cfg = config.validate({"model": {"name": "tiny_conv", "filters": 3},
                                   "train": {"precision": "float32"}})
            self.assertEqual(cfg.model.filters, 3)
            with self.assertRaisesRegex(UserError, r"model.filter.*Did you mean 'filters'"):
                config.validate({"model": {"name": "tiny_conv", "filter": 3}})
            gan = build_gan(cfg, (8, 8, 1))
            real = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype("float32")
            history = gan.fit(tf.data.Dataset.from_tensor_slices(real).batch(8), epochs=1,
                              verbose=0).history
            self.assertTrue(np.isfinite(history["d_loss"]).all())
            self.assertEqual(kinds.spec_of(gan.sampler)["family"], "tiny_conv")
            self.assertEqual(gan.sampler(gan.sample_noise(2)).shape, (2, 8, 8, 1))
