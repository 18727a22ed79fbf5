"""Pipeline files: shipped ones validate, overrides apply, bad input names the key and the fix."""

import tempfile
import tomllib
from pathlib import Path

import tensorflow as tf

from gan_pipeline import config, families
from gan_pipeline.errors import UserError
from tests.helpers import REPO


class ShippedPipelinesTest(tf.test.TestCase):
    def test_every_shipped_pipeline_validates_with_its_family(self):
        files = sorted((REPO / "pipelines").glob("*.toml"))
        self.assertEqual({f.stem for f in files},
                         {"gaussian_1d", "mnist_mlp", "mnist_dcgan", "mnist_cgan",
                          "mnist_dcgan_unlabelled", "mnist_mlp_unlabelled"})
        for path in files:
            cfg = config.load(path)
            self.assertEqual(cfg.name, path.stem)
            self.assertIn(cfg.model.name, ("gaussian_1d_monotone", "labelled_mlp", "labelled_dcgan",
                                           "cdcgan"))
            # the *_unlabelled files train on k-means clusters in place of MNIST's labels
            if path.stem.startswith("mnist"):
                self.assertEqual(cfg.data.labels,
                                 "clusters" if path.stem.endswith("_unlabelled") else "auto")
            # the family's own hyperparameters: not model.name, not model.truncation
            self.assertEqual(set(cfg.hyperparameters()),
                             set(families.get(cfg.model.name).defaults))

    def test_mnist_pipelines_use_the_tutorial_settings(self):
        t = config.load(REPO / "pipelines/mnist_mlp.toml").train
        self.assertEqual((t.label_smoothing, t.g_learning_rate, t.beta_1), (0.9, 2e-4, 0.5))
        # the conditional DCGAN trains as the DCGAN file does, mode seeking included (its
        # variety within a class), and keeps those settings over its search's pick
        cgan = config.load(REPO / "pipelines/mnist_cgan.toml")
        dcgan_train = config.load(REPO / "pipelines/mnist_dcgan.toml").train
        for key in ("label_smoothing", "d_learning_rate", "g_learning_rate", "beta_1",
                    "ema_decay", "mode_seeking"):
            self.assertEqual(getattr(cgan.train, key), getattr(dcgan_train, key), key)
        self.assertGreater(cgan.train.mode_seeking, 0)
        self.assertEqual(cgan.tune.objective, "")
        # every shipped file adopts its search, whose trials are its train run's first epochs
        # (train continues the best one): same batches per epoch, no more epochs than the run
        for path in sorted((REPO / "pipelines").glob("*.toml")):
            cfg = config.load(path)
            self.assertEqual(cfg.tune.adopt, "best", path.name)
            self.assertIn(cfg.tune.steps_per_epoch, (0, cfg.train.steps_per_epoch), path.name)
            self.assertLessEqual(cfg.tune.epochs, cfg.epochs, path.name)
        self.assertEqual(config.load(REPO / "pipelines/gaussian_1d.toml").train.g_steps, 5)


class OverrideTest(tf.test.TestCase):
    def test_top_level_and_dotted_overrides(self):
        cfg = config.load(REPO / "pipelines/mnist_dcgan.toml",
                          ["epochs=3", "batch_size=32", "seed=7", "train.loss=minimax",
                           "train.g_learning_rate=1e-4", "model.d_filters=[32, 64]",
                           "data.dataset=fashion_mnist", "tracking.log_model=false"])
        self.assertEqual((cfg.epochs, cfg.batch_size, cfg.seed), (3, 32, 7))
        self.assertEqual(cfg.train.loss, "minimax")
        self.assertEqual(cfg.train.g_learning_rate, 1e-4)
        self.assertEqual(cfg.model.d_filters, [32, 64])
        self.assertEqual(cfg.data.dataset, "fashion_mnist")
        self.assertFalse(cfg.tracking.log_model)

    def test_integer_is_accepted_where_a_number_is_expected(self):
        cfg = config.load(REPO / "pipelines/mnist_mlp.toml", ["train.beta_1=0"])
        self.assertIsInstance(cfg.train.beta_1, float)

    def test_defaults_fill_missing_keys(self):
        cfg = config.validate({"model": {"name": "mlp"}})
        self.assertEqual(cfg.model.g_widths, [256, 512, 1024])
        self.assertEqual(cfg.model.d_widths, [1024, 512, 256])
        self.assertEqual(cfg.model.dropout, 0.3)
        self.assertEqual(cfg.data.dataset, "mnist")

    def test_flatten_gives_dotted_param_names(self):
        flat = config.flatten(config.validate({}).to_dict())
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
        self.assertUserError(["train.loss=hing"], "train.loss = 'hing'", "'minimax'",
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


class PipelineSettingsTest(tf.test.TestCase):
    def test_profiles_replace_settings_and_set_wins(self):
        path = REPO / "pipelines/mnist_dcgan.toml"
        full = config.load(path)
        quick = config.load(path, ["profile=quick"])
        self.assertEqual((full.profile, quick.profile), ("full", "quick"))
        raw = tomllib.loads(path.read_text())
        self.assertNotEqual(raw["epochs"], raw["profiles"]["quick"]["epochs"])
        self.assertEqual((full.epochs, quick.epochs),
                         (raw["epochs"], raw["profiles"]["quick"]["epochs"]))
        self.assertEqual(quick.tune.tuner, "random")
        self.assertEqual(quick.model, full.model, "what the profile leaves alone stays")
        mine = config.load(path, ["epochs=2", "profile=quick", "tune.max_trials=5"])
        self.assertEqual((mine.epochs, mine.tune.max_trials), (2, 5))
        with self.assertRaisesRegex(UserError, r"profile = 'quik'.*'full', 'quick'.*'quick'"):
            config.load(path, ["profile=quik"])

    def test_every_shipped_pipeline_has_a_quick_profile_and_a_search(self):
        for path in sorted((REPO / "pipelines").glob("*.toml")):
            quick = config.load(path, ["profile=quick"])
            self.assertEqual(quick.stages, list(config.STAGES))
            self.assertTrue(quick.tune.space, path.name)
            for name in quick.tune.space:
                self.assertRegex(name, r"^(train|model)\.|^batch_size$")

    def test_search_space_is_validated_against_the_settings(self):
        space = {"train": {"d_learning_rate": {"min": 1e-4, "max": 1e-3, "log": True},
                           "loss": {"values": ["minimax", "non_saturating"]}},
                 "batch_size": {"values": [64, 128]}}
        cfg = config.validate({"tune": {"space": space}})
        self.assertEqual(cfg.tune.space["train.d_learning_rate"],
                         {"min": 1e-4, "max": 1e-3, "log": True})
        self.assertEqual(cfg.tune.space["batch_size"], {"values": [64, 128]})
        bad = [
            ({"train": {"d_learning_rte": {"min": 1, "max": 2}}},
             r"unknown setting 'tune.space.train.d_learning_rte'.*Did you mean 'd_learning_rate'"),
            ({"train": {"loss": {"min": 1, "max": 2}}}, r"train.loss is a string; give its"),
            ({"train": {"loss": {"values": ["hing"]}}}, r"expected one of 'hinge', "),
            ({"train": {"beta_1": {"min": 0.9, "max": 0.5}}}, r"min \(0.9\) must be below max"),
            ({"train": {"beta_1": {"min": 0.0, "max": 0.5, "log": True}}}, r"log sampling"),
            ({"train": {"beta_1": {"min": 0.1}}}, r"needs both min and max"),
            ({"train": {"beta_1": {"min": 0.1, "max": 0.5, "scale": 2}}},
             r"unknown setting 'tune.space.train.beta_1.scale'"),
            ({"data": {"mean": {"values": [1.0]}}}, r"unknown setting 'tune.space.data'"),
        ]
        for space, message in bad:
            with self.assertRaisesRegex(UserError, message):
                config.validate({"tune": {"space": space}})

    def test_stages_run_once_in_order_with_what_they_read(self):
        for stages, message in (([], r"name at least one"),
                                (["train", "prepare"], r"each stage once, in the order"),
                                (["train", "train"], r"each stage once"),
                                (["prepare", "evaluate"], r"'evaluate' needs 'train'"),
                                (["train", "register"], r"'register' needs 'evaluate'")):
            with self.assertRaisesRegex(UserError, message):
                config.validate({"stages": stages})
        self.assertEqual(config.validate({"stages": ["tune"]}).stages, ["tune"])

    def test_a_profile_replaces_a_search_range_whole(self):
        raw = {"tune": {"space": {"train": {"beta_1": {"min": 0.1, "max": 0.9}}}},
               "profiles": {"small": {"tune": {"space": {"train": {"beta_1": {
                   "values": [0.5]}}}}}}}
        cfg = config.validate({**raw, "profile": "small"})
        self.assertEqual(cfg.tune.space["train.beta_1"], {"values": [0.5]})

    def test_stage_and_tuner_names_are_checked(self):
        with self.assertRaisesRegex(UserError, r"'trian' is not one of.*Did you mean 'train'"):
            config.validate({"stages": ["prepare", "trian"]})
        with self.assertRaisesRegex(UserError, r"tune.tuner = 'grid'.*'random', 'bayesian'"):
            config.validate({"tune": {"tuner": "grid"}})

    def test_training_runs_do_not_carry_pipeline_settings(self):
        cfg = config.load(REPO / "pipelines/gaussian_1d.toml")
        part = cfg.training_part()
        self.assertNotIn("tune", part)
        self.assertNotIn("stages", part)
        rebuilt = config.from_params({k: str(v) for k, v in config.flatten(part).items()})
        self.assertEqual(rebuilt.training_part(), part)

    def test_with_values_applies_and_revalidates(self):
        cfg = config.load(REPO / "pipelines/gaussian_1d.toml")
        new = cfg.replace({"train.beta_1": 0.9, "batch_size": 32})
        self.assertEqual((new.train.beta_1, new.batch_size), (0.9, 32))
        self.assertEqual(new.tune.space, cfg.tune.space)
        with self.assertRaisesRegex(UserError, "train.beta_1"):
            cfg.replace({"train.beta_1": 2.0})


class TypedSectionsTest(tf.test.TestCase):
    def test_settings_are_read_only_attributes(self):
        cfg = config.load(REPO / "pipelines/mnist_dcgan.toml")
        self.assertEqual(cfg.train.precision, "auto")
        self.assertEqual(cfg.model.d_filters, [64, 128])
        with self.assertRaisesRegex(AttributeError, "read-only"):
            cfg.train.loss = "minimax"
        with self.assertRaisesRegex(AttributeError, "no setting train.los"):
            cfg.train.los  # noqa: B018
        changed = cfg.replace({"train.loss": "minimax"})
        self.assertEqual((cfg.train.loss, changed.train.loss), ("non_saturating", "minimax"))

    def test_each_data_source_brings_its_own_settings(self):
        folder = config.validate({"data": {"dataset": "folder", "path": "/x",
                                           "image_size": [32, 32]}})
        self.assertEqual((folder.data.path, folder.data.image_size, folder.data.channels),
                         ("/x", [32, 32], 0))
        self.assertNotIn("mean", folder.data)
        gauss = config.load(REPO / "pipelines/gaussian_1d.toml")
        self.assertEqual((gauss.data.mean, gauss.data.n_points), (4.0, 100))
        self.assertNotIn("split", gauss.data)
        self.assertIn("split", config.validate({}).data)  # a TFDS dataset


class BadValuesTest(tf.test.TestCase):
    assertUserError = BadInputTest.assertUserError

    def test_non_finite_numbers_are_errors(self):
        for key in ("train.d_learning_rate", "train.ema_decay", "train.r1_gamma",
                    "eval.collapse_max_share"):
            for value in ("nan", "inf", "-inf"):
                self.assertUserError([f"{key}={value}"], key, "finite")
        self.assertUserError({"data": {"dataset": "gaussian_1d", "std": float("nan")},
                              "model": {"name": "gaussian_1d"}}, "data.std", "finite")
        self.assertUserError({"data": {"dataset": "gaussian_1d", "mean": float("inf")},
                              "model": {"name": "gaussian_1d"}}, "data.mean", "finite")

    def test_out_of_range_values_name_the_limit(self):
        self.assertUserError(["seed=4294967296"], "seed = 4294967296", "<= 4294967295")
        self.assertUserError(["name="], "name = ''", "non-empty")
        self.assertUserError(["model.d_filters=[]"], "model.d_filters")
        self.assertUserError(["model.g_filters=10000000"], "model.g_filters", "<= 65536")
        self.assertUserError({"data": {"dataset": "folder", "path": "/x", "image_size": [28]}},
                             "data.image_size", "2 positive integers")
        self.assertUserError({"data": {"dataset": "folder", "path": "/x", "channels": 2}},
                             "data.channels", "one of 0, 1, 3")
        self.assertUserError({"data": {"dataset": "folder"}}, "data.path", "non-empty")

    def test_a_setting_of_another_data_source_is_unknown(self):
        self.assertUserError(["data.mean=3"], "unknown setting 'data.mean'", "data.split")

    def test_a_non_utf8_file_is_one_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "latin1.toml"
            bad.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
            with self.assertRaisesRegex(UserError, r"latin1.toml: not a UTF-8 text file"):
                config.load(bad)


class SettingsReferenceTest(tf.test.TestCase):
    def test_every_setting_family_and_data_source_is_in_the_reference(self):
        from gan_pipeline import data, families
        from gan_pipeline.config.schema import SCHEMA, Field

        text = (REPO / "docs/settings.md").read_text()
        for key, spec in SCHEMA.items():
            if isinstance(spec, Field):
                self.assertIn(f"`{key}`", text)
                continue
            for sub in spec:
                self.assertIn(f"`{key}.{sub}`", text)
        for source in [*data.SOURCES.values(), data.TFDSImages]:
            for sub in source.fields:
                self.assertIn(f"`data.{sub}`", text, source.__name__)
        for name, family in families.FAMILIES.items():
            self.assertIn(f"`{name}`", text)
            for hp in family.defaults:
                self.assertIn(f"`{hp} = ", text, f"{name}: {hp}")


class NameTest(tf.test.TestCase):
    def test_the_name_is_safe_as_a_folder_and_an_experiment(self):
        for bad in ("../up", "a/b", ".hidden", "x" * 101, "with space"):
            with self.assertRaisesRegex(UserError, "name = .* letters, digits"):
                config.validate({"name": bad})
        self.assertEqual(config.validate({"name": "mnist_dcgan-2.v1"}).name, "mnist_dcgan-2.v1")
