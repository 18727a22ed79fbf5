"""What the families share."""

import keras
import tensorflow as tf
from keras import layers

# Output layers compute in float32 under any mixed-precision policy: samples and logits stay
# float32 (stable losses, float32 saved generators), while the layers before them may use
# bfloat16 or float16.
OUT = "float32"


def leaky(slope: float) -> layers.Layer:
    return layers.LeakyReLU(negative_slope=slope)


def batch_norm(momentum: float) -> layers.Layer:
    """BatchNormalization over the GLOBAL batch: built under a tf.distribute strategy of
    several replicas, the replicas' statistics are all-reduced (``synchronized``), so N replicas
    normalise as one device on the whole batch (``batch_size`` is global). On one device it is
    the plain layer: Keras' synchronized path would still count and all-reduce every
    activation, a cost for nothing."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return layers.BatchNormalization(momentum=momentum, synchronized=replicas > 1)


def dropout(rate: float) -> layers.Layer:
    return ByteDropout(rate)


@keras.saving.register_keras_serializable(package="gan_pipeline")
class ByteDropout(layers.Layer):
    """Dropout whose mask costs a quarter of the random numbers: each random 32-bit word decides
    four elements, one byte each (an element is dropped when its byte is below
    ``round(256 * rate)``, so the rate in effect is a multiple of 1/256: 0.3 acts as 0.3008).
    Kept elements are scaled by 1 / (1 - that rate), as in ``keras.layers.Dropout``. Drawing a
    float per element made Keras' own layer a fifth of the MLP GAN's CPU step."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        self.rate, self.seed = float(rate), seed
        self.cutoff = round(256 * self.rate)  # bytes below it drop their element
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training or self.cutoff == 0:
            return inputs
        size = tf.size(inputs)
        words = tf.random.stateless_uniform([(size + 3) // 4], self.seed_generator.next(),
                                            minval=None, maxval=None, dtype=tf.uint32)
        bytes_ = tf.reshape(tf.bitcast(words, tf.uint8), [-1])[:size]
        keep = tf.reshape(bytes_ >= self.cutoff, tf.shape(inputs))
        scale = tf.cast(256.0 / (256 - self.cutoff), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def minibatch_std(h, on: bool):
    """``h`` with one more feature, the batch's variety (``MinibatchStd``), when ``on``."""
    return MinibatchStd()(h) if on else h


@keras.saving.register_keras_serializable(package="gan_pipeline")
class MinibatchStd(layers.Layer):
    """One more feature for D: the standard deviation of each feature over the batch D judges,
    averaged into one number and appended to every sample's features (Karras et al. 2018,
    ProGAN, over the whole batch). A batch of fakes with too little variety shows it in this
    number, so D can tell it from a real batch and G is pushed to spread out. D judges real and
    fake batches separately, so the figure is of one kind of batch. Input (batch, F), output
    (batch, F + 1); computed in float32."""

    def call(self, inputs):
        h = tf.cast(inputs, "float32")
        spread = tf.sqrt(tf.math.reduce_variance(h, axis=0) + 1e-8)   # (F,)
        column = tf.fill([tf.shape(h)[0], 1], tf.reduce_mean(spread))  # (batch, 1)
        return tf.concat([inputs, tf.cast(column, inputs.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], None if input_shape[-1] is None else input_shape[-1] + 1)
