"""Metrics on cases whose answer is known in closed form or by construction."""

import numpy as np
import tensorflow as tf
from scipy import linalg, stats

from gan_pipeline import metrics


def gaussian(n, d, mean=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(mean, scale, (n, d))


class FrechetDistanceTest(tf.test.TestCase):
    def test_identical_distributions_give_nearly_zero(self):
        self.assertLess(metrics.frechet_distance(gaussian(20000, 8), gaussian(20000, 8, seed=1)),
                        0.01)

    def test_shift_gives_squared_distance_of_means(self):
        shift = np.array([3.0, 0, 0, 0, 0, 0, 0, 0])
        value = metrics.frechet_distance(gaussian(20000, 8), gaussian(20000, 8, seed=1) + shift)
        self.assertAllClose(value, 9.0, atol=0.1)

    def test_scaled_covariance_gives_closed_form(self):
        # N(0, I) vs N(0, 4I) in d dims: tr(I + 4I - 2 * 2I) = d
        value = metrics.frechet_distance(gaussian(40000, 6), gaussian(40000, 6, scale=2, seed=1))
        self.assertAllClose(value, 6.0, rtol=0.03)

    def test_agrees_with_scipy_sqrtm_formula(self):
        rng = np.random.default_rng(3)
        a = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
        b = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5)) + 1.0
        ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb) \
            - 2 * np.trace(linalg.sqrtm(ca @ cb).real)
        self.assertAllClose(metrics.frechet_distance(a, b), expected, rtol=1e-6)

    def test_singular_covariance_is_finite(self):
        a = gaussian(100, 3)
        a[:, 2] = 0.0  # rank-deficient, as with dead ReLU features
        self.assertTrue(np.isfinite(metrics.frechet_distance(a, gaussian(100, 3))))


class KernelDistanceTest(tf.test.TestCase):
    def test_same_distribution_is_zero_within_error(self):
        kid, se = metrics.kernel_inception_distance(gaussian(3000, 16), gaussian(3000, 16, seed=1))
        self.assertLess(abs(kid), 4 * se + 1e-3)

    def test_shift_is_clearly_positive(self):
        kid, se = metrics.kernel_inception_distance(gaussian(3000, 16),
                                                    gaussian(3000, 16, mean=0.5, seed=1))
        self.assertGreater(kid, 20 * se)


class ClassifierScoreTest(tf.test.TestCase):
    def test_sharp_and_diverse_gives_number_of_classes(self):
        self.assertAllClose(metrics.classifier_score(np.eye(10)[np.arange(1000) % 10]), 10.0,
                            rtol=1e-6)

    def test_collapsed_or_unsure_gives_one(self):
        self.assertAllClose(metrics.classifier_score(np.eye(10)[np.full(1000, 3)]), 1.0)
        self.assertAllClose(metrics.classifier_score(np.full((1000, 10), 0.1)), 1.0)

    def test_collapsed_generator_gives_skewed_histogram(self):
        probs = np.eye(10)[np.r_[np.full(900, 3), np.arange(100) % 10]]
        hist = metrics.class_histogram(probs)
        self.assertAllClose(hist.sum(), 1.0)
        self.assertAllClose(hist.max(), 0.91)
        self.assertAllClose(hist.min(), 0.01)


class ManifoldMetricsTest(tf.test.TestCase):
    def test_separable_clouds_have_no_precision_or_recall(self):
        real, fake = gaussian(1000, 4), gaussian(1000, 4, mean=50.0, seed=1)
        self.assertEqual(metrics.precision_recall(real, fake), (0.0, 0.0))
        self.assertEqual(metrics.density_coverage(real, fake), (0.0, 0.0))

    def test_matching_clouds_score_high(self):
        real, fake = gaussian(2000, 4), gaussian(2000, 4, seed=1)
        precision, recall = metrics.precision_recall(real, fake)
        density, coverage = metrics.density_coverage(real, fake)
        self.assertGreater(min(precision, recall), 0.85)
        self.assertAllClose(density, 1.0, atol=0.15)
        self.assertGreater(coverage, 0.9)

    def test_mode_collapse_keeps_precision_and_loses_recall(self):
        real = np.r_[gaussian(1000, 2, mean=-10.0), gaussian(1000, 2, mean=10.0, seed=1)]
        fake = gaussian(2000, 2, mean=10.0, seed=2)  # only one of the two modes
        precision, recall = metrics.precision_recall(real, fake)
        _, coverage = metrics.density_coverage(real, fake)
        self.assertGreater(precision, 0.9)
        self.assertAllClose(recall, 0.5, atol=0.05)
        self.assertAllClose(coverage, 0.5, atol=0.05)


class GaussianFitTest(tf.test.TestCase):
    def test_exact_draws_fit_well(self):
        x = np.random.default_rng(0).normal(4.0, 1.25, 100_000)
        fit = metrics.gaussian_fit(x, 4.0, 1.25)
        self.assertLess(fit["ks"], 0.01)
        self.assertLess(fit["wasserstein1"], 0.02)
        self.assertLess(fit["abs_mean_error"], 0.02)

    def test_shift_gives_known_ks_and_wasserstein(self):
        x = np.random.default_rng(0).normal(4.5, 1.25, 200_000)
        fit = metrics.gaussian_fit(x, 4.0, 1.25)
        self.assertAllClose(fit["wasserstein1"], 0.5, atol=0.01)  # W1 of a shift is the shift
        expected_ks = stats.norm.cdf(0.2) - stats.norm.cdf(-0.2)  # max |F1 - F2| at the midpoint
        self.assertAllClose(fit["ks"], expected_ks, atol=0.01)
        self.assertAllClose(fit["abs_mean_error"], 0.5, atol=0.01)

    def test_wrong_spread_shows_in_std_error(self):
        fit = metrics.gaussian_fit(np.random.default_rng(0).normal(4.0, 2.0, 50_000), 4.0, 1.25)
        self.assertAllClose(fit["abs_std_error"], 0.75, atol=0.03)
