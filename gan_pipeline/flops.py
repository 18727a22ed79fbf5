"""Model FLOPs, counted from the layers: what `make bench` divides by time to get FLOP/s and MFU.

A FLOP here is one multiply or one add (a multiply-add is 2), and only the layers that carry a
network's arithmetic count: Dense, Conv2D, Conv2DTranspose (and those inside ``SpectralNorm``).
Activations, normalisation, embeddings and the optimizer's update are a few FLOPs per weight or
per activation, not per multiply-add, and count as overhead, as model-FLOPs utilisation (MFU)
defines it (PaLM, Chowdhery et al. 2022, appendix B).

A GAN training step's model FLOPs per real sample, with G and D each one forward pass of one
sample, and a backward pass twice its forward (gradients for the inputs and for the weights):
  D step: G forward (the fakes) + D forward and backward on the real and the fake batch
          = G + 2 x 3D
  G step: G forward and backward + D forward and its backward to the input only (D's weights
          get no gradient) = 3G + 2D
  total:  4G + 8D (a pipeline file with ``train.d_steps`` / ``train.g_steps`` above 1 does
          each update that many times a batch)
Every loop `make bench` times (the tutorial's, keras.io's, ours) does at least this work, so
their MFU compares like with like; what a loop does beyond it (penalties, EMA, sorting) is its
overhead.
"""

from __future__ import annotations

import math

import keras
from keras import layers


def _per_sample(shape) -> int:
    """The number of positions a layer is applied at per sample: the product of the sides
    between the batch axis and the channel axis (1 for a flat input)."""
    return math.prod(int(side) for side in shape[1:-1])


def layer_flops(layer: layers.Layer, input_shape, output_shape) -> int:
    """Forward FLOPs per sample of one layer applied to ``input_shape`` (batch axis first)."""
    if isinstance(layer, keras.Model):
        return forward_flops(layer)
    if isinstance(layer, layers.Wrapper):  # SpectralNorm: the wrapped layer's arithmetic
        return layer_flops(layer.layer, input_shape, output_shape)
    if isinstance(layer, layers.Dense):
        return 2 * _per_sample(input_shape) * int(input_shape[-1]) * layer.units
    if isinstance(layer, layers.Conv2DTranspose):  # each input position spreads a kernel
        kh, kw, out_c, in_c = layer.kernel.shape
        return 2 * _per_sample(input_shape) * kh * kw * in_c * out_c
    if isinstance(layer, layers.Conv2D):  # each output position gathers a kernel
        kh, kw, in_c, out_c = layer.kernel.shape
        return 2 * _per_sample(output_shape) * kh * kw * in_c * out_c
    return 0


def _shape(tensors):
    tensor = tensors[0] if isinstance(tensors, (list, tuple)) else tensors
    return tuple(tensor.shape)


def forward_flops(model: keras.Model) -> int:
    """Forward FLOPs per sample of a functional ``model``: the sum over the nodes of its own
    graph, each layer at the shapes it is applied to there (a layer called twice counts
    twice; a model inside it counts its own layers)."""
    total = 0
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            if node.is_input:
                continue
            total += layer_flops(node.operation, _shape(node.input_tensors),
                                 _shape(node.outputs))
    return total


def train_step_flops(generator: keras.Model, discriminator: keras.Model, d_steps: int = 1,
                     g_steps: int = 1) -> int:
    """Model FLOPs of one GAN training step per real sample: ``d_steps`` D updates of
    G + 6 D and ``g_steps`` G updates of 3 G + 2 D forward FLOPs each (4 G + 8 D for one of
    each, the module docstring)."""
    g, d = forward_flops(generator), forward_flops(discriminator)
    return d_steps * (g + 6 * d) + g_steps * (3 * g + 2 * d)
