"""Model FLOPs counted from the layers (what `make bench`'s MFU divides by its peak)."""

import keras
import tensorflow as tf
from keras import layers
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from gan_pipeline import families, flops
from gan_pipeline.families.common import SpectralNorm


def graph_flops(model, shape) -> int:
    """TensorFlow's own count of the float operations in ``model``'s forward graph at batch 1
    (its profiler's per-op statistics: an independent count, which adds biases and
    activations)."""
    fn = tf.function(lambda x: model(x, training=False), autograph=False)
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(tf.TensorSpec((1, *shape))))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops


class FlopsTest(tf.test.TestCase):
    def test_each_layer_counts_two_flops_per_multiply_add(self):
        x = keras.Input((8, 8, 3))
        h = layers.Conv2D(4, 3, strides=2, padding="same")(x)          # 4x4 out, 3x3x3 -> 4
        h = layers.Conv2DTranspose(2, 5, strides=2, padding="same")(h)  # 4x4 in, 5x5x4 -> 2
        h = SpectralNorm(layers.Conv2D(6, 1))(h)                        # 8x8, 1x1x2 -> 6
        h = layers.Dense(5)(h)                                          # per position 6 -> 5
        model = keras.Model(x, layers.Dense(1)(layers.Flatten()(h)))    # 320 -> 1
        expected = 2 * (16 * 9 * 3 * 4 + 16 * 25 * 4 * 2 + 64 * 2 * 6 + 64 * 6 * 5 + 320)
        self.assertEqual(flops.forward_flops(model), expected)

    def test_a_shared_layer_counts_per_call_and_a_nested_model_counts_its_layers(self):
        inner_in = keras.Input((4,))
        inner = keras.Model(inner_in, layers.Dense(3)(inner_in))
        x = keras.Input((4,))
        dense = layers.Dense(4)
        model = keras.Model(x, inner(dense(dense(x))))
        self.assertEqual(flops.forward_flops(model), 2 * (16 + 16 + 12))

    def test_the_dcgan_count_agrees_with_tensorflows_graph_count(self):
        hp = {**families.get("dcgan").defaults, "upsample": "transpose"}
        generator, discriminator = families.build("dcgan", (28, 28, 1), **hp)
        for model, shape in ((generator, (hp["latent_dim"],)), (discriminator, (28, 28, 1))):
            ours, theirs = flops.forward_flops(model), graph_flops(model, shape)
            # the graph also counts biases, batch norm and activations: a little more, not less
            self.assertBetween(ours / theirs, 0.98, 1.0)
        g, d = flops.forward_flops(generator), flops.forward_flops(discriminator)
        self.assertEqual(flops.train_step_flops(generator, discriminator), 4 * g + 8 * d)
        self.assertEqual(flops.train_step_flops(generator, discriminator, g_steps=5),
                         (g + 6 * d) + 5 * (3 * g + 2 * d))
