"""Hinge, least-squares, Wasserstein and relativistic losses, the gradient penalty, R1 and R2 on
known cases; each trains with every precision policy, round-trips, and a penalised D step changes
only D."""

import tempfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from gan_pipeline import config, losses
from gan_pipeline.errors import UserError
from gan_pipeline.factory import build_gan
from gan_pipeline.families import get as family
from gan_pipeline.gan import GAN
from gan_pipeline.losses import (R1, R2, GradientPenalty, Hinge, LeastSquares, Relativistic,
                                 Wasserstein)
from gan_pipeline.run import train
from tests.helpers import TINY, TempWorkdir
from tests.test_gan import changed, snapshot
from tests.test_precision import SHAPES, real_batch, tiny_cfg
from tests.test_resume import tiny_1d

col = lambda *v: tf.constant(np.array(v, np.float32).reshape(-1, 1))  # noqa: E731


def gp_pass(real, fake, judge, seed=(1, 2), labels=None):
    """A ``DiscriminatorPass`` carrying only what the gradient penalty reads."""
    real, fake = tf.constant(real, tf.float32), tf.constant(fake, tf.float32)
    return losses.DiscriminatorPass(None, real, fake, None, None, None, labels=labels,
                                    judge=judge, new_seed=lambda: tf.constant(seed, tf.int32))


def linear(w):
    """D(x) = x . w (+ 0): its input gradient is w everywhere."""
    w = tf.constant(np.asarray(w, np.float32).reshape(-1, 1))
    return lambda x, labels=None: ops.matmul(ops.reshape(x, (ops.shape(x)[0], -1)), w)


class LossValuesTest(tf.test.TestCase):
    def test_hinge(self):
        real, fake = col(2.0, 0.5), col(-2.0, 0.0)
        # D: mean(relu(1 - [2, .5])) + mean(relu(1 + [-2, 0])) = .25 + .5; G: -mean(fake)
        self.assertAllClose(Hinge().discriminator(real, fake), 0.75)
        self.assertAllClose(Hinge().generator(col(-2.0, 0.0)), 1.0)
        self.assertAllClose(Hinge().metrics(real, fake)["score_real"], 1.25)

    def test_least_squares(self):
        real, fake = col(1.0, 0.0), col(0.0, 1.0)
        # D: .5 (mean([0, 1]) + mean([0, 1])); G: .5 mean([1, 0])
        self.assertAllClose(LeastSquares().discriminator(real, fake), 0.5)
        self.assertAllClose(LeastSquares().generator(fake), 0.25)
        self.assertAllClose(LeastSquares().discriminator(col(1.0), col(0.0)), 0.0)

    def test_wasserstein(self):
        real, fake = col(3.0, 1.0), col(0.0, 2.0)
        self.assertAllClose(Wasserstein().discriminator(real, fake), 1.0 - 2.0)
        self.assertAllClose(Wasserstein().generator(fake), -1.0)
        self.assertAllClose(Wasserstein().metrics(real, fake)["w_distance"], 1.0)

    def test_relativistic_pairs_each_real_score_with_its_fake_one(self):
        real, fake = col(2.0, 0.0), col(0.0, 1.0)
        softplus = lambda t: float(np.log1p(np.exp(t)))  # noqa: E731
        # D: mean softplus(fake - real) over the pairs (2, 0) and (0, 1); G: the reverse
        self.assertAllClose(Relativistic().discriminator(real, fake),
                            (softplus(-2.0) + softplus(1.0)) / 2)
        self.assertAllClose(Relativistic().generator(fake, real),
                            (softplus(2.0) + softplus(-1.0)) / 2)
        # only the differences count: shifting every score changes nothing
        self.assertAllClose(Relativistic().discriminator(real + 5.0, fake + 5.0),
                            Relativistic().discriminator(real, fake))
        self.assertTrue(Relativistic.needs_real)
        with self.assertRaisesRegex(ValueError, "needs D's scores of a real batch"):
            Relativistic().generator(fake)

    def test_lower_precision_logits_give_float32_losses(self):
        for loss in (Hinge(), LeastSquares(), Wasserstein()):
            real = tf.constant([[1.5], [-0.5]], tf.bfloat16)
            self.assertEqual(loss.discriminator(real, -real).dtype, tf.float32)
            self.assertEqual(loss.generator(real).dtype, tf.float32)


class GradientPenaltyTest(tf.test.TestCase):
    def setUp(self):
        rng = np.random.default_rng(0)
        self.real = rng.normal(size=(64, 6)).astype(np.float32)
        self.fake = rng.normal(size=(64, 6)).astype(np.float32)

    def test_zero_for_a_1_lipschitz_linear_critic_with_unit_gradient(self):
        w = np.array([0.6, 0.8, 0, 0, 0, 0])  # |w| = 1
        self.assertAllClose(GradientPenalty(10.0)(gp_pass(self.real, self.fake, linear(w))),
                            0.0, atol=1e-6)

    def test_weight_times_the_squared_distance_of_the_norm_from_one(self):
        w = np.array([0.0, 3.0, 0, 0, 0, 4.0])  # |w| = 5
        self.assertAllClose(GradientPenalty(2.0)(gp_pass(self.real, self.fake, linear(w))),
                            2.0 * (5.0 - 1.0) ** 2, rtol=1e-5)

    def test_interpolation_weight_is_uniform_per_sample(self):
        """D(x) = |x|^2 / 2 has gradient x: with real = a unit vector and fake = 0 the penalty
        is E (e - 1)^2, which is 1/3 for e ~ U[0, 1] drawn per sample (one e for the whole
        batch, or e ~ U[0, 1) squared, ... would not average to it)."""
        n = 20_000
        real = np.zeros((n, 6), np.float32)
        real[:, 0] = 1.0
        half_square = lambda x, labels=None: 0.5 * ops.sum(ops.square(x), axis=1)  # noqa: E731
        values = [float(GradientPenalty(1.0)(gp_pass(real, np.zeros_like(real), half_square,
                                                     seed=(s, 0)))) for s in range(3)]
        self.assertAllClose(values, [1 / 3] * 3, atol=0.01)

    def test_finite_gradient_where_the_critic_is_flat(self):
        """sqrt(sum g^2) alone has an infinite derivative at g = 0; the epsilon keeps D's
        update finite when its input gradient vanishes."""
        kernel = tf.Variable(tf.zeros((6, 1)))
        with tf.GradientTape() as tape:
            gp = GradientPenalty(10.0)(gp_pass(self.real, self.fake,
                                               lambda x, labels=None: ops.matmul(x, kernel)))
        grad = tape.gradient(gp, kernel)
        self.assertAllClose(gp, 10.0, atol=1e-4)
        self.assertTrue(np.isfinite(grad.numpy()).all())

    def test_a_conditional_critic_judges_the_points_with_the_real_labels(self):
        seen = []

        def judge(x, labels):
            seen.append(labels)
            return linear([1, 0, 0, 0, 0, 0])(x)

        labels = tf.constant([[3]] * 64, tf.int32)
        GradientPenalty(1.0)(gp_pass(self.real, self.fake, judge, labels=labels))
        self.assertIs(seen[0], labels)

    def test_weight_must_be_positive(self):
        with self.assertRaisesRegex(ValueError, "must be > 0"):
            GradientPenalty(0.0)


class LazyR1Test(tf.test.TestCase):
    def test_every_kth_step_carries_k_times_the_penalty_the_others_none(self):
        # A linear D has the input gradient w everywhere: R1 is gamma / 2 * |w|^2.
        keras.utils.set_random_seed(0)
        g, _ = family("gaussian_1d").build((6,), **TINY["gaussian_1d"])
        d = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
        gan = GAN(g, d, noise="uniform", seed=0)
        gan.compile(d_optimizer=keras.optimizers.SGD(0.0), g_optimizer=keras.optimizers.SGD(0.0),
                    penalties=[R1(2.0, every=3)])
        full = 0.5 * 2.0 * float(np.sum(d.layers[-1].kernel.numpy() ** 2))
        real = tf.constant(np.random.default_rng(0).normal(4, 1.25, (5, 6)), tf.float32)
        added = []
        for _ in range(6):
            d_loss, step = gan.discriminator_step(real)
            added.append(float(d_loss) - float(gan.loss_fn.discriminator(step.real_logits,
                                                                         step.fake_logits)))
        self.assertAllClose(added, [3 * full, 0, 0, 3 * full, 0, 0], rtol=1e-5, atol=1e-6)
        self.assertEqual(R1.from_config(R1(2.0, every=3).get_config()).every, 3)


class R2Test(tf.test.TestCase):
    def test_r2_is_r1_at_the_fake_batch_and_both_can_be_on(self):
        # D(x) = relu(x) . w: its input gradient is w where x > 0, 0 elsewhere. Real samples
        # positive, fake ones negative: R1 sees |w|^2, R2 nothing; then the reverse.
        keras.utils.set_random_seed(0)
        g, _ = family("gaussian_1d").build((6,), **TINY["gaussian_1d"])
        d = keras.Sequential([keras.Input((6,)), keras.layers.ReLU(), keras.layers.Dense(1)])
        w2 = float(np.sum(d.layers[-1].kernel.numpy() ** 2))
        gan = GAN(g, d, noise="uniform", seed=0)
        gan.compile(d_optimizer=keras.optimizers.SGD(0.0), g_optimizer=keras.optimizers.SGD(0.0))
        real = tf.abs(tf.constant(np.random.default_rng(0).normal(4, 1.25, (5, 6)), tf.float32))
        _, step = gan.discriminator_step(real)
        self.assertAllClose(R1(2.0)(step), w2, rtol=1e-5)
        self.assertAllClose(R2(4.0)(step), 2.0 * float(np.mean(np.sum(
            (step.fake.numpy() > 0) * d.layers[-1].kernel.numpy().T ** 2, axis=1))), rtol=1e-5)
        _, step = gan.discriminator_step(-real)
        self.assertAllClose(R1(2.0)(step), 0.0)
        cfg = config.validate({"train": {"loss": "relativistic", "r1_gamma": 1.0,
                                         "r2_gamma": 2.0}})
        self.assertEqual([(type(p), p.gamma) for p in losses.penalties_from(cfg.train)],
                         [(R1, 1.0), (R2, 2.0)])
        with self.assertRaisesRegex(ValueError, "R2 gamma must be > 0"):
            R2(0.0)


class LossTrainingTest(tf.test.TestCase):
    def test_wasserstein_needs_the_gradient_penalty(self):
        with self.assertRaisesRegex(UserError, r"train.loss = 'wasserstein' needs "
                                               r"train.gp_weight > 0"):
            config.validate({"train": {"loss": "wasserstein"}})
        cfg = config.validate({"train": {"loss": "wasserstein", "gp_weight": 10.0}})
        self.assertEqual([type(p) for p in losses.penalties_from(cfg.train)], [GradientPenalty])

    # every loss under every precision policy, a test a loss (two test processes share them)
    def test_hinge_trains_under_every_precision_policy(self):
        self.trains_under_every_precision_policy("hinge")

    def test_least_squares_trains_under_every_precision_policy(self):
        self.trains_under_every_precision_policy("least_squares")

    def test_wasserstein_trains_under_every_precision_policy(self):
        self.trains_under_every_precision_policy("wasserstein")

    def test_relativistic_trains_under_every_precision_policy(self):
        self.trains_under_every_precision_policy("relativistic")

    def trains_under_every_precision_policy(self, loss):
        for precision in ("float32", "mixed_bfloat16", "mixed_float16"):
            with self.subTest(precision=precision):
                cfg = tiny_cfg("dcgan", f"train.loss={loss}", "train.gp_weight=10",
                               "train.r1_gamma=1", "train.r1_every=2",
                               "train.r2_gamma=1", f"train.precision={precision}")
                gan = build_gan(cfg, SHAPES["dcgan"])
                ds = tf.data.Dataset.from_tensor_slices(real_batch(SHAPES["dcgan"], 32))
                history = gan.fit(ds.batch(16), epochs=1, verbose=0).history
                for key in ("d_loss", "g_loss", "score_real", "score_fake"):
                    self.assertTrue(np.isfinite(history[key]).all(), (key, history))
                if precision == "mixed_float16":
                    self.assertIsInstance(gan.d_optimizer, keras.optimizers.LossScaleOptimizer)

    def test_a_relativistic_g_step_reads_a_real_batch_and_changes_only_g(self):
        keras.utils.set_random_seed(0)
        cfg = tiny_cfg("dcgan", "train.loss=relativistic", "train.r1_gamma=1",
                       "train.r2_gamma=1")
        gan = build_gan(cfg, SHAPES["dcgan"])
        real = real_batch(SHAPES["dcgan"], 8)
        g_before = snapshot(gan.generator.trainable_weights)
        d_before = snapshot(gan.discriminator.trainable_weights)
        g_loss, _ = gan.generator_step(8, real)
        self.assertTrue(np.isfinite(float(g_loss)))
        self.assertFalse(any(changed(d_before, gan.discriminator.trainable_weights)))
        self.assertTrue(all(changed(g_before, gan.generator.trainable_weights)))
        with self.assertRaisesRegex(ValueError, "a real batch"):
            gan.generator_step(8)

    def test_penalised_wasserstein_step_changes_only_the_critic(self):
        for family, shape in (("dcgan", (28, 28, 1)), ("cdcgan", (28, 28, 1))):
            with self.subTest(family):
                keras.utils.set_random_seed(0)
                cfg = config.validate(config.apply_overrides(
                    {"model": {"name": family, **TINY[family]}},
                    ["train.loss=wasserstein", "train.gp_weight=10"]))
                classes = [str(i) for i in range(10)] if family == "cdcgan" else None
                gan = build_gan(cfg, shape, total_batches=10, class_names=classes)
                real = np.random.default_rng(0).uniform(-1, 1, (8, *shape)).astype(np.float32)
                labels = np.arange(8, dtype=np.int32).reshape(-1, 1) if classes else None
                g_before = snapshot(gan.generator.trainable_weights)
                d_before = snapshot(gan.discriminator.trainable_weights)
                d_loss, step = gan.discriminator_step(real, labels)
                self.assertFalse(any(changed(g_before, gan.generator.trainable_weights)))
                # every D weight moves but the read-out's bias: E D(G(z)) - E D(x) does not
                # depend on it (its gradient is 1 - 1)
                moved = dict(zip((w.path for w in gan.discriminator.trainable_weights),
                                 changed(d_before, gan.discriminator.trainable_weights)))
                output_bias, = (layer.bias.path for layer in gan.discriminator.layers
                                if isinstance(layer, keras.layers.Dense) and layer.units == 1)
                self.assertFalse(moved.pop(output_bias))
                self.assertTrue(all(moved.values()), moved)
                # the penalty is part of D's loss
                self.assertGreater(float(d_loss), float(gan.loss_fn.discriminator(
                    step.real_logits, step.fake_logits)))

    def test_losses_and_penalty_round_trip(self):
        cfg = tiny_cfg("mlp", "train.loss=hinge", "train.gp_weight=5")
        gan = build_gan(cfg, SHAPES["mlp"])
        with tempfile.TemporaryDirectory() as tmp:
            gan.save(Path(tmp) / "gan.keras")
            loaded = keras.models.load_model(Path(tmp) / "gan.keras", safe_mode=True)
        self.assertIsInstance(loaded.loss_fn, Hinge)
        self.assertEqual([(type(p), p.weight) for p in loaded.penalties],
                         [(GradientPenalty, 5.0)])


@pytest.mark.integration
class PenaltyResumeTest(tf.test.TestCase):
    def test_a_resumed_wasserstein_run_with_both_penalties_matches_an_uninterrupted_one(self):
        """The penalty's interpolation weights come from the GAN's checkpointed seed stream,
        so a resumed run draws the same ones."""
        sets = ("train.loss=wasserstein", "train.gp_weight=10", "train.r1_gamma=1",
                "train.ema_decay=0.9")
        with TempWorkdir():
            straight = train(tiny_1d("epochs=3", "name=straight", *sets), verbose=0)
            train(tiny_1d("epochs=1", "name=resumed", *sets), verbose=0)
            resumed = train(tiny_1d("epochs=3", "name=resumed", *sets), verbose=0, resume=True)
        for a, b in zip(straight.gan.variables, resumed.gan.variables):
            self.assertAllClose(a, b, rtol=1e-5, atol=1e-6, msg=a.path)


class ModeSeekingTest(tf.test.TestCase):
    def test_value_for_a_linear_generator(self):
        """G(z) = 3 z moves its samples 3 units per unit of noise: the term is w / (3 + 1e-5)."""
        z = tf.constant(np.random.default_rng(0).normal(size=(8, 4)), tf.float32)
        step = losses.GeneratorPass(z, 3.0 * z)
        self.assertAllClose(losses.ModeSeeking.spread(step), 3.0, rtol=1e-5)
        self.assertAllClose(losses.ModeSeeking(2.0)(step), 2.0 / (3.0 + 1e-5), rtol=1e-5)
        # a collapsed G (the same sample for all noise) is penalised most
        collapsed = losses.GeneratorPass([z, tf.zeros((8, 1), tf.int32)], tf.ones((8, 5)))
        self.assertAllClose(losses.ModeSeeking(1.0)(collapsed), 1e5, rtol=1e-3)

    def test_pairs_share_their_label_and_differ_in_noise(self):
        cfg = config.validate(config.apply_overrides(
            {"model": {"name": "cdcgan", **TINY["cdcgan"]}}, ["train.mode_seeking=1"]))
        gan = build_gan(cfg, (28, 28, 1), class_names=[str(i) for i in range(10)])
        for batch in (8, 9):
            z, labels = gan.generator_inputs(batch, paired=True)
            half = batch // 2
            self.assertEqual(labels.shape, (batch, 1))
            self.assertAllEqual(labels[:half], labels[half:2 * half])
            self.assertNotAllClose(z[:half], z[half:2 * half])
        self.assertGreater(len(set(np.asarray(labels).ravel())), 1)

    def test_the_g_step_adds_it_changes_only_g_and_it_round_trips(self):
        keras.utils.set_random_seed(0)
        cfg = tiny_cfg("mlp", "train.mode_seeking=1")
        gan = build_gan(cfg, SHAPES["mlp"])
        self.assertEqual([type(p) for p in gan.g_penalties], [losses.ModeSeeking])
        d_before = snapshot(gan.discriminator.trainable_weights)
        g_before = snapshot(gan.generator.trainable_weights)
        g_loss, generated = gan.generator_step(8)
        self.assertFalse(any(changed(d_before, gan.discriminator.trainable_weights)))
        self.assertTrue(all(changed(g_before, gan.generator.trainable_weights)))
        # the term is part of G's loss
        plain = gan.loss_fn.generator(gan.judge(generated, None))
        self.assertGreater(float(g_loss), float(plain))
        with tempfile.TemporaryDirectory() as tmp:
            gan.save(Path(tmp) / "gan.keras")
            loaded = keras.models.load_model(Path(tmp) / "gan.keras", safe_mode=True)
        self.assertEqual([(type(p), p.weight) for p in loaded.g_penalties],
                         [(losses.ModeSeeking, 1.0)])

    def test_it_spreads_a_generator_that_ignores_its_noise(self):
        """Under the term alone, a G that nearly ignores its noise learns to use it."""
        keras.utils.set_random_seed(0)
        z_in = keras.Input((4,))
        g = keras.Model(z_in, keras.layers.Dense(6, kernel_initializer=keras.initializers.Constant(
            1e-3))(z_in))
        d_in = keras.Input((6,))
        gan = GAN(g, keras.Model(d_in, keras.layers.Dense(1)(d_in)), seed=1)
        gan.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2),
                    g_penalties=[losses.ModeSeeking(1.0)])
        spread = lambda: float(losses.ModeSeeking.spread(  # noqa: E731
            losses.GeneratorPass(*(lambda z: (z, g(z)))(gan.sample_noise(64)))))
        before = spread()
        for _ in range(50):
            gan.generator_step(64)
        self.assertGreater(spread(), 10 * before)

    def test_weight_must_be_positive_and_the_setting_is_validated(self):
        with self.assertRaises(ValueError):
            losses.ModeSeeking(0.0)
        with self.assertRaisesRegex(UserError, "mode_seeking"):
            config.validate({"train": {"mode_seeking": -1.0}})
        self.assertEqual(losses.generator_penalties_from(config.validate({}).train), [])
