"""What the families share."""

from keras import layers

# Output layers compute in float32 under any mixed-precision policy: samples and logits stay
# float32 (stable losses, float32 saved generators), while the layers before them may use
# bfloat16 or float16.
OUT = "float32"


def leaky(slope: float) -> layers.Layer:
    return layers.LeakyReLU(negative_slope=slope)


def batch_norm(momentum: float) -> layers.Layer:
    """BatchNormalization over the GLOBAL batch: under tf.distribute the replicas' statistics
    are all-reduced (``synchronized``), so N replicas normalise as one device on the whole
    batch (``batch_size`` is global); on one device it is the plain layer."""
    return layers.BatchNormalization(momentum=momentum, synchronized=True)
