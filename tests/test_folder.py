"""`data.dataset = "folder"`: your own images. Small folders are made here (grayscale and RGB,
with labels and without, a corrupt file, mixed sizes), read, profiled, evaluated and trained on."""

import io
import json
import tempfile
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from gan_pipeline import config, data
from gan_pipeline.data import folder as folder_mod
from gan_pipeline.pipeline.runner import Pipeline
from tests.helpers import REPO, TINY, TempWorkdir
from tests.test_cli import only_run, run_cli, tiny_overrides


def _pattern(rng, size, channels):
    """A smooth random picture (not noise), uint8."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    layers = [np.sin(6 * (rng.uniform() * xx + rng.uniform() * yy) + rng.uniform(0, 6))
              for _ in range(channels)]
    return np.round((np.stack(layers, -1) + 1) * 127.5).astype(np.uint8)


def write_image(path: Path, rng, size=(28, 28), channels=1, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = _pattern(rng, size, channels)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels,
                            mode="L" if channels == 1 else "RGB")
    image.save(path, format=fmt)


def gray_labelled(root: Path, per_class=24, size=(28, 28)) -> Path:
    rng = np.random.default_rng(0)
    for label in ("circles", "lines"):
        for i in range(per_class):
            write_image(root / label / f"{i:03d}.png", rng, size, 1)
    return root


def rgb_unlabelled(root: Path, n=48, size=(16, 16)) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        write_image(root / f"img{i:03d}.jpg", rng, size, 3, fmt="JPEG")
    return root


def messy(root: Path) -> Path:
    """Mixed sizes and formats, two corrupt files and a stray text file."""
    rng = np.random.default_rng(2)
    for i in range(40):
        size = (28, 28) if i % 2 == 0 else (36, 20)
        fmt, ext = (("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"))[i % 3]
        write_image(root / "sub" / f"{i:03d}.{ext}", rng, size, 1, fmt=fmt)
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (root / "notes.txt").write_text("not an image")
    return root


def open_folder(path, **settings):
    cfg = config.validate({"data": {"dataset": "folder", "path": str(path), **settings},
                           "model": {"name": "dcgan"}})
    return data.open_source(cfg)


def folder_train(path, family="dcgan", *sets, epochs=1):
    pipeline = {"dcgan": "mnist_dcgan.toml", "mlp": "mnist_mlp.toml"}[family]
    return run_cli("train", "--config", REPO / "pipelines" / pipeline,
                   "--set", "data.dataset=folder", "--set", f"data.path={path}",
                   "--set", "eval.n_samples=100", *tiny_overrides(family, epochs=epochs),
                   *[a for s in sets for a in ("--set", s)])


class FolderSourceTest(tf.test.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())

    def test_grayscale_subfolders_are_the_labels(self):
        source = open_folder(gray_labelled(self.tmp / "digits"))
        self.assertEqual(source.shape, (28, 28, 1))
        self.assertEqual(source.num_examples, 48)
        self.assertEqual(source.class_names, ["circles", "lines"])
        self.assertEqual(source.class_counts(), {"circles": 24, "lines": 24})
        batch = next(iter(source.batches(16))).numpy()
        self.assertEqual(batch.shape, (16, 28, 28, 1))
        self.assertBetween(float(batch.min()), -1.0, 1.0)
        self.assertBetween(float(batch.max()), -1.0, 1.0)
        self.assertGreater(batch.std(), 0.1)

    def test_rgb_images_at_the_top_have_no_labels(self):
        source = open_folder(rgb_unlabelled(self.tmp / "rgb"))
        self.assertEqual(source.shape, (16, 16, 3))
        self.assertIsNone(source.class_names)
        task = source.classifier_data()
        self.assertIn("rotation", task["task"])
        self.assertEqual(task["classes"], ["rotated 0", "rotated 90", "rotated 180",
                                           "rotated 270"])

    def test_corrupt_files_are_skipped_and_reported_and_sizes_unified(self):
        root = messy(self.tmp / "messy")
        out = io.StringIO()
        with mock.patch("sys.stderr", out):
            source = open_folder(root)
        self.assertEqual(source.num_examples, 40)
        self.assertEqual(source.shape, (28, 28, 1), "the first image's size")
        self.assertEqual(sorted(source.skipped), ["sub/broken.png", "truncated.jpg"])
        self.assertEqual(source.resized, 20)
        self.assertIsNone(source.class_names, "one subfolder is no labels")
        self.assertRegex(out.getvalue(), r"skipped 2 of 42 image files .*could not be decoded: ")
        for name in ("sub/broken.png", "truncated.jpg"):
            self.assertIn(name, out.getvalue())
        profile, dataset = source.profile()
        self.assertEqual((profile["skipped"], profile["other_files"], profile["resized"]),
                         (2, 1, 20))
        self.assertEqual(sorted(profile["skipped_files"]), ["sub/broken.png", "truncated.jpg"])
        self.assertIn("messy", dataset.name)

    def test_image_size_and_channels_settings(self):
        root = gray_labelled(self.tmp / "g", per_class=4)
        source = open_folder(root, image_size=[12, 20], channels=3)
        self.assertEqual(source.shape, (12, 20, 3))
        rgb = open_folder(rgb_unlabelled(self.tmp / "c", n=4), channels=1)
        self.assertEqual(rgb.shape, (16, 16, 1))

    def test_files_are_decoded_once_then_read_from_the_cache(self):
        root = gray_labelled(self.tmp / "once", per_class=4)
        first = open_folder(root)
        with mock.patch.object(folder_mod, "_decode", side_effect=AssertionError("decoded")):
            second = open_folder(root)
        self.assertAllEqual(first.images, second.images)
        self.assertEqual(second.class_names, first.class_names)
        write_image(root / "circles" / "new.png", np.random.default_rng(5))
        self.assertEqual(open_folder(root).num_examples, 9, "a changed folder is read again")


@pytest.mark.integration
class BadFolderTest(tf.test.TestCase):
    def assertOneLine(self, path, *fragments, family="dcgan"):
        with TempWorkdir() as work:
            code, _, err = folder_train(path, family)
            self.assertEqual(code, 2, err)
            lines = err.strip().splitlines()
            self.assertLen(lines, 1, err)
            self.assertTrue(lines[0].startswith("gan-pipeline: error: "), err)
            for fragment in fragments:
                self.assertIn(fragment, lines[0])
            self.assertFalse((work.path / "mlflow.db").exists()
                             and mlflow.MlflowClient(work.uri).search_runs(
                                 [e.experiment_id for e in mlflow.MlflowClient(
                                     work.uri).search_experiments()]), "no run left behind")

    def test_each_bad_folder_is_one_line(self):
        tmp = Path(tempfile.mkdtemp())
        self.assertOneLine(tmp / "missing", str(tmp / "missing"), "no such folder")
        (tmp / "file.png").write_bytes(b"x")
        self.assertOneLine(tmp / "file.png", "is a file, not a folder")
        (tmp / "empty").mkdir()
        (tmp / "empty" / "readme.txt").write_text("hi")
        self.assertOneLine(tmp / "empty", "no images under this folder", "1 other files")
        (tmp / "junk").mkdir()
        (tmp / "junk" / "a.png").write_bytes(b"not a png")
        self.assertOneLine(tmp / "junk", "none of its 1 image files could be decoded", "a.png")
        rng = np.random.default_rng(0)
        for i in range(4):
            write_image(tmp / "odd" / f"{i}.png", rng, size=(30, 30))
        self.assertOneLine(tmp / "odd", "'dcgan' needs images whose height and width divide by 4",
                           "(30, 30, 1)")


@pytest.mark.integration
class FolderTrainingTest(tf.test.TestCase):
    """The DCGAN and the MLP train on each kind of folder, evaluated as they go."""

    def check_run(self, work, code, err, experiment):
        self.assertEqual(code, 0, err)
        client, run = only_run(work.uri, experiment)
        self.assertEqual(run.info.status, "FINISHED")
        self.assertIn("eval/frechet_distance", run.data.metrics)
        return client, run

    def test_dcgan_on_a_grayscale_labelled_folder_then_sample_and_evaluate(self):
        with TempWorkdir() as work:
            root = gray_labelled(work.path / "shapes")
            code, _, err = folder_train(root, "dcgan")
            client, run = self.check_run(work, code, err, "mnist_dcgan")
            self.assertEqual(run.data.params["resolved.sample_shape"], "[28, 28, 1]")
            self.assertEqual(run.data.params["resolved.classes"], "2")
            self.assertIn("eval/class_max_share", run.data.metrics)
            code, out, err = run_cli("sample", "--model", run.info.run_id, "--n", 9,
                                     "--out", work.path / "s.png")
            self.assertEqual(code, 0, err)
            code, out, err = run_cli("evaluate", "--model", run.info.run_id, "--n", 60)
            self.assertEqual(code, 0, err)
            result = json.loads(out)
            self.assertEqual(result["dataset"], "folder")
            self.assertLen(result["figures"]["class_histogram"], 2)
            self.assertEqual(result["classifier"]["class_names"], ["circles", "lines"])

    def test_mlp_on_an_rgb_folder_without_labels(self):
        with TempWorkdir() as work:
            code, _, err = folder_train(rgb_unlabelled(work.path / "rgb"), "mlp")
            client, run = self.check_run(work, code, err, "mnist_mlp")
            self.assertEqual(run.data.params["resolved.sample_shape"], "[16, 16, 3]")
            self.assertNotIn("eval/class_max_share", run.data.metrics, "no classes to count")
            # a .keras file knows its data: evaluate needs no --config
            keras_file = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="generator.keras", tracking_uri=work.uri)
            code, out, err = run_cli("evaluate", "--model", keras_file, "--n", 60)
            self.assertEqual(code, 0, err)
            result = json.loads(out)
            self.assertIn("no labels", result["note"])
            self.assertIn("rotation", result["classifier"]["task"])

    def test_dcgan_and_mlp_on_a_folder_with_a_corrupt_file_and_mixed_sizes(self):
        for family, experiment in (("dcgan", "mnist_dcgan"), ("mlp", "mnist_mlp")):
            with self.subTest(family=family), TempWorkdir() as work:
                code, out, err = folder_train(messy(work.path / "messy"), family)
                self.check_run(work, code, err, experiment)
                self.assertIn("skipped 2 of 42 image files", err)

    def test_the_pipeline_profiles_tunes_and_registers_a_folder(self):
        with TempWorkdir() as work:
            root = messy(work.path / "messy")
            sets = ["data.dataset=folder", f"data.path={root}", "batch_size=8", "epochs=1",
                    "train.steps_per_epoch=2", "eval.n_samples=100", "eval.final_n_samples=100",
                    "tune.n_samples=100", "tune.max_trials=1", "tune.epochs=1",
                    "tune.steps_per_epoch=2", "tune.tuner=random", "tracking.grid_size=4",
                    "model.name=dcgan", *[f"model.{k}={v}" for k, v in TINY["dcgan"].items()]]
            cfg = config.load(REPO / "pipelines/mnist_dcgan.toml", sets)
            # (stages in this process: their own processes are tests/test_pipeline.py's concern)
            results = Pipeline(cfg, verbose=0, isolate_stages=False).run()
            self.assertEqual([r.status for r in results.values()], ["ran"] * 5)
            profile = mlflow.artifacts.load_dict(
                f"runs:/{results['prepare'].run_id}/dataset.json")
            self.assertEqual((profile["examples"], profile["skipped"]), (40, 2))
            self.assertIn("truncated.jpg", profile["skipped_files"])
            client = mlflow.MlflowClient(work.uri)
            self.assertIn("quality/frechet_distance",
                          client.get_run(results["train"].run_id).data.metrics)
            # a new image in the folder makes the data stages stale
            write_image(root / "extra.png", np.random.default_rng(9))
            again = Pipeline(config.load(REPO / "pipelines/mnist_dcgan.toml", sets),
                             verbose=0, isolate_stages=False).run(only="prepare")
            self.assertEqual(again["prepare"].status, "ran")
