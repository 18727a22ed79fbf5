"""What the families share."""

from keras import layers

# Output layers compute in float32 under any mixed-precision policy: samples and logits stay
# float32 (stable losses, float32 saved generators), while the layers before them may use
# bfloat16 or float16.
OUT = "float32"


def leaky(slope: float) -> layers.Layer:
    return layers.LeakyReLU(negative_slope=slope)
