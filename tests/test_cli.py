"""End to end through the CLI: `train` records a complete MLflow run, `sample` reads it back, and
user mistakes end in one clear line with exit status 2 and nothing left in MLflow."""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from gan_pipeline import cli, sampling, tracking
from tests.helpers import REPO, TINY, TempWorkdir, real_tfds_dir


def tiny_overrides(family, epochs=2):
    """Settings for a few tiny steps of ``family`` (named: the MNIST files' own families train
    on labels; a test of ``dcgan`` or ``mlp`` gets that unconditional one)."""
    sets = [f"epochs={epochs}", "batch_size=16", "train.steps_per_epoch=2",
            "data.shuffle_buffer=64", "tracking.grid_size=16", f"model.name={family}"]
    for key, value in TINY[family].items():
        sets.append(f"model.{key}={value}")
    return [arg for s in sets for arg in ("--set", s)]


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def only_run(uri, experiment):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, runs
    return client, runs[0]


@pytest.mark.integration
class TrainAndSampleImagesTest(tf.test.TestCase):
    """One tiny DCGAN run on mocked MNIST, then every way of sampling from it."""

    @classmethod
    def setUpClass(cls):
        cls.work = TempWorkdir().__enter__()
        empty_tfds = cls.work.path / "tfds"
        with tfds.testing.mock_data(num_examples=64):
            cls.code, cls.out, cls.err = run_cli(
                "train", "--config", REPO / "pipelines/mnist_dcgan.toml",
                "--set", f"data.data_dir={empty_tfds}", *tiny_overrides("dcgan"))
        cls.client, cls.mlrun = only_run(cls.work.uri, "mnist_dcgan")

    @classmethod
    def tearDownClass(cls):
        cls.work.__exit__(None, None, None)

    def artifacts(self, path=""):
        return [a.path for a in self.client.list_artifacts(self.mlrun.info.run_id, path)]

    def test_run_finished_and_says_how_to_open_it(self):
        self.assertEqual(self.code, 0, self.err)
        self.assertEqual(self.mlrun.info.status, "FINISHED")
        self.assertIn(self.mlrun.info.run_id, self.out)
        self.assertIn("mlflow ui", self.out)
        self.assertIn("Epoch 2/2", self.out, "Keras progress bar expected")

    def test_every_resolved_config_value_is_a_param(self):
        params = self.mlrun.data.params
        self.assertEqual(params["epochs"], "2")
        self.assertEqual(params["train.loss"], "non_saturating")
        self.assertEqual(params["train.label_smoothing"], "0.9")
        self.assertEqual(params["model.name"], "dcgan")
        self.assertEqual(params["model.d_filters"], "[4, 8]")
        self.assertEqual(params["resolved.sample_shape"], "[28, 28, 1]")
        self.assertIn("tracking.grid_size", params)

    def test_metrics_are_logged_once_per_epoch(self):
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            history = self.client.get_metric_history(self.mlrun.info.run_id, key)
            self.assertEqual([m.step for m in history], [1, 2], key)
            self.assertTrue(all(np.isfinite(m.value) for m in history))

    def test_a_sample_grid_per_epoch_and_the_loss_figure(self):
        images = self.artifacts("images")
        for step in (1, 2):
            self.assertLen([p for p in images if p.startswith(f"images/samples+step+{step}+")
                            and p.endswith(".png")], 1)
        self.assertIn("loss_curves.png", self.artifacts())
        local = mlflow.artifacts.download_artifacts(
            run_id=self.mlrun.info.run_id, artifact_path=[p for p in images if p.endswith(".png")][0],
            tracking_uri=self.work.uri)
        grid = np.asarray(Image.open(local))
        self.assertEqual(grid.shape, (4 * 30 + 2, 4 * 30 + 2, 3), "16 samples -> 4x4 grid")

    def test_generator_is_logged_as_mlflow_model_and_keras_file(self):
        self.assertIn(tracking.GENERATOR_FILE, self.artifacts())
        model_uri = self.mlrun.data.tags["generator_model_uri"]
        model = mlflow.models.Model.load(model_uri)
        self.assertIn("python_function", model.flavors)  # served by gan_pipeline.serving
        self.assertEqual(model.signature.inputs.inputs[0].shape, (-1, 8))  # z -> samples
        self.assertEqual(model.signature.outputs.inputs[0].shape, (-1, 28, 28, 1))
        local = Path(mlflow.artifacts.download_artifacts(model_uri))
        self.assertTrue((local / "artifacts" / tracking.GENERATOR_FILE).is_file())
        self.assertTrue((local / "code" / "gan_pipeline" / "kinds.py").is_file())
        requirements = (local / "requirements.txt").read_text()
        self.assertIn("tensorflow==", requirements)
        self.assertIn("keras==", requirements)

    def test_sample_from_run_id_model_uri_and_keras_file(self):
        keras_file = mlflow.artifacts.download_artifacts(
            run_id=self.mlrun.info.run_id, artifact_path=tracking.GENERATOR_FILE,
            tracking_uri=self.work.uri)
        run_id = self.mlrun.info.run_id
        logged_model = self.mlrun.data.tags["generator_model_uri"]
        # MLflow 3: the generator is a LoggedModel of the run (models:/<model id>); the older
        # runs:/<run id>/generator form still names it.
        self.assertRegex(logged_model, r"^models:/m-[0-9a-f]+$")
        outputs = []
        for model in (run_id, logged_model, keras_file, f"runs:/{run_id}/generator"):
            out = self.work.path / "s.npy"
            code, stdout, err = run_cli("sample", "--model", model, "--n", 30, "--out", out)
            self.assertEqual(code, 0, err)
            x = np.load(out)
            self.assertEqual(x.shape, (30, 28, 28, 1))
            self.assertEqual(x.dtype, np.float32)
            self.assertBetween(float(x.min()), -1.0, 1.0)
            self.assertBetween(float(x.max()), -1.0, 1.0)
            outputs.append(x)
        for other in outputs[1:]:  # the same generator, the same default seed
            self.assertAllClose(outputs[0], other)
        # evaluate logs to the run a LoggedModel came from, as it does for run ids
        self.assertEqual(sampling.run_id_of(logged_model), run_id)
        self.assertEqual(sampling.run_id_of(f"runs:/{run_id}/generator"), run_id)
        self.assertIsNone(sampling.run_id_of("models:/m-0123456789abcdef"))

    def test_sample_seed_reproduces_and_png_is_a_grid(self):
        run_id = self.mlrun.info.run_id
        paths = [self.work.path / name for name in ("a.npy", "b.npy", "c.npy")]
        for path, seed in zip(paths, (1, 1, 2)):
            self.assertEqual(run_cli("sample", "--model", run_id, "--n", 8, "--out", path,
                                     "--seed", seed)[0], 0)
        a, b, c = (np.load(p) for p in paths)
        self.assertAllEqual(a, b)
        self.assertNotAllClose(a, c)
        png = self.work.path / "grid.png"
        self.assertEqual(run_cli("sample", "--model", run_id, "--n", 9, "--out", png)[0], 0)
        self.assertEqual(np.asarray(Image.open(png)).shape, (3 * 30 + 2, 3 * 30 + 2, 3))


@pytest.mark.integration
class TrainAndSample1DTest(tf.test.TestCase):
    def test_training_runs_log_system_metrics_unless_turned_off(self):
        fast = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2",
                "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1"}
        for on in (True, False):
            with self.subTest(on=on), TempWorkdir() as work, mock.patch.dict(os.environ, fast):
                code, _, err = run_cli(
                    "train", "--config", REPO / "pipelines/gaussian_1d.toml",
                    "--set", "data.n_points=20", "--set", "data.num_examples=640",
                    "--set", f"tracking.system_metrics={str(on).lower()}",
                    *tiny_overrides("gaussian_1d", epochs=3))
                self.assertEqual(code, 0, err)
                _, run = only_run(work.uri, "gaussian_1d")
                system = {k for k in run.data.metrics if k.startswith("system/")}
                if on:
                    self.assertIn("system/cpu_utilization_percentage", system)
                    self.assertIn("system/system_memory_usage_megabytes", system)
                else:
                    self.assertEqual(system, set())

    def test_1d_run_logs_histograms_and_moments_and_samples_vectors(self):
        with TempWorkdir() as work:
            code, out, err = run_cli("train", "--config", REPO / "pipelines/gaussian_1d.toml",
                                     "--set", "data.n_points=20", "--set", "data.num_examples=64",
                                     *tiny_overrides("gaussian_1d", epochs=2))
            self.assertEqual(code, 0, err)
            client, run = only_run(work.uri, "gaussian_1d")
            images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
            self.assertLen([p for p in images if p.startswith("images/histogram+step+")
                            and p.endswith(".png")], 2)
            for key in ("gen_mean", "gen_std", "sample_mean", "sample_std"):
                self.assertEqual(
                    [m.step for m in client.get_metric_history(run.info.run_id, key)], [1, 2])
            code, _, err = run_cli("sample", "--model", run.info.run_id, "--n", 40,
                                   "--out", work.path / "v.npy")
            self.assertEqual(code, 0, err)
            self.assertEqual(np.load(work.path / "v.npy").shape, (40, 20))
            self.assertEqual(run_cli("sample", "--model", run.info.run_id, "--n", 40,
                                     "--out", work.path / "v.png")[0], 0)
            self.assertTrue((work.path / "v.png").stat().st_size > 1000)


class BadInputTest(tf.test.TestCase):
    def assertCleanError(self, argv, *fragments):
        with TempWorkdir(store=False) as work:  # where no store exists yet, as for a new user
            code, out, err = run_cli(*argv)
            self.assertEqual(code, 2)
            lines = err.strip().splitlines()
            self.assertLen(lines, 1, err)
            self.assertTrue(lines[0].startswith("gan-pipeline: error: "), err)
            for fragment in fragments:
                self.assertIn(fragment, lines[0])
            store = work.path / "mlflow.db"
            if store.exists():  # a train that fails on input must leave no run behind
                client = mlflow.MlflowClient(work.uri)
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
                self.assertEqual(runs, [])
            self.assertFalse((work.path / "mlruns").exists() and any((work.path / "mlruns")
                                                                      .rglob("*.keras")))

    def test_train_errors(self):
        dcgan = REPO / "pipelines/mnist_dcgan.toml"
        self.assertCleanError(["train", "--config", dcgan, "--set", "epochz=1"], "'epochz'",
                              "'epochs'")
        self.assertCleanError(["train", "--config", dcgan, "--set", "batch_size=0"],
                              "batch_size = 0", ">= 1")
        self.assertCleanError(["train", "--config", dcgan, "--set", "data.dataset=mnsit"],
                              "unknown dataset 'mnsit'", "'mnist'")
        self.assertCleanError(["train", "--config", dcgan, "--set", "data.dataset=imdb_reviews"],
                              "no 'image' feature")
        with tempfile.TemporaryDirectory() as empty:
            self.assertCleanError(["train", "--config", dcgan, "--set", f"data.data_dir={empty}",
                                   "--set", "data.download=false"],
                                  "'mnist' is not prepared in " + empty)
        self.assertCleanError(["train", "--config", "pipelines/missing.toml"], "does not exist")

    def test_tf_config_is_for_train_alone(self):
        cluster = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": ' \
                  '"worker", "index": 0}}'
        with mock.patch.dict(os.environ, {"TF_CONFIG": cluster}):
            self.assertCleanError(["run", REPO / "pipelines/gaussian_1d.toml"],
                                  "does not run under TF_CONFIG", "gan-pipeline train --config")
            self.assertCleanError(["sample", "--model", "g.keras", "--out", "x.npy"],
                                  "does not run under TF_CONFIG")
        with mock.patch.dict(os.environ, {"TF_CONFIG": cluster,
                                          "GAN_PIPELINE_COLLECTIVE_TIMEOUT": "soon"}):
            self.assertCleanError(["train", "--config", REPO / "pipelines/gaussian_1d.toml"],
                                  "GAN_PIPELINE_COLLECTIVE_TIMEOUT", "seconds")

    def test_sample_errors(self):
        self.assertCleanError(["sample", "--model", "nope.keras", "--out", "x.npy"],
                              "'nope.keras' does not exist")
        self.assertCleanError(["sample", "--model", "0" * 32, "--out", "x.npy"],
                              "no MLflow store at", "MLFLOW_TRACKING_URI")
        with TempWorkdir() as work:  # a store that exists but has no such run
            mlflow.MlflowClient(work.uri).search_experiments()
            code, _, err = run_cli("sample", "--model", "0" * 32, "--out", "x.npy")
            self.assertEqual(code, 2)
            self.assertIn("run '" + "0" * 32 + "' has no generator.keras", err)
        self.assertCleanError(["sample", "--model", "my-generator", "--out", "x.npy"],
                              "--model 'my-generator' is not valid")

    def test_more_user_mistakes_are_one_line(self):
        dcgan = REPO / "pipelines/mnist_dcgan.toml"
        self.assertCleanError(["train", "--config", REPO / "pipelines"], "is a folder")
        self.assertCleanError(["sample", "--model", REPO / "pipelines", "--out", "x.npy"],
                              "is a folder, not a .keras file")
        self.assertCleanError(["sample", "--model", "0" * 32, "--out", "/proc/x.npy"],
                              "--out '/proc/x.npy': cannot write in '/proc'")
        self.assertCleanError(["sample", "--model", "0" * 32, "--out", "."], "is not valid")
        self.assertCleanError(["train", "--config", dcgan, "--set", "seed=4294967296"],
                              "seed = 4294967296")
        self.assertCleanError(["train", "--config", dcgan, "--set", "train.d_learning_rate=nan"],
                              "train.d_learning_rate", "finite")

    def test_tracking_uris_are_checked_and_never_show_credentials(self):
        dcgan = REPO / "pipelines/mnist_dcgan.toml"
        for uri, shown in (("garbage://x", "tracking URI 'garbage://x' is not one MLflow can "
                                           "log to"),
                           ("http://alice:s3cret@127.0.0.1:9", "MLflow tracking server "
                                                               "http://***@127.0.0.1:9 is "
                                                               "unreachable")):
            with TempWorkdir(store=False) as work, mock.patch.dict(os.environ,
                                                                   {"MLFLOW_TRACKING_URI": uri}):
                code, out, err = run_cli("train", "--config", dcgan)
                self.assertEqual(code, 2, err)
                (line,) = err.strip().splitlines()
                self.assertTrue(line.startswith(f"gan-pipeline: error: {shown}"), line)
                self.assertNotIn("s3cret", out + err)
                self.assertFalse((work.path / "mlflow.db").exists())
        self.assertEqual(tracking.redact("see https://bob:pw@host/x and sqlite:///a.db"),
                         "see https://***@host/x and sqlite:///a.db")
        cfg = {"tracking": {"uri": "http://u:p@h:5000"}, "seed": 1}
        self.assertEqual(tracking.redacted_config(cfg)["tracking"]["uri"], "http://***@h:5000")
        self.assertEqual(cfg["tracking"]["uri"], "http://u:p@h:5000", "the config is untouched")

    def test_evaluate_errors(self):
        self.assertCleanError(["evaluate", "--model", "nope.keras", "--n", "5"], "--n 5 is too small")

    @pytest.mark.process
    def test_console_script_exit_status(self):
        script = Path(sys.executable).parent / "gan-pipeline"
        result = subprocess.run([str(script), "train", "--config", "pipelines/mnist_dcgan.toml",
                                 "--set", "train.loss=hnge"], cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(result.stderr.strip().splitlines()[-1],
                         "gan-pipeline: error: train.loss = 'hnge' is not valid: expected one of "
                         "'hinge', 'least_squares', 'minimax', 'non_saturating', 'relativistic', "
                         "'wasserstein'. Did you mean 'hinge'?")


    @pytest.mark.process
    def test_a_command_freezes_its_imports_and_leaves_the_collector_on(self):
        # a fresh process: the imports' objects are frozen once (cli.freeze_imports), and the
        # collector is on again afterwards, even where the command fails on its input
        probe = ("import gc; from gan_pipeline import cli; "
                 "code = cli.main(['train', '--config', 'pipelines/mnist_dcgan.toml', "
                 "'--set', 'epochz=1']); print(code, gc.get_freeze_count(), gc.isenabled())")
        result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                                text=True, timeout=300)
        code, frozen, enabled = result.stdout.split()
        self.assertEqual(code, "2", result.stderr)
        self.assertGreater(int(frozen), 100_000, "TensorFlow's and Keras' objects are frozen")
        self.assertEqual(enabled, "True")

@pytest.mark.slow
class RealMnistSmokeTest(tf.test.TestCase):
    """The real pipeline file on the real, offline MNIST for a few steps."""

    def test_dcgan_pipeline_on_real_mnist(self):
        data_dir = real_tfds_dir(self)
        with TempWorkdir() as work:
            code, out, err = run_cli("train", "--config", REPO / "pipelines/mnist_dcgan.toml",
                                     "--set", "epochs=1", "--set", "train.steps_per_epoch=5",
                                     "--set", f"data.data_dir={data_dir}",
                                     "--set", "data.download=false",
                                     # (judging 5 steps would train the classifier: no figure
                                     # here needs it, tests/test_evaluation.py covers it)
                                     "--set", "eval.every_epochs=0")
            self.assertEqual(code, 0, err)
            client, run = only_run(work.uri, "mnist_dcgan")
            self.assertEqual(run.data.params["resolved.train_examples"], "60000")
            self.assertEqual(run.data.params["resolved.sample_shape"], "[28, 28, 1]")
            code, _, err = run_cli("sample", "--model", run.info.run_id, "--n", 200,
                                   "--out", work.path / "s.npy")
            self.assertEqual(code, 0, err)
            x = np.load(work.path / "s.npy")
            self.assertEqual(x.shape, (200, 28, 28, 1))
            self.assertBetween(float(x.min()), -1.0, 1.0)


class NotAGeneratorTest(tf.test.TestCase):
    def test_sample_and_evaluate_refuse_a_model_that_is_not_a_generator(self):
        import keras

        with TempWorkdir() as work:
            x = keras.Input((28, 28, 1))
            other = keras.Model(x, keras.layers.Dense(10)(keras.layers.Flatten()(x)),
                                name="feature_classifier")
            other.save(work.path / "classifier.keras")
            for argv in (["sample", "--model", "classifier.keras", "--out", "x.npy"],
                         ["evaluate", "--model", "classifier.keras"]):
                code, _, err = run_cli(*argv)
                self.assertEqual(code, 2, err)
                self.assertLen(err.strip().splitlines(), 1, err)
                self.assertIn("is not a gan-pipeline generator", err)
                self.assertFalse((work.path / "x.npy").exists())
