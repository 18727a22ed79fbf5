"""Training under tf.distribute: with two replicas, a step's update equals one device's on the
whole batch (losses are scaled by the replica count, metrics are not)."""

import json
import subprocess
import sys

import pytest
import tensorflow as tf

from tests.helpers import REPO

# Runs in a fresh interpreter: logical devices must be declared before TensorFlow starts.
SCRIPT = r'''
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from gan_pipeline import families
from gan_pipeline.gan import GAN

real = np.random.default_rng(0).uniform(-1, 1, (32, 4, 4, 1)).astype("float32")

def one_step(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        g, d = families.build("mlp", (4, 4, 1), latent_dim=4, g_widths=[8], d_widths=[8],
                            dropout=0.0)
        # G's kernels at zero make its output independent of the noise, and D has no Dropout:
        # the D step is then deterministic, whatever noise each replica draws.
        for w in g.weights:
            if "kernel" in w.path:
                w.assign(tf.zeros(w.shape))
        gan = GAN(g, d, seed=0)
        gan.compile(d_optimizer=keras.optimizers.SGD(0.5), g_optimizer=keras.optimizers.SGD(0.5))
    before = [w.numpy() for w in gan.discriminator.trainable_weights]
    history = gan.fit(tf.data.Dataset.from_tensor_slices(real).batch(32), epochs=1, verbose=0)
    after = [w.numpy() for w in gan.discriminator.trainable_weights]
    delta = float(np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(after, before))))
    return {"replicas": strategy.num_replicas_in_sync, "d_delta": delta,
            "d_loss": history.history["d_loss"][0], "g_loss": history.history["g_loss"][0],
            "finite": bool(all(np.isfinite(w.numpy()).all() for w in gan.weights))}

mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with mirrored.scope():
    g, d = families.build("mlp", (4, 4, 1), latent_dim=4, g_widths=[8], d_widths=[8])
    gan = GAN(g, d, seed=0)
noise = mirrored.experimental_local_results(mirrored.run(lambda: gan.sample_noise(8)))
same_noise = bool(np.allclose(noise[0].numpy(), noise[1].numpy()))
print(json.dumps([one_step(tf.distribute.get_strategy()), one_step(mirrored), same_noise]))
'''


@pytest.mark.process
class MirroredStrategyTest(tf.test.TestCase):
    def test_two_replicas_update_like_one_device(self):
        out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                             text=True, timeout=300)
        self.assertEqual(out.returncode, 0, out.stderr[-3000:])
        single, mirrored, same_noise = json.loads(out.stdout.strip().splitlines()[-1])
        self.assertFalse(same_noise, "each replica draws its own noise")
        self.assertEqual((single["replicas"], mirrored["replicas"]), (1, 2))
        self.assertTrue(single["finite"] and mirrored["finite"])
        # Unscaled per-replica losses would sum to twice the gradient (a ratio near 2).
        self.assertAllClose(mirrored["d_delta"] / single["d_delta"], 1.0, atol=1e-4)
        # Reported losses are the replicas' mean, not scaled down by the replica count.
        self.assertAllClose(mirrored["d_loss"], single["d_loss"], rtol=1e-4)


class PrefetchToDeviceTest(tf.test.TestCase):
    def test_batches_arrive_unchanged_and_a_cpu_run_is_left_alone(self):
        from gan_pipeline import distribute

        dataset = tf.data.Dataset.range(10).batch(3)
        if not tf.config.list_logical_devices("GPU"):
            self.assertIs(distribute.prefetched_to_device(dataset), dataset)
        # the same transformation a GPU run gets, to the CPU device here
        moved = distribute.prefetched_to_device(dataset, "/cpu:0")
        self.assertEqual([b.numpy().tolist() for b in moved],
                         [b.numpy().tolist() for b in dataset])
