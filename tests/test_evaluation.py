"""Evaluation end to end: the cached feature classifier, `gan-pipeline evaluate` on runs of both
kinds (JSON out, figures logged into the run), and training-time evaluation curves."""

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from gan_pipeline import config, data
from tests.helpers import REPO, TempWorkdir, real_tfds_dir
from tests.test_cli import only_run, run_cli, tiny_overrides
from tests.test_data import open_data


class CacheDir:
    """Point GAN_PIPELINE_CACHE at a fresh folder for the duration."""

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory()
        self._old = os.environ.get("GAN_PIPELINE_CACHE")
        os.environ["GAN_PIPELINE_CACHE"] = self._tmp.name
        return Path(self._tmp.name)

    def __exit__(self, *exc):
        if self._old is None:
            os.environ.pop("GAN_PIPELINE_CACHE", None)
        else:
            os.environ["GAN_PIPELINE_CACHE"] = self._old
        self._tmp.cleanup()


class FeatureClassifierTest(tf.test.TestCase):
    def test_trained_once_then_loaded_from_the_cache(self):
        with CacheDir() as cache, tfds.testing.mock_data(num_examples=64):
            first = open_data("mnist", data_dir=str(cache / "tfds")).classifier(epochs=1,
                                                                               verbose=0)
            self.assertTrue(first.path.is_file())
            self.assertEqual(first.path.parent, cache / "classifiers")
            stamp = first.path.stat().st_mtime_ns
            second = open_data("mnist", data_dir=str(cache / "tfds")).classifier(epochs=1,
                                                                                verbose=0)
            self.assertEqual(second.path.stat().st_mtime_ns, stamp, "must not retrain")
            images = np.random.default_rng(0).uniform(-1, 1, (5, 28, 28, 1)).astype(np.float32)
            f1, p1 = first.features(images)
            f2, p2 = second.features(images)
            self.assertEqual(f1.shape, (5, 128))
            self.assertEqual(p1.shape, (5, 10))
            self.assertAllClose(f1, f2)
            self.assertAllClose(p1.sum(1), np.ones(5), atol=1e-5)


# Another process asking for the same (mocked) MNIST classifier.
_ASK_FOR_THE_CLASSIFIER = (
    "import tensorflow_datasets as tfds; from tests.test_data import open_data\n"
    "with tfds.testing.mock_data(num_examples=64):\n"
    "    open_data('mnist', data_dir={data_dir!r}).classifier(epochs=1, verbose=0)\n"
    "print('loaded', flush=True)\n")


@pytest.mark.process
class OneClassifierWriterTest(tf.test.TestCase):
    def test_a_second_process_waits_for_the_one_training_and_loads_its_classifier(self):
        from gan_pipeline.evaluation import classifier as evaluation_classifier

        with CacheDir() as cache, tfds.testing.mock_data(num_examples=64):
            source = open_data("mnist", data_dir=str(cache / "tfds"))
            path = cache / "classifiers" / f"{source.classifier_key()}.keras"
            path.parent.mkdir(parents=True)
            with open(path.with_suffix(".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # this process is training it
                other = subprocess.Popen(
                    [sys.executable, "-c",
                     _ASK_FOR_THE_CLASSIFIER.format(data_dir=str(cache / "tfds"))],
                    cwd=REPO, env={**os.environ, "GAN_PIPELINE_CACHE": str(cache)},
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                try:
                    line = "start"
                    while line and "Waiting for another process training" not in line:
                        line = other.stdout.readline()  # blocks until it says it waits
                    self.assertTrue(line, "the other process finished without waiting")
                    evaluation_classifier._train(source, path, epochs=1, verbose=0)
                    stamp = path.stat().st_mtime_ns
                except BaseException:
                    other.kill()
                    raise
            rest, _ = other.communicate(timeout=300)
            self.assertEqual(other.returncode, 0)
            self.assertNotIn("Training the evaluation classifier", rest)
            self.assertIn("loaded", rest)
            self.assertEqual(path.stat().st_mtime_ns, stamp, "trained once, not twice")


@pytest.mark.integration
class EvaluateCommandTest(tf.test.TestCase):
    def test_1d_run_gets_json_figures_and_logged_metrics(self):
        with TempWorkdir() as work:
            code, _, err = run_cli("train", "--config", REPO / "pipelines/gaussian_1d.toml",
                                   "--set", "data.n_points=20", "--set", "data.num_examples=64",
                                   "--set", "eval.n_samples=200",
                                   *tiny_overrides("gaussian_1d", epochs=3))
            self.assertEqual(code, 0, err)
            client, run = only_run(work.uri, "gaussian_1d")
            # training-time evaluation: one point per epoch, and a report figure
            ks = client.get_metric_history(run.info.run_id, "eval/ks")
            self.assertEqual([m.step for m in ks], [1, 2, 3])
            self.assertIn("report.png", [a.path for a in client.list_artifacts(run.info.run_id)])

            code, out, err = run_cli("evaluate", "--model", run.info.run_id, "--n", 2000)
            self.assertEqual(code, 0, err)
            result = json.loads(out)
            figures = result["figures"]
            self.assertEqual(figures["n_points"], 2000)
            # the figures are those of the run's generator on seed 0's noise
            from gan_pipeline import metrics, sampling

            values = sampling.sample(sampling.load_generator(run.info.run_id), 100, seed=0)
            expected = metrics.gaussian_fit(values.ravel()[:2000], 4.0, 1.25)
            for key in ("ks", "wasserstein1", "abs_mean_error", "abs_std_error"):
                self.assertAllClose(figures[key], expected[key], rtol=1e-6)
            self.assertLess(result["real_vs_real_floor"]["ks"], 0.05)
            self.assertEqual((result["mean"], result["std"]), (4.0, 1.25))
            logged = client.get_run(run.info.run_id).data.metrics
            self.assertAllClose(logged["quality/ks"], figures["ks"])
            self.assertIn("evaluation.json",
                          [a.path for a in client.list_artifacts(run.info.run_id)])

    def test_image_run_gets_every_figure(self):
        with CacheDir(), TempWorkdir() as work, tfds.testing.mock_data(num_examples=64):
            empty = work.path / "tfds"
            code, _, err = run_cli("train", "--config", REPO / "pipelines/mnist_mlp.toml",
                                   "--set", f"data.data_dir={empty}", "--set", "eval.n_samples=100",
                                   *tiny_overrides("mlp", epochs=1))
            self.assertEqual(code, 0, err)
            client, run = only_run(work.uri, "mnist_mlp")
            self.assertIn("eval/frechet_distance", run.data.metrics)
            # the classifier behind the figures is logged once, in its own run
            classifier_run = client.get_run(run.data.tags["evaluation_classifier_run"])
            # the run records the cached classifier's own accuracy
            (meta,) = (Path(os.environ["GAN_PIPELINE_CACHE"]) / "classifiers").glob("mnist-*.json")
            self.assertAllClose(classifier_run.data.metrics["test_accuracy"],
                                json.loads(meta.read_text())["test_accuracy"])
            (artifact,) = client.list_artifacts(classifier_run.info.run_id)
            self.assertRegex(artifact.path, r"^mnist-3\.0\.1-v1-[0-9a-f]{8}\.keras$")
            code, out, err = run_cli("evaluate", "--model", run.info.run_id, "--n", 200)
            self.assertEqual(code, 0, err)
            result = json.loads(out)
            expected = {"frechet_distance", "kid", "kid_stderr", "classifier_score", "precision",
                        "recall", "density", "coverage", "class_min_share", "class_max_share",
                        "class_histogram"}
            self.assertContainsSubset(expected, result["figures"])
            self.assertContainsSubset(expected, result["real_vs_real_floor"])
            self.assertLen(result["figures"]["class_histogram"], 10)
            self.assertAllClose(sum(result["figures"]["class_histogram"]), 1.0, atol=1e-3)
            self.assertEqual(result["dataset"], "mnist")


class ShippedClassifierTest(tf.test.TestCase):
    """A classifier that ships for the data is copied into the cache, not trained; mocked data
    (no split sizes) never gets it."""

    def test_mocked_mnist_trains_its_own(self):
        with CacheDir() as cache, tfds.testing.mock_data(num_examples=64):
            source = open_data("mnist", data_dir=str(cache / "tfds"))
            self.assertIsNone(source.shipped_classifier())
            self.assertNotIn("shipped", source.classifier_key())

    def test_an_exported_classifier_is_installed_instead_of_trained(self):
        from unittest import mock

        from gan_pipeline.evaluation import classifier as evaluation_classifier

        with CacheDir() as cache, tfds.testing.mock_data(num_examples=64):
            source = open_data("mnist", data_dir=str(cache / "tfds"))
            trained = source.classifier(epochs=1, verbose=0)
            shipped = evaluation_classifier.export_shipped(trained, cache / "ship", "mnist-x",
                                                           trained_on="this test")
            self.assertEqual(json.loads(shipped.with_suffix(".json").read_text())["source"],
                             "shipped")
            again = open_data("mnist", data_dir=str(cache / "tfds"))
            with mock.patch.object(type(again), "shipped_classifier", return_value=shipped), \
                    mock.patch.object(type(again), "classifier_key", return_value="k-shipped"), \
                    mock.patch.object(evaluation_classifier, "_train",
                                      side_effect=AssertionError("trained")):
                installed = again.classifier()
            self.assertEqual(installed.path, cache / "classifiers" / "k-shipped.keras")
            self.assertEqual(installed.info["data_dir"], trained.info["data_dir"])
            self.assertEqual(installed.info["trained_on"], "this test")
            self.assertIsNone(getattr(installed.model, "optimizer", None))  # no Adam state
            images = np.random.default_rng(0).uniform(-1, 1, (5, 28, 28, 1)).astype(np.float32)
            self.assertAllClose(installed.features(images)[0], trained.features(images)[0])


@pytest.mark.slow
class RealMnistClassifierTest(tf.test.TestCase):
    def test_the_shipped_one_scores_99_percent_and_its_figures_tell_true_shuffled_collapsed(self):
        data_dir = real_tfds_dir(self)
        cfg = config.load(REPO / "pipelines/mnist_cgan.toml",
                          [f"data.data_dir={data_dir}", "data.download=false"])
        source = data.open_source(cfg)
        self.assertIsNotNone(source.shipped_classifier(), "prepared MNIST gets the shipped one")
        judge = source.evaluator(2000, 0)
        self.assertEqual(judge.classifier.info["source"], "shipped")
        # its accuracy measured here, on this machine, over the whole test split
        _, probs = source.reference_features()  # (the evaluations below reuse them)
        accuracy = float(np.mean(probs.argmax(1) == source.reference_labels()))
        self.assertGreaterEqual(accuracy, 0.99)
        self.assertAllClose(accuracy, judge.classifier.info["test_accuracy"], atol=1e-3)
        images, labels = judge.source.floor_labelled(5000, 0)
        right = judge.evaluate(images, manifold=False, labels=labels)
        wrong = judge.evaluate(images, manifold=False,
                               labels=np.random.default_rng(0).permutation(labels))
        self.assertAllClose(right["label_accuracy"], accuracy, atol=0.01)
        self.assertBetween(wrong["label_accuracy"], 0.07, 0.13)
        self.assertLess(right["intra_fd"] * 5, wrong["intra_fd"])
        # real digits have their class's variety; one digit repeated per class has none
        first = [int(np.flatnonzero(labels.reshape(-1) == c)[0]) for c in range(10)]
        one_kind = images[np.array(first)[labels.reshape(-1)]]
        varied = judge.evaluate(images, labels=labels)
        collapsed = judge.evaluate(one_kind, labels=labels)
        self.assertGreater(varied["intra_recall_worst"], 0.6)
        self.assertLess(collapsed["intra_recall"], 0.05)
        self.assertGreater(collapsed["fd_over_recall"], 10 * varied["fd_over_recall"])


class FinishedRunsStayFinishedTest(tf.test.TestCase):
    def test_an_evaluation_cut_short_leaves_the_train_run_finished(self):
        from unittest import mock

        from gan_pipeline import tracking

        with TempWorkdir() as work:
            tracking.configure()
            mlflow.set_experiment("e")
            with mlflow.start_run() as run:
                mlflow.log_metric("d_loss", 1.0)
            result = {"figures": {"ks": 0.1, "n_points": 10}}
            with mock.patch.object(mlflow.MlflowClient, "log_dict",
                                   side_effect=KeyboardInterrupt):
                with self.assertRaises(KeyboardInterrupt):
                    tracking.log_evaluation(run.info.run_id, result)
            client = mlflow.MlflowClient(work.uri)
            self.assertEqual(client.get_run(run.info.run_id).info.status, "FINISHED")
            tracking.log_evaluation(run.info.run_id, result)  # the next `run` retries it
            self.assertEqual(client.get_run(run.info.run_id).data.metrics["quality/ks"], 0.1)
