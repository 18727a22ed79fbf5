"""What the families share."""

import keras
import tensorflow as tf
from keras import layers, ops

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


def spectral(layer: layers.Layer, on: bool) -> layers.Layer:
    """``layer`` (Dense or Conv2D) spectrally normalised (``SpectralNorm``) when ``on``."""
    return SpectralNorm(layer) if on else layer


@keras.saving.register_keras_serializable(package="gan_pipeline")
class SpectralNorm(layers.Wrapper):
    """A Dense or Conv2D layer that computes with its kernel divided by the kernel's largest
    singular value (Miyato et al. 2018): each layer of D is then at most 1-Lipschitz.

    As in the paper, the weight the optimizer updates stays W and the forward pass uses
    W / sigma(W), so gradients pass through sigma; sigma comes from one power iteration per
    training call, its vector ``u`` kept as a non-trainable weight (at inference u is used, not
    updated). Keras' own ``SpectralNormalization`` instead writes W / sigma back into the
    kernel on every training call (D is called three times a step here): the optimizer then
    steps on already-normalised weights without the gradient through sigma, and Adam's
    fixed-size steps are large against the shrunken kernel (docs/quality.md)."""

    def __init__(self, layer, power_iterations: int = 1, **kwargs):
        if not isinstance(layer, (layers.Dense, layers.Conv2D)):
            raise ValueError(f"SpectralNorm wraps Dense or Conv2D layers, got "
                             f"{type(layer).__name__}")
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        self.power_iterations = int(power_iterations)

    def build(self, input_shape):
        super().build(input_shape)
        self.u = self.add_weight(shape=(1, self.layer.kernel.shape[-1]), name="u",
                                 initializer=keras.initializers.RandomNormal(stddev=1.0),
                                 trainable=False, autocast=False)

    def normalised_kernel(self, training=False):
        """W / sigma(W), with sigma from the power iteration (which updates u in training)."""
        kernel = ops.cast(self.layer.kernel, "float32")
        w = ops.reshape(kernel, (-1, kernel.shape[-1]))  # (fan_in, out)
        u = ops.convert_to_tensor(self.u)
        for _ in range(self.power_iterations):
            v = keras.utils.normalize(ops.matmul(u, ops.transpose(w)), axis=None)
            u = keras.utils.normalize(ops.matmul(v, w), axis=None)
        u, v = ops.stop_gradient(u), ops.stop_gradient(v)
        if training:
            self.u.assign(u)
        sigma = ops.sum(ops.matmul(v, w) * u)
        return ops.cast(kernel / sigma, self.compute_dtype)

    def call(self, inputs, training=False):
        layer, kernel = self.layer, self.normalised_kernel(training)
        if isinstance(layer, layers.Conv2D):
            outputs = ops.conv(inputs, kernel, strides=layer.strides, padding=layer.padding,
                               data_format=layer.data_format, dilation_rate=layer.dilation_rate)
        else:
            outputs = ops.matmul(inputs, kernel)
        if layer.use_bias:
            outputs = outputs + ops.cast(layer.bias, self.compute_dtype)
        return layer.activation(outputs) if layer.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "power_iterations": self.power_iterations}
