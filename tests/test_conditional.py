"""Conditional GANs: the label reaches both networks, each step still touches only its own
weights, fake labels follow the setting, `sample --label` makes the class asked for, and the
label figures read known cases right."""

import json
import tempfile
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from gan_pipeline import config, data, evaluation, families, kinds, metrics, sampling
from gan_pipeline.errors import UserError
from gan_pipeline.factory import build_gan
from gan_pipeline.pipeline.runner import Pipeline
from tests.helpers import REPO, TINY, TempWorkdir
from tests.test_cli import only_run, run_cli, tiny_overrides
from tests.test_folder import gray_labelled, rgb_unlabelled
from tests.test_gan import changed, snapshot

CLASSES = [str(i) for i in range(10)]
CONDITIONAL = ("cdcgan", "cmlp")
D_CONDITIONING = ("projection", "concat")


def tiny_cgan(family="cdcgan", seed=0, *sets, class_shares=None):
    keras.utils.set_random_seed(seed)
    cfg = config.validate(config.apply_overrides(
        {"seed": seed, "model": {"name": family, **TINY[family]}}, list(sets)))
    return build_gan(cfg, (28, 28, 1), total_batches=10, class_names=CLASSES,
                     class_shares=class_shares)


def labels_of(*values):
    return np.array(values, np.int32).reshape(-1, 1)


class ConditionalFamiliesTest(tf.test.TestCase):
    def test_shapes_the_label_matters_and_a_safe_mode_round_trip(self):
        for name, how in ((n, h) for n in CONDITIONAL for h in D_CONDITIONING):
            with self.subTest(name, d_conditioning=how):
                g, d = families.build(name, (28, 28, 1), 10, **TINY[name], d_conditioning=how)
                self.assertEqual([tuple(i.shape) for i in g.inputs], [(None, 8), (None, 1)])
                self.assertEqual(tuple(g.output_shape), (None, 28, 28, 1))
                self.assertEqual([tuple(i.shape) for i in d.inputs], [(None, 28, 28, 1),
                                                                      (None, 1)])
                self.assertEqual(tuple(d.output_shape), (None, 1))
                z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
                sevens, ones = labels_of(7, 7, 7, 7), labels_of(1, 1, 1, 1)
                # the label changes what G makes and how D judges it (if only slightly at
                # initialisation: the MLP's weights start at N(0, 0.02))
                self.assertFalse(np.array_equal(g([z, sevens]), g([z, ones])))
                x = g([z, sevens]).numpy()
                self.assertFalse(np.array_equal(d([x, sevens]), d([x, ones])))
                with tempfile.TemporaryDirectory() as tmp:
                    for model, inputs in ((g, [z, sevens]), (d, [x, sevens])):
                        path = Path(tmp) / f"{model.name}.keras"
                        model.save(path)
                        loaded = keras.models.load_model(path, safe_mode=True, compile=False)
                        self.assertAllClose(loaded(inputs), model(inputs))

    def test_d_conditioning_is_one_of_its_choices(self):
        with self.assertRaisesRegex(UserError, "model.d_conditioning = 'projected' is not "
                                               "valid: expected one of 'projection', 'concat'"):
            config.validate({"model": {"name": "cdcgan", "d_conditioning": "projected"}})
        with self.assertRaisesRegex(UserError, "d_conditioning must be one of"):
            families.build("cmlp", (28, 28, 1), 10, **TINY["cmlp"], d_conditioning="both")

    def test_a_conditional_family_needs_classes(self):
        with self.assertRaisesRegex(UserError, "conditional: it needs data with at least two"):
            families.build("cdcgan", (28, 28, 1), **TINY["cdcgan"])

    def test_unconditional_families_are_unchanged(self):
        g, d = families.build("dcgan", (28, 28, 1), **TINY["dcgan"])
        self.assertEqual(len(g.inputs), 1)
        self.assertEqual(len(d.inputs), 1)


class ConditionalStepTest(tf.test.TestCase):
    def setUp(self):
        self.gan = tiny_cgan()
        rng = np.random.default_rng(0)
        self.real = rng.uniform(-1, 1, (8, 28, 28, 1)).astype(np.float32)
        self.labels = labels_of(*rng.integers(0, 10, 8))

    def test_discriminator_step_with_labels_changes_only_discriminator_weights(self):
        for how in D_CONDITIONING:
            with self.subTest(d_conditioning=how):
                gan = tiny_cgan("cdcgan", 0, f"model.d_conditioning={how}")
                g_before = snapshot(gan.generator.trainable_weights)
                d_before = snapshot(gan.discriminator.trainable_weights)
                gan.discriminator_step(self.real, self.labels)
                self.assertFalse(any(changed(g_before, gan.generator.trainable_weights)))
                # every D weight moves, the label embedding (projection or plane) included
                self.assertTrue(all(changed(d_before, gan.discriminator.trainable_weights)))

    def test_generator_step_changes_only_generator_weights(self):
        g_before = snapshot(self.gan.generator.trainable_weights)
        d_before = snapshot(self.gan.discriminator.weights)
        self.gan.generator_step(8)
        self.assertFalse(any(changed(d_before, self.gan.discriminator.weights)))
        self.assertTrue(all(changed(g_before, self.gan.generator.trainable_weights)))

    def test_train_step_takes_images_and_labels_and_refuses_images_alone(self):
        logs = self.gan.train_step((tf.constant(self.real), tf.constant(self.labels[:, 0])))
        self.assertEqual(set(logs), {"d_loss", "g_loss", "d_real", "d_fake"})
        with self.assertRaisesRegex(ValueError, r"\(images, labels\) batches"):
            self.gan.train_step(tf.constant(self.real))

    def test_real_labels_reach_the_discriminator(self):
        """D's loss on real images depends on the labels they come with."""
        real_logits = []
        for labels in (labels_of(*[3] * 8), labels_of(*[5] * 8)):
            gan = tiny_cgan()
            _, step = gan.discriminator_step(self.real, labels)
            real_logits.append(step.real_logits.numpy())
        self.assertNotAllClose(*real_logits)

    def test_fake_labels_uniform_or_by_the_data_shares(self):
        uniform = np.bincount(self.gan.sample_labels(20_000).numpy().ravel(), minlength=10)
        self.assertAllInRange(uniform / 20_000, 0.09, 0.11)
        shares = [0.5, 0.5] + [0.0] * 8
        skewed = tiny_cgan("cdcgan", 0, "train.fake_labels=data", class_shares=shares)
        drawn = np.bincount(skewed.sample_labels(20_000).numpy().ravel(), minlength=10)
        self.assertEqual(drawn[2:].sum(), 0)
        self.assertBetween(drawn[0] / 20_000, 0.48, 0.52)

    def test_the_gan_round_trips_with_its_classes(self):
        shares = [0.1] * 10
        gan = tiny_cgan("cmlp", 0, "train.fake_labels=data", class_shares=shares)
        with tempfile.TemporaryDirectory() as tmp:
            gan.save(Path(tmp) / "gan.keras")
            loaded = keras.models.load_model(Path(tmp) / "gan.keras", safe_mode=True)
        self.assertEqual((loaded.num_classes, loaded.label_probs), (10, shares))
        inputs = [gan.sample_noise(3), labels_of(0, 4, 9)]
        self.assertAllClose(loaded(inputs), gan(inputs))
        self.assertEqual(kinds.spec_of(loaded.generator)["class_names"], CLASSES)


class ConditionalDataTest(tf.test.TestCase):
    def test_tfds_and_folder_sources_give_labelled_batches(self):
        with tfds.testing.mock_data(num_examples=64):
            cfg = config.load(REPO / "pipelines/mnist_cgan.toml", ["batch_size=16"])
            source = data.open_source(cfg)
            images, labels = next(iter(source.batches(16, labels=True)))
            self.assertEqual(images.shape, (16, 28, 28, 1))
            self.assertEqual((labels.shape, labels.dtype), ((16,), tf.int32))
            self.assertAllInRange(labels, 0, 9)
        with tempfile.TemporaryDirectory() as tmp:
            folder = gray_labelled(Path(tmp) / "shapes", per_class=12)
            cfg = config.validate({"data": {"dataset": "folder", "path": str(folder)},
                                   "model": {"name": "cdcgan"}})
            source = data.open_source(cfg)
            pairs = list(source.labelled_examples())
            self.assertEqual(sorted(int(y) for _, y in pairs), [0] * 12 + [1] * 12)
            self.assertEqual(source.class_shares(), [0.5, 0.5])

    def test_a_conditional_family_on_data_without_labels_is_one_error(self):
        with tempfile.TemporaryDirectory() as tmp:
            folder = rgb_unlabelled(Path(tmp) / "photos", n=8, size=(16, 16))
            cfg = config.validate({"data": {"dataset": "folder", "path": str(folder)},
                                   "model": {"name": "cdcgan"}})
            with self.assertRaisesRegex(UserError, "needs labelled data .* has no labels"):
                data.open_source(cfg)
        with self.assertRaisesRegex(UserError, "makes images but data.dataset = 'gaussian_1d'"):
            config.validate({"data": {"dataset": "gaussian_1d"}, "model": {"name": "cmlp"}})

    def test_label_objectives_only_for_conditional_models(self):
        config.load(REPO / "pipelines/mnist_cgan.toml", ["tune.objective=label_accuracy"])
        with self.assertRaisesRegex(UserError, "tune.objective = 'label_accuracy' is not a "
                                               "figure this model reports"):
            config.load(REPO / "pipelines/mnist_dcgan.toml", ["tune.objective=label_accuracy"])


class SamplingLabelsTest(tf.test.TestCase):
    def setUp(self):
        self.generator = tiny_cgan().generator

    def test_without_a_label_samples_spread_evenly_in_class_order(self):
        self.assertEqual(sampling.spread_labels(100, 10).ravel().tolist(),
                         [c for c in range(10) for _ in range(10)])
        samples, labels = sampling.sample_with_labels(self.generator, 20, seed=3)
        self.assertEqual(samples.shape, (20, 28, 28, 1))
        z = sampling.noise((20, 8), "normal", 3)
        self.assertAllClose(samples, self.generator([z, sampling.spread_labels(20, 10)]))

    def test_a_label_by_index_or_name_makes_that_class_reproducibly(self):
        a, labels = sampling.sample_with_labels(self.generator, 5, seed=1, label="7")
        self.assertEqual(labels.ravel().tolist(), [7] * 5)
        z = sampling.noise((5, 8), "normal", 1)
        self.assertAllClose(a, self.generator([z, np.full((5, 1), 7, np.int32)]))
        b, _ = sampling.sample_with_labels(self.generator, 5, seed=1, label=7)
        self.assertAllClose(a, b)
        self.assertEqual(sampling.class_index(["cat", "dog"], "dog"), 1)

    def test_a_label_outside_the_classes_names_the_allowed_ones(self):
        for bad in ("12", "-1", "seven"):
            with self.assertRaisesRegex(UserError, r"--label '.*' is not one of this "
                                                   r"generator's classes; allowed: 0, 1, .*9"):
                sampling.sample_with_labels(self.generator, 5, label=bad)

    def test_a_label_for_an_unconditional_generator_is_an_error(self):
        g, _ = families.build("mlp", (28, 28, 1), **TINY["mlp"])
        g = kinds.attach_spec(g, noise="normal", kind="images", family="mlp")
        with self.assertRaisesRegex(UserError, "--label needs a conditional generator"):
            sampling.sample_with_labels(g, 5, label="3")
        self.assertEqual(sampling.sample_with_labels(g, 5)[1], None)


class LabelFiguresTest(tf.test.TestCase):
    def test_label_accuracy_and_intra_class_fd_on_known_cases(self):
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(10), 100)
        probs = np.eye(10)[labels]
        overall, per_class = metrics.label_accuracy(probs, labels, 10)
        self.assertEqual((overall, per_class), (1.0, [1.0] * 10))
        shuffled = rng.permutation(labels)
        overall, _ = metrics.label_accuracy(probs, shuffled, 10)
        self.assertBetween(overall, 0.06, 0.14)
        # features that cluster by class: right labels give ~0, shuffled ones do not
        feats = rng.standard_normal((1000, 4)) * 0.1 + labels[:, None]
        right = metrics.intra_class_frechet(feats, labels, feats, labels, 10)
        wrong = metrics.intra_class_frechet(feats, labels, feats, shuffled, 10)
        self.assertLess(max(right), 1e-6)
        self.assertGreater(min(wrong), 1.0)
        self.assertEqual(metrics.intra_class_frechet(feats, labels, feats[:5], labels[:5], 10)[9],
                         None)

    def test_intra_class_recall_sees_one_kind_per_class(self):
        rng = np.random.default_rng(0)
        labels = np.repeat(np.arange(10), 100)
        real = rng.standard_normal((1000, 4)) + 5 * labels[:, None]
        varied = rng.standard_normal((1000, 4)) + 5 * labels[:, None]
        # every sample of a class is (nearly) that class's first real one
        same = real[labels * 100] + 0.01 * rng.standard_normal((1000, 4))
        good = metrics.intra_class_precision_recall(real, labels, varied, labels, 10)
        bad = metrics.intra_class_precision_recall(real, labels, same, labels, 10)
        self.assertGreater(min(r for _, r in good), 0.8)
        self.assertGreater(min(p for p, _ in bad), 0.9)  # each sample looks right...
        self.assertLess(max(r for _, r in bad), 0.1)     # ...but there is one kind of each
        # a class without enough samples is not judged
        self.assertIsNone(metrics.intra_class_precision_recall(
            real, labels, varied[:3], labels[:3], 10)[0])

    def test_fd_over_recall_makes_dropping_modes_cost(self):
        self.assertAlmostEqual(metrics.fd_over_recall(4.0, 0.8), 5.0)
        self.assertAlmostEqual(metrics.fd_over_recall(4.0, 0.4), 10.0)
        self.assertAlmostEqual(metrics.fd_over_recall(4.0, 0.0), 4.0 / metrics.RECALL_FLOOR)
        self.assertEqual(evaluation.DIRECTIONS["fd_over_recall"], "min")

    def test_image_searches_rank_by_fd_over_recall_unless_told(self):
        from gan_pipeline import tuning
        with tempfile.TemporaryDirectory() as tmp:
            folder = gray_labelled(Path(tmp) / "shapes", per_class=12)
            for name, objective, expected in (("dcgan", "", "fd_over_recall"),
                                              ("cdcgan", "", "fd_over_recall"),
                                              ("dcgan", "kid", "kid")):
                cfg = config.validate({"data": {"dataset": "folder", "path": str(folder)},
                                       "model": {"name": name},
                                       "tune": {"objective": objective}})
                model = tuning.GANHyperModel(cfg, data.open_source(cfg), None, "parent")
                self.assertEqual((model.objective, model.direction), (expected, "min"))
        one_d = config.validate({"data": {"dataset": "gaussian_1d"},
                                 "model": {"name": "gaussian_1d"}})
        model = tuning.GANHyperModel(one_d, data.open_source(one_d), None, "parent")
        self.assertEqual(model.objective, "ks")
        # intra-class figures only where there are classes asked for
        with self.assertRaisesRegex(UserError, "tune.objective = 'intra_recall' is not a figure"):
            config.load(REPO / "pipelines/mnist_dcgan.toml", ["tune.objective=intra_recall"])
        config.load(REPO / "pipelines/mnist_cgan.toml", ["tune.objective=intra_recall_worst"])

    def test_directions_cover_every_objective(self):
        self.assertEqual(evaluation.DIRECTIONS["label_accuracy"], "max")
        self.assertEqual(evaluation.DIRECTIONS["intra_fd"], "min")


@pytest.mark.integration
class ConditionalRunTest(tf.test.TestCase):
    """A tiny conditional DCGAN trained through the CLI on mocked MNIST, then sampled and
    evaluated."""

    def test_train_sample_with_labels_and_evaluate(self):
        with TempWorkdir() as work, tfds.testing.mock_data(num_examples=64):
            code, _, err = run_cli("train", "--config", REPO / "pipelines/mnist_cgan.toml",
                                   "--set", "eval.n_samples=100", "--set", "tracking.grid_size=20",
                                   *tiny_overrides("cdcgan", epochs=1))
            self.assertEqual(code, 0, err)
            client, run = only_run(work.uri, "mnist_cgan")
            rid = run.info.run_id
            self.assertIn("eval/label_accuracy", run.data.metrics)
            self.assertIn("eval/intra_fd", run.data.metrics)
            info = mlflow.models.get_model_info(run.data.tags["generator_model_uri"])
            self.assertEqual([i["name"] for i in info.signature.inputs.to_dict()], ["z", "label"])

            generator = sampling.load_generator(rid)
            code, out, err = run_cli("sample", "--model", rid, "--n", 5, "--label", "7",
                                     "--seed", 2, "--out", "sevens.npy")
            self.assertEqual(code, 0, err)
            self.assertIn("of class '7'", out)
            z = sampling.noise((5, 8), "normal", 2)
            self.assertAllClose(np.load("sevens.npy"),
                                generator([z, np.full((5, 1), 7, np.int32)]), atol=1e-6)
            code, out, err = run_cli("sample", "--model", rid, "--n", 20, "--seed", 2,
                                     "--out", "all.npz")
            self.assertEqual(code, 0, err)
            with np.load("all.npz") as saved:
                self.assertEqual(saved["labels"].tolist(), [c for c in range(10) for _ in "ab"])
                z = sampling.noise((20, 8), "normal", 2)
                self.assertAllClose(saved["samples"],
                                    generator([z, saved["labels"][:, None]]), atol=1e-6)
            code, out, err = run_cli("sample", "--model", rid, "--n", 20, "--out", "all.png")
            self.assertEqual(code, 0, err)
            self.assertIn("spread over 10 classes", out)
            self.assertTrue(Path("all.png").is_file())
            code, out, err = run_cli("sample", "--model", rid, "--n", 5, "--label", "12",
                                     "--out", "bad.npy")
            self.assertEqual(code, 2)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIn("allowed: 0, 1, 2", err)
            self.assertFalse(Path("bad.npy").exists())

            code, out, err = run_cli("evaluate", "--model", rid, "--n", 200)
            self.assertEqual(code, 0, err)
            figures = json.loads(out)["figures"]
            self.assertEqual(len(figures["label_accuracy_per_class"]), 10)
            self.assertIn(figures["label_accuracy_worst_class"], CLASSES)
            self.assertBetween(figures["label_accuracy"], 0.0, 1.0)
            # (mocked data: a class with at most k = 3 test images is not judged)
            self.assertNotEmpty(figures["recall_per_class"])
            self.assertContainsSubset(figures["recall_per_class"], CLASSES)
            self.assertIn(figures["intra_recall_worst_class"], CLASSES)
            self.assertAllClose(figures["fd_over_recall"], figures["frechet_distance"]
                                / max(figures["intra_recall"], metrics.RECALL_FLOOR))
            floor = json.loads(out)["real_vs_real_floor"]
            self.assertIn("label_accuracy", floor)

            # the evaluation's samples are `sample --label L --seed L`'s (evaluation seed 0)
            source = data.open_source(config.load(REPO / "pipelines/mnist_cgan.toml"))
            judge = source.evaluator(30, 0)
            seen = {}
            judge.evaluate = lambda samples, labels: seen.update(samples=samples, labels=labels)
            judge(generator)
            self.assertEqual(seen["labels"].reshape(-1).tolist(),
                             [c for c in range(10) for _ in range(3)])
            for c in (0, 7):
                asked, _ = sampling.sample_with_labels(generator, 3, seed=c, label=c)
                self.assertAllClose(seen["samples"][3 * c:3 * c + 3], asked, atol=1e-6)


class ClassMixtureTest(tf.test.TestCase):
    """A family that mixes classes trains like its conditional twin and saves a generator of
    noise alone, whose class comes from the noise by the training shares."""

    def test_the_class_comes_from_the_last_noise_coordinate_by_its_share(self):
        z = np.random.default_rng(0).standard_normal((40_000, 9)).astype(np.float32)
        for shares in ([0.1] * 10, [0.5, 0.3, 0.2]):
            with self.subTest(shares=shares):
                noise, labels = kinds.ClassCode(shares)(z)
                self.assertAllEqual(noise, z[:, :8])
                drawn = np.bincount(np.asarray(labels).ravel(), minlength=len(shares))
                self.assertAllClose(drawn / len(z), shares, atol=0.01)
        # truncating the noise (the truncation trick) keeps the shares
        _, labels = kinds.ClassCode([0.1] * 10)(kinds.Truncation(0.5)(z))
        self.assertAllClose(np.bincount(np.asarray(labels).ravel()) / len(z), [0.1] * 10,
                            atol=0.01)

    def test_the_saved_generator_takes_noise_alone_and_matches_the_conditional_one(self):
        shares = [0.2, 0.2, 0.2, 0.2, 0.2, 0, 0, 0, 0, 0]
        gan = tiny_cgan("labelled_dcgan", 0, "train.fake_labels=data", class_shares=shares)
        self.assertTrue(gan.conditional)  # trains on labels ...
        logs = gan.train_step((tf.constant(np.zeros((8, 28, 28, 1), np.float32)),
                               tf.constant(labels_of(*range(8))[:, 0])))
        self.assertIn("d_loss", logs)
        exported = gan.exported  # ... and saves a generator of noise alone
        self.assertEqual(tuple(exported.inputs[0].shape), (None, 9))
        spec = kinds.spec_of(exported)
        self.assertIsNone(spec["class_names"])
        self.assertEqual(spec["family"], "labelled_dcgan")
        z = sampling.noise((64, 9), "normal", 3)
        noise, labels = kinds.ClassCode(shares)(z)
        self.assertAllClose(exported(z), gan.sampler([noise, labels]), atol=1e-6)
        self.assertEqual(np.asarray(labels).max(), 4)  # only the classes with a share
        samples = sampling.sample(exported, 64, seed=3)
        self.assertEqual(samples.shape, (64, 28, 28, 1))
        self.assertAllInRange(samples, -1.0, 1.0)
        with tempfile.TemporaryDirectory() as tmp:
            exported.save(Path(tmp) / "g.keras")
            loaded = keras.models.load_model(Path(tmp) / "g.keras", safe_mode=True)
            gan.save(Path(tmp) / "gan.keras")
            reloaded = keras.models.load_model(Path(tmp) / "gan.keras", safe_mode=True)
        self.assertAllClose(loaded(z), exported(z), atol=1e-6)
        self.assertTrue(reloaded.mix_classes)
        self.assertAllClose(reloaded.exported(z), exported(z), atol=1e-6)

    def test_a_saved_truncation_moves_onto_the_mixed_noise(self):
        gan = tiny_cgan("labelled_mlp", 0, "model.truncation=1.0")
        exported = gan.exported
        self.assertEqual(kinds.spec_of(exported)["truncation"], 1.0)
        z = 3 * sampling.noise((32, 9), "normal", 1)
        truncated = kinds.Truncation(1.0)(z)
        plain = kinds.with_truncation(exported, 0.0)
        self.assertAllClose(exported(z), plain(truncated), atol=1e-5)

    def test_a_mixing_family_needs_labelled_data_and_has_no_label_objectives(self):
        with TempWorkdir():
            path = Path("f.toml")
            path.write_text('name = "x"\n[model]\nname = "labelled_dcgan"\n'
                            '[tune]\nobjective = "label_accuracy"\n')
            with self.assertRaisesRegex(UserError, "label_accuracy"):
                config.load(path)
            folder = rgb_unlabelled(Path("rgb"), n=4)
            cfg = config.validate({"data": {"dataset": "folder", "path": str(folder),
                                            "labels": "data"},
                                   "model": {"name": "labelled_dcgan"}})
            with self.assertRaisesRegex(UserError, "has no labels.*data.labels = 'clusters'"):
                data.open_source(cfg)


@pytest.mark.integration
class ConditionalPipelineTest(tf.test.TestCase):
    def test_five_stages_with_a_search_that_maximises_label_accuracy(self):
        sets = ["profile=quick", "batch_size=16", "train.steps_per_epoch=4", "eval.n_samples=100",
                "eval.final_n_samples=200", "tune.n_samples=100", "tune.steps_per_epoch=4",
                "tune.objective=label_accuracy", "tracking.grid_size=10",
                # what a 4-step G on mocked images makes is whatever the classifier trained on
                # mocked images calls it: this test is about the search's direction, not collapse
                "eval.collapse_max_share=1.0",
                *[f"model.{k}={v}" for k, v in TINY["cdcgan"].items()]]
        with TempWorkdir() as work, tfds.testing.mock_data(num_examples=64):
            # mock_data patches TFDS in this process only: the stages run here, not in their own
            results = Pipeline(config.load(REPO / "pipelines/mnist_cgan.toml", sets),
                               verbose=0, isolate_stages=False).run()
            self.assertTrue(all(r.status == "ran" for r in results.values()), results)
            client = mlflow.MlflowClient(work.uri)
            best = mlflow.artifacts.load_dict(
                f"runs:/{results['tune'].run_id}/best_hyperparameters.json")
            self.assertEqual(best["objective_name"], "label_accuracy")
            scores = [t["objective"] for t in best["trials"] if t["objective"] is not None]
            self.assertEqual(best["objective"], max(scores))  # maximised, not minimised
            train = client.get_run(results["train"].run_id)
            self.assertIn("quality/label_accuracy", train.data.metrics)
            self.assertIn("quality/intra_fd", train.data.metrics)
            # (a quick-profile run competes for its own alias, never the real champion)
            holder = client.get_model_version_by_alias("mnist_cgan", "champion-quick")
            self.assertEqual(holder.run_id, results["train"].run_id)
