"""The truncation trick (`model.truncation`): the map turns N(0, 1) into N(0, 1) cut at +-t, it
acts at inference only, it is saved in the generator (so sample, evaluate and the logged MLflow
model agree), and the evaluation reports the figures with and without it."""

import json
import math

import keras
import mlflow
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from gan_pipeline import config, kinds, sampling
from gan_pipeline.errors import UserError
from gan_pipeline.factory import build_gan
from tests.helpers import REPO, TINY, TempWorkdir
from tests.test_cli import only_run, run_cli, tiny_overrides
from tests.test_conditional import CLASSES


def truncated_normal_std(t):
    """The standard deviation of N(0, 1) truncated to [-t, t]."""
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1 - 2 * t * phi / math.erf(t / math.sqrt(2)))


def tiny(family="dcgan", *sets):
    keras.utils.set_random_seed(0)
    cfg = config.validate(config.apply_overrides(
        {"model": {"name": family, **TINY[family]}}, list(sets)))
    classes = CLASSES if family.startswith("c") else None
    return build_gan(cfg, (28, 28, 1), total_batches=10, class_names=classes)


class TruncationMapTest(tf.test.TestCase):
    def test_normal_noise_becomes_the_truncated_normal(self):
        z = np.random.default_rng(0).standard_normal(200_000).astype(np.float32)
        for t in (0.5, 1.0, 2.0):
            out = keras.ops.convert_to_numpy(kinds.Truncation(t)(z))
            self.assertAllInRange(out, -t, t)
            self.assertNear(out.mean(), 0.0, 0.01)
            self.assertNear(out.std(), truncated_normal_std(t), 0.005)
            # the map is monotone: the order of the noise is kept (up to float32 rounding)
            order = np.argsort(z)
            self.assertGreater(np.diff(out[order]).min(), -1e-5)

    def test_identity_in_training_and_at_zero(self):
        z = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32) * 3
        self.assertAllClose(kinds.Truncation(1.0)(z, training=True), z)
        self.assertAllClose(kinds.Truncation(0.0)(z), z)

    def test_far_tails_stay_finite_at_the_threshold(self):
        out = keras.ops.convert_to_numpy(kinds.Truncation(1.5)(
            np.array([-40.0, -8.0, 0.0, 8.0, 40.0], np.float32)))
        self.assertAllClose(out, [-1.5, -1.5, 0.0, 1.5, 1.5], atol=1e-3)


class TruncatedGeneratorTest(tf.test.TestCase):
    def test_the_saved_generator_truncates_its_noise_and_trains_on_plain_noise(self):
        for family in ("dcgan", "cdcgan"):
            gan = tiny(family, "model.truncation=0.7")
            plain = tiny(family)  # same seed: same initial weights
            z = np.random.default_rng(2).standard_normal((6, 8)).astype(np.float32) * 2
            labels = np.arange(6, dtype=np.int32).reshape(-1, 1)

            def call(g, noise, **kw):
                return g([noise, labels] if family == "cdcgan" else noise, **kw)

            cut = keras.ops.convert_to_numpy(kinds.Truncation(0.7)(z))
            self.assertAllClose(call(gan.generator, z), call(plain.generator, cut), atol=1e-5)
            self.assertAllClose(call(gan.generator, z, training=True),
                                call(plain.generator, z, training=True), atol=1e-5)
            self.assertEqual(kinds.spec_of(gan.generator)["truncation"], 0.7)
            self.assertEqual(kinds.spec_of(gan.sampler)["truncation"], 0.7)  # the EMA copy
            self.assertEqual([x.name for x in gan.generator.inputs],
                             [x.name for x in plain.generator.inputs])

            # off again: the same layers and weights, plain noise
            untruncated = kinds.with_truncation(gan.generator, 0)
            self.assertAllClose(call(untruncated, z), call(plain.generator, z), atol=1e-5)
            self.assertEqual(kinds.truncation_of(untruncated), 0.0)
            self.assertIs(untruncated.get_layer("spec"), gan.generator.get_layer("spec"))

    def test_round_trip_in_safe_mode(self):
        gan = tiny("dcgan", "model.truncation=1.2")
        path = self.get_temp_dir() + "/g.keras"
        gan.sampler.save(path)
        loaded = keras.models.load_model(path, safe_mode=True, compile=False)
        self.assertEqual(kinds.truncation_of(loaded), 1.2)
        z = sampling.noise((4, 8), "normal", 3)
        self.assertAllClose(loaded(z), gan.sampler(z), atol=1e-6)

    def test_settings_are_checked(self):
        with self.assertRaisesRegex(UserError, "normal noise"):
            config.validate({"model": {"name": "gaussian_1d_sorted", "truncation": 1.0},
                             "data": {"dataset": "gaussian_1d"}})
        for bad in (-1, "nan", 11):
            with self.assertRaisesRegex(UserError, "model.truncation"):
                config.validate(config.apply_overrides({}, [f"model.truncation={bad}"]))
        self.assertNotIn("truncation", config.validate({}).hyperparameters())
        gan = tiny("dcgan")
        for bad in (-0.5, float("nan"), 100):
            with self.assertRaisesRegex(UserError, "--truncation"):
                sampling.with_truncation(gan.sampler, bad)


class TruncationCliTest(tf.test.TestCase):
    def test_train_sample_and_evaluate_with_and_without(self):
        with TempWorkdir() as work, tfds.testing.mock_data(num_examples=64):
            code, _, err = run_cli("train", "--config", REPO / "pipelines/mnist_dcgan.toml",
                                   "--set", "model.truncation=0.8", "--set", "eval.n_samples=100",
                                   *tiny_overrides("dcgan", epochs=1))
            self.assertEqual(code, 0, err)
            _, run = only_run(work.uri, "mnist_dcgan")
            rid = run.info.run_id
            self.assertEqual(run.data.params["model.truncation"], "0.8")
            logged = sampling.load_generator(run.data.tags["generator_model_uri"])
            self.assertEqual(kinds.truncation_of(logged), 0.8)

            code, _, err = run_cli("sample", "--model", rid, "--n", 5, "--seed", 4,
                                   "--out", "cut.npy")
            self.assertEqual(code, 0, err)
            code, _, err = run_cli("sample", "--model", rid, "--n", 5, "--seed", 4,
                                   "--truncation", "0", "--out", "plain.npy")
            self.assertEqual(code, 0, err)
            z = sampling.noise((5, 8), "normal", 4)
            self.assertAllClose(np.load("cut.npy"), logged(z), atol=1e-6)
            self.assertAllClose(np.load("plain.npy"), kinds.with_truncation(logged, 0)(z),
                                atol=1e-6)
            self.assertNotAllClose(np.load("cut.npy"), np.load("plain.npy"))

            code, out, err = run_cli("evaluate", "--model", rid, "--n", 100)
            self.assertEqual(code, 0, err)
            result = json.loads(out)
            self.assertEqual(result["truncation"], 0.8)
            self.assertIn("frechet_distance", result["figures_without_truncation"])
            self.assertNotEqual(result["figures"]["frechet_distance"],
                                result["figures_without_truncation"]["frechet_distance"])
            metrics = mlflow.MlflowClient().get_run(rid).data.metrics
            self.assertIn("quality_untruncated/frechet_distance", metrics)

            code, _, err = run_cli("sample", "--model", rid, "--n", 5, "--truncation", "-1",
                                   "--out", "bad.npy")
            self.assertEqual(code, 2)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn("--truncation", err)
