"""Pipeline files: shipped ones validate, overrides apply, bad input names the key and the fix."""

import tempfile
from pathlib import Path

import tensorflow as tf

from gan_pipeline import config
from gan_pipeline.errors import UserError
from tests.helpers import REPO


class ShippedPipelinesTest(tf.test.TestCase):
    def test_every_shipped_pipeline_validates_with_its_family(self):
        files = sorted((REPO / "pipelines").glob("*.toml"))
        self.assertEqual({f.stem for f in files}, {"gaussian_1d", "mnist_mlp", "mnist_dcgan"})
        for path in files:
            cfg = config.load(path)
            self.assertEqual(cfg["name"], path.stem)
            self.assertIn(cfg["model"]["name"], ("gaussian_1d", "mlp_bn", "dcgan"))

    def test_mnist_pipelines_use_the_tutorial_settings(self):
        for name in ("mnist_mlp", "mnist_dcgan"):
            t = config.load(REPO / "pipelines" / f"{name}.toml")["train"]
            self.assertEqual((t["label_smoothing"], t["g_learning_rate"], t["beta_1"]),
                             (0.9, 2e-4, 0.5))
        self.assertEqual(config.load(REPO / "pipelines/gaussian_1d.toml")["train"]["g_steps"], 5)


class OverrideTest(tf.test.TestCase):
    def test_top_level_and_dotted_overrides(self):
        cfg = config.load(REPO / "pipelines/mnist_dcgan.toml",
                          ["epochs=3", "batch_size=32", "seed=7", "train.loss=minimax",
                           "train.g_learning_rate=1e-4", "model.d_filters=[32, 64]",
                           "data.dataset=fashion_mnist", "tracking.log_model=false"])
        self.assertEqual((cfg["epochs"], cfg["batch_size"], cfg["seed"]), (3, 32, 7))
        self.assertEqual(cfg["train"]["loss"], "minimax")
        self.assertEqual(cfg["train"]["g_learning_rate"], 1e-4)
        self.assertEqual(cfg["model"]["d_filters"], [32, 64])
        self.assertEqual(cfg["data"]["dataset"], "fashion_mnist")
        self.assertFalse(cfg["tracking"]["log_model"])

    def test_integer_is_accepted_where_a_number_is_expected(self):
        cfg = config.load(REPO / "pipelines/mnist_mlp.toml", ["train.beta_1=0"])
        self.assertIsInstance(cfg["train"]["beta_1"], float)

    def test_defaults_fill_missing_keys(self):
        cfg = config.validate({"model": {"name": "mlp"}})
        self.assertEqual(cfg["model"]["g_widths"], [256, 512, 1024])
        self.assertEqual(cfg["model"]["d_widths"], [1024, 512, 256])
        self.assertEqual(cfg["model"]["dropout"], 0.3)
        self.assertEqual(cfg["data"]["dataset"], "mnist")

    def test_flatten_gives_dotted_param_names(self):
        flat = config.flatten(config.validate({}))
        self.assertIn("train.g_learning_rate", flat)
        self.assertIn("epochs", flat)


class BadInputTest(tf.test.TestCase):
    def assertUserError(self, raw_or_overrides, *fragments):
        with self.assertRaises(UserError) as ctx:
            if isinstance(raw_or_overrides, dict):
                config.validate(raw_or_overrides)
            else:
                config.load(REPO / "pipelines/mnist_dcgan.toml", raw_or_overrides)
        message = str(ctx.exception)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_unknown_keys_suggest_the_closest(self):
        self.assertUserError(["epoch=3"], "'epoch'", "'epochs'")
        self.assertUserError(["train.learning_rate=1e-3"], "'train.learning_rate'",
                             "g_learning_rate")
        self.assertUserError(["model.latent_size=64"], "'model.latent_size'", "latent_dim")
        self.assertUserError({"traning": {}}, "'traning'", "'train'")

    def test_wrong_types_and_ranges(self):
        self.assertUserError(["epochs=ten"], "epochs = 'ten'", "an integer")
        self.assertUserError(["batch_size=0"], "batch_size = 0", ">= 1")
        self.assertUserError(["batch_size=-4"], "batch_size = -4", ">= 1")
        self.assertUserError(["train.label_smoothing=1.5"], "label_smoothing", "<= 1")
        self.assertUserError(["train.d_learning_rate=0"], "d_learning_rate", "> 0")
        self.assertUserError(["model.d_filters=[64, -1]"], "model.d_filters", "positive integers")
        self.assertUserError(["tracking.log_model=1"], "tracking.log_model", "true or false")

    def test_unknown_names(self):
        self.assertUserError(["model.name=dcgna"], "model.name = 'dcgna'", "'dcgan'")
        self.assertUserError(["train.loss=hinge"], "train.loss = 'hinge'", "'minimax'",
                             "'non_saturating'")

    def test_model_and_dataset_must_fit(self):
        self.assertUserError(["data.dataset=gaussian_1d"], "'gaussian_1d'", "data.dataset")

    def test_malformed_override_and_missing_file(self):
        self.assertUserError(["epochs"], "KEY=VALUE")
        with self.assertRaises(UserError) as ctx:
            config.load("pipelines/nope.toml")
        self.assertIn("does not exist", str(ctx.exception))

    def test_invalid_toml_names_the_file(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "bad.toml"
            bad.write_text("epochs = = 3\n")
            with self.assertRaises(UserError) as ctx:
                config.load(bad)
            self.assertIn("bad.toml", str(ctx.exception))
