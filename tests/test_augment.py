"""DiffAugment: shapes and range kept, each sample its own transform, reproducible from its
seed, differentiable, and applied to what D judges, real and fake, in both steps."""

import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from gan_pipeline import config
from gan_pipeline.augment import FILL, DiffAugment, color, cutout, translation
from gan_pipeline.errors import UserError
from gan_pipeline.factory import build_gan
from tests.helpers import TINY
from tests.test_gan import changed, snapshot

SEED = tf.constant([3, 4], tf.int32)


def images(n=16, shape=(16, 16, 1), seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (n, *shape)), tf.float32)


class TransformTest(tf.test.TestCase):
    def test_every_policy_keeps_shape_dtype_and_range(self):
        for shape in ((16, 16, 1), (12, 20, 3)):
            for policy in (["translation"], ["cutout"], ["color"],
                           ["translation", "cutout", "color"]):
                with self.subTest(shape=shape, policy=policy):
                    x = images(shape=shape)
                    y = DiffAugment(policy)(x, SEED)
                    self.assertEqual((y.shape, y.dtype), (x.shape, x.dtype))
                    self.assertAllInRange(y, -1.0, 1.0)

    def test_translation_shifts_each_image_by_its_own_offset(self):
        x = images(64)
        y = translation(x, SEED).numpy()
        offsets = set()
        for a, b in zip(x.numpy()[..., 0], y[..., 0]):
            # find the (dy, dx) that maps a onto b where b is not fill
            found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                     if np.allclose(np.roll(a, (dy, dx), (0, 1))[2:-2, 2:-2], b[2:-2, 2:-2])]
            self.assertLen(found, 1)
            offsets.add(found[0])
            dy, dx = found[0]
            if dy > 0:
                self.assertTrue((b[:dy] == FILL).all())  # the uncovered rows are filled
        self.assertGreater(len(offsets), 10, "offsets are drawn per sample")

    def test_cutout_fills_one_square_per_image_at_different_places(self):
        x = images(32) * 0.5  # never equal to FILL
        y = cutout(x, SEED).numpy()[..., 0]
        places = set()
        for b in y:
            rows, cols = np.nonzero(b == FILL)
            self.assertGreater(len(rows), 0)
            # a rectangle (clipped at the edges), at most 8 x 8
            self.assertEqual(len(rows), (np.ptp(rows) + 1) * (np.ptp(cols) + 1))
            self.assertLessEqual(np.ptp(rows) + 1, 8)
            places.add((rows.min(), cols.min()))
        self.assertGreater(len(places), 5)

    def test_color_leaves_grey_images_alone_and_jitters_rgb_per_sample(self):
        grey = images()
        self.assertAllEqual(color(grey, SEED), grey)
        rgb = images(shape=(8, 8, 3)) * 0.3
        jittered = color(rgb, SEED).numpy()
        shifts = (jittered - rgb.numpy()).mean(axis=(1, 2, 3))
        self.assertGreater(np.std(shifts), 0.05)

    def test_same_seed_same_transform_other_seed_another(self):
        x = images()
        policy = DiffAugment(["translation", "cutout"])
        self.assertAllEqual(policy(x, SEED), policy(x, SEED))
        self.assertNotAllClose(policy(x, SEED), policy(x, SEED + 1))

    def test_gradients_flow_through_to_the_input(self):
        x = images()
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = DiffAugment(["translation", "cutout", "color"])(x, SEED)
            total = tf.reduce_sum(y * y)
        grad = tape.gradient(total, x)
        self.assertIsNotNone(grad)
        self.assertGreater(float(tf.reduce_sum(tf.abs(grad))), 0.0)

    def test_unknown_names_and_vectors_are_errors(self):
        with self.assertRaisesRegex(UserError, r"train.augment = \['flip'\] is not valid: 'flip' "
                                               r"is not one of 'translation', 'cutout', 'color'"):
            config.validate({"train": {"augment": ["flip"]}})
        with self.assertRaisesRegex(UserError, "transforms images, but model.name = "
                                               "'gaussian_1d' makes vectors"):
            config.validate({"data": {"dataset": "gaussian_1d"},
                             "model": {"name": "gaussian_1d"},
                             "train": {"augment": ["cutout"]}})


class AugmentedStepTest(tf.test.TestCase):
    def gan(self, *sets):
        keras.utils.set_random_seed(0)
        cfg = config.validate(config.apply_overrides(
            {"model": {"name": "dcgan", **TINY["dcgan"]}}, list(sets)))
        return build_gan(cfg, (28, 28, 1), total_batches=10)

    def test_d_and_g_steps_judge_augmented_real_and_fake(self):
        gan = self.gan("train.augment=[cutout]")
        seen = []
        judge = gan.judge
        gan.judge = lambda samples, labels, training=True: (seen.append(samples.numpy()),
                                                              judge(samples, labels))[1]
        real = images(8, (28, 28, 1)).numpy() * 0.5
        gan.discriminator_step(real)
        gan.generator_step(8)
        self.assertLen(seen, 3)  # real and fake in the D step, fake in the G step
        for batch in seen:
            holes = (batch == FILL).reshape(8, -1).any(axis=1)
            self.assertTrue(holes.all(), "every image D judged had its square cut out")

    def test_augmented_d_step_still_changes_only_d(self):
        gan = self.gan("train.augment=[translation,cutout]")
        g_before = snapshot(gan.generator.trainable_weights)
        d_before = snapshot(gan.discriminator.trainable_weights)
        gan.discriminator_step(images(8, (28, 28, 1)))
        self.assertFalse(any(changed(g_before, gan.generator.trainable_weights)))
        self.assertTrue(all(changed(d_before, gan.discriminator.trainable_weights)))

    def test_the_policy_round_trips_and_off_is_the_default(self):
        self.assertFalse(self.gan().augmentation)
        gan = self.gan("train.augment=[translation,color]")
        with tempfile.TemporaryDirectory() as tmp:
            gan.save(Path(tmp) / "gan.keras")
            loaded = keras.models.load_model(Path(tmp) / "gan.keras", safe_mode=True)
        self.assertEqual(loaded.augmentation.policy, ["translation", "color"])
