"""Standing statistics (BigGAN): a generator's BatchNorm moving statistics set from the
activations of its own samples, layer by layer (``GAN.standing_statistics`` draws the noise)."""

from __future__ import annotations

import keras
from keras import ops


def holds_batch_norm(network) -> bool:
    return any(isinstance(layer, keras.layers.BatchNormalization)
               for layer in network._flatten_layers(include_self=False))


def set_statistics(network: keras.Model, draws: list) -> None:
    """``GAN.standing_statistics`` on ``network`` fed ``draws`` (a list of input lists), in
    graph order: a BatchNorm layer gets the moments of its input; a nested model holding
    BatchNorm layers (a generator wrapped by ``kinds.with_truncation``) is handled the same
    way on the inputs it receives. Each probe reruns the graph, so later layers see the
    earlier ones already set."""
    parts = [layer for layer in network.layers
             if isinstance(layer, keras.layers.BatchNormalization)
             or (isinstance(layer, keras.Model) and holds_batch_norm(layer))]
    if not parts or not draws:
        return
    # A layer may be called in other graphs too (a nested generator is called again by the
    # exported class mixture): take the node of this network's own graph.
    graph = getattr(network, "_nodes_by_depth", None)  # (a Sequential model has none)
    own = {id(node) for nodes in graph.values() for node in nodes} if graph else None
    feeds, spans = [], []
    for part in parts:
        node = next(node for node in part._inbound_nodes if own is None or id(node) in own)
        tensors = list(node.input_tensors)
        spans.append((len(feeds), len(feeds) + len(tensors)))
        feeds.extend(tensors)
    probe = keras.Model(network.inputs, feeds)

    def fed(inputs, index):
        first, last = spans[index]
        out = probe(list(inputs), training=False)
        return (list(out) if isinstance(out, (list, tuple)) else [out])[first:last]

    for index, part in enumerate(parts):
        if not isinstance(part, keras.layers.BatchNormalization):
            set_statistics(part, [[ops.convert_to_numpy(x) for x in fed(inputs, index)]
                                            for inputs in draws])
            continue
        axis = part.axis if isinstance(part.axis, int) else part.axis[0]
        mean = variance = 0.0
        for inputs in draws:
            x = ops.cast(fed(inputs, index)[0], "float32")
            axes = [a for a in range(len(x.shape)) if a != axis % len(x.shape)]
            batch_mean, batch_variance = ops.moments(x, axes=axes)
            mean, variance = mean + batch_mean, variance + batch_variance
        part.moving_mean.assign(ops.cast(mean / len(draws), part.moving_mean.dtype))
        part.moving_variance.assign(ops.cast(variance / len(draws), part.moving_variance.dtype))
