"""What samples are: images ``(H, W, C)`` or vectors ``(n_points,)`` of 1-D draws.

A sample kind says how samples are pictured (a grid of images, or the seed's histogram of
values), what is summarised of them each epoch, and which precision policies suit models that
make them. Families and data sources each name their kind; a pipeline must pair equal kinds.

Every generator this package saves carries a ``GeneratorSpec`` layer: an identity on its output
whose config records how to sample it (the noise distribution), its kind, its family and the
data settings it was trained on. ``sample`` and ``evaluate`` read these facts from the saved
model (``spec_of``), never from its name.

A generator of normal noise may also carry a ``Truncation`` layer on its ``z`` (the truncation
trick, ``model.truncation``): at inference it maps N(0, 1) noise onto N(0, 1) truncated to
[-t, t], so whoever feeds the saved model standard normal noise (``sample``, ``evaluate``, the
MLflow model, a served endpoint) gets the same truncated samples; training sees plain noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import keras
import numpy as np

from gan_pipeline import visualize
from gan_pipeline.errors import UserError

NOISES = ("normal", "uniform")


@dataclass(frozen=True)
class Kind:
    """How samples of one kind are pictured and summarised."""

    name: str
    rank: int  # dimensions of one sample
    picture_key: str  # the per-epoch MLflow image key
    track_moments: bool  # training steps report the mean and std of what G makes
    mixed_precision: bool  # `train.precision = auto` may pick a mixed policy
    augments: bool = False  # `train.augment` (DiffAugment) applies to its samples
    _picture: Callable = field(repr=False, default=None)
    _report: Callable = field(repr=False, default=None)

    def picture(self, samples: np.ndarray, title: str = "",
                real: np.ndarray | None = None, noise: np.ndarray | None = None,
                labels: np.ndarray | None = None,
                class_names: list[str] | None = None) -> np.ndarray:
        """One uint8 RGB picture of ``samples`` (beside ``real`` and ``noise`` where it helps;
        with the ``labels`` they were generated for, one row per class)."""
        if labels is not None and class_names:
            return visualize.class_rows(samples, labels, class_names, title)
        return self._picture(samples, title, real, noise)

    def summary(self, samples: np.ndarray) -> dict[str, float]:
        """Figures of a fixed-noise batch logged every epoch (vectors: their moments)."""
        if not self.track_moments:
            return {}
        return {"sample_mean": float(samples.mean()), "sample_std": float(samples.std())}

    def report(self, real, generated, steps, curves, final, title=""):
        """The end-of-run report figure (matplotlib)."""
        return self._report(real, generated, steps, curves, final, title)

    def check_shape(self, shape: tuple[int, ...], where: str) -> None:
        if len(shape) != self.rank:
            raise UserError(f"{where} holds samples of shape {tuple(shape)}, not {self.name} "
                            f"(rank {self.rank})")


def _image_picture(samples, title, real, noise):
    return visualize.image_grid(samples)


def _vector_picture(samples, title, real, noise):
    fig = visualize.histogram_figure({"Real": real, "Generated": samples, "Input": noise},
                                     title=title)
    try:
        return visualize.figure_pixels(fig)
    finally:
        visualize.close(fig)


IMAGES = Kind("images", rank=3, picture_key="samples", track_moments=False,
              mixed_precision=True, augments=True, _picture=_image_picture,
              _report=visualize.image_report_figure)
# The 1-D GAN's tiny per-point MLP only gets slower in bfloat16, whose 8-bit mantissa is also
# coarse beside a 0.02 KS target: vectors stay float32.
VECTORS = Kind("vectors", rank=1, picture_key="histogram", track_moments=True,
               mixed_precision=False, _picture=_vector_picture,
               _report=visualize.vector_report_figure)
KINDS = {k.name: k for k in (IMAGES, VECTORS)}


@keras.saving.register_keras_serializable(package="gan_pipeline")
class GeneratorSpec(keras.layers.Layer):
    """Identity on a generator's samples; its config records how to sample and read them.

    ``noise``: the distribution of z (``"normal"`` N(0, 1) or ``"uniform"`` U(0, 1));
    ``kind``: ``"images"`` or ``"vectors"``; ``family``: the family that built the generator;
    ``data``: the data settings it was trained on (what ``evaluate`` compares it with);
    ``class_names``: a conditional generator's classes, in label order (None otherwise).
    """

    def __init__(self, noise: str = "normal", kind: str = "images", family: str = "",
                 data: dict | None = None, class_names: list[str] | None = None, **kwargs):
        kwargs["dtype"] = "float32"  # samples stay float32 under any mixed policy
        super().__init__(**kwargs)
        if noise not in NOISES or kind not in KINDS:
            raise ValueError(f"GeneratorSpec: noise {noise!r} or kind {kind!r} is unknown")
        self.noise, self.kind, self.family = noise, kind, family
        self.data = dict(data or {})
        self.class_names = [str(c) for c in class_names] if class_names else None

    def call(self, x):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "noise": self.noise, "kind": self.kind,
                "family": self.family, "data": self.data, "class_names": self.class_names}


def attach_spec(generator: keras.Model, **spec: Any) -> keras.Model:
    """``generator`` with a ``GeneratorSpec`` on its output (same layers and weights)."""
    out = GeneratorSpec(**spec, name="spec")(generator.outputs[0])
    inputs = generator.inputs if len(generator.inputs) > 1 else generator.input
    return keras.Model(inputs, out, name=generator.name)


@keras.saving.register_keras_serializable(package="gan_pipeline")
class Truncation(keras.layers.Layer):
    """The truncation trick on a generator's N(0, 1) noise, at inference only.

    With ``threshold`` t > 0 each value z becomes ``Phi^-1(Phi(-t) + Phi(z) (Phi(t) - Phi(-t)))``:
    a monotone map that turns N(0, 1) into N(0, 1) truncated to [-t, t] (the same law as
    BigGAN's resampling, without a loop), so a smaller t trades diversity for fidelity. In
    training (``training=True``) and with t = 0 it is the identity.
    """

    def __init__(self, threshold: float = 0.0, **kwargs):
        kwargs["dtype"] = "float32"  # the map's tails need float32 under any mixed policy
        super().__init__(**kwargs)
        if not threshold >= 0:
            raise ValueError(f"Truncation: threshold must be >= 0, got {threshold!r}")
        self.threshold = float(threshold)

    def call(self, z, training=None):
        if training or self.threshold == 0:
            return z
        half = np.float32(np.sqrt(0.5))
        low = 0.5 * (1.0 + math.erf(-self.threshold * half))  # Phi(-t)
        u = 0.5 * (1.0 + keras.ops.erf(z * half))  # Phi(z), uniform on (0, 1)
        p = low + u * (1.0 - 2.0 * low)  # uniform on (Phi(-t), Phi(t))
        out = keras.ops.erfinv(2.0 * p - 1.0) / half
        return keras.ops.clip(out, -self.threshold, self.threshold)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


def truncation_of(generator: keras.Model) -> float:
    """The truncation threshold saved in ``generator`` (0: none)."""
    return next((layer.threshold for layer in generator.layers
                 if isinstance(layer, Truncation)), 0.0)


def with_truncation(generator: keras.Model, threshold: float) -> keras.Model:
    """``generator`` (its layers and weights, shared) whose noise is truncated at
    ``threshold`` (0: plain N(0, 1)): its ``Truncation`` layer replaced, or one added on z."""
    if any(isinstance(layer, Truncation) for layer in generator.layers):
        return keras.models.clone_model(
            generator, clone_function=lambda layer: (
                Truncation(threshold, name=layer.name) if isinstance(layer, Truncation)
                else layer))
    if threshold == 0:
        return generator
    # The layer goes in front of z; the generator's own graph is called on its output (a
    # nested model), its GeneratorSpec attached again on the outside.
    spec = next(layer for layer in generator.layers if isinstance(layer, GeneratorSpec))
    inputs = [keras.Input(batch_shape=x.shape, dtype=x.dtype, name=x.name)
              for x in generator.inputs]
    fed = [Truncation(threshold, name="truncation")(inputs[0]), *inputs[1:]]
    out = generator(fed if len(fed) > 1 else fed[0])
    out = GeneratorSpec.from_config({**spec.get_config(), "name": "spec"})(out)
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], out, name=generator.name)


@keras.saving.register_keras_serializable(package="gan_pipeline")
class ClassCode(keras.layers.Layer):
    """Splits noise ``z`` of shape ``(batch, d + 1)`` into a conditional generator's ``z[:, :d]``
    and a class label ``(batch, 1)`` int32 drawn from the last coordinate, by ``shares``.

    The last coordinate c is N(0, 1), so Phi(c) is uniform on (0, 1), and so is the fractional
    part of 997 Phi(c); the label is the class whose slice of [0, 1) (cumulative ``shares``)
    holds it. The fractional part stays near uniform when truncation narrows c's range, so the
    truncation trick does not shift the class shares. A deterministic function of ``z``: the
    same noise gives the same class.
    """

    def __init__(self, shares: list[float] | None = None, num_classes: int = 0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if shares is None:
            shares = [1.0 / num_classes] * num_classes if num_classes > 1 else []
        if len(shares) < 2 or not all(p >= 0 for p in shares) or not sum(shares) > 0:
            raise ValueError(f"ClassCode: expected two or more class shares, got {shares!r}")
        self.shares = [float(p) / float(sum(shares)) for p in shares]

    def call(self, z):
        z = keras.ops.cast(z, "float32")
        noise, code = z[:, :-1], z[:, -1:]
        u = 0.5 * (1.0 + keras.ops.erf(code * np.float32(np.sqrt(0.5))))
        u = 997.0 * u
        u = u - keras.ops.floor(u)
        edges = keras.ops.convert_to_tensor(np.cumsum(self.shares)[:-1].astype(np.float32))
        label = keras.ops.sum(keras.ops.cast(u >= edges, "int32"), axis=-1, keepdims=True)
        return noise, label

    def compute_output_spec(self, z):
        return (keras.KerasTensor((z.shape[0], z.shape[1] - 1), "float32"),
                keras.KerasTensor((z.shape[0], 1), "int32"))

    def get_config(self):
        return {**super().get_config(), "shares": self.shares}


def class_mixture(generator: keras.Model, shares: list[float] | None = None) -> keras.Model:
    """A conditional ``generator`` (``[z, label] -> sample``) as an unconditional one: its
    noise has one more coordinate, from which ``ClassCode`` draws the class by ``shares``
    (None: uniform). Layers and weights are shared; a truncation saved in ``generator`` moves
    onto the new noise. The spec is the generator's, with no classes: whoever samples it
    gives noise alone, and gets every class by its share."""
    spec = next(layer for layer in generator.layers if isinstance(layer, GeneratorSpec))
    if spec.class_names is None or spec.noise != "normal":
        raise ValueError("class_mixture needs a conditional generator of normal noise")
    threshold = truncation_of(generator)
    inner = with_truncation(generator, 0.0)
    z = keras.Input((int(inner.inputs[0].shape[1]) + 1,), name="z")
    noise, label = ClassCode(shares, num_classes=len(spec.class_names), name="class_code")(z)
    out = inner([noise, label])
    out = GeneratorSpec.from_config({**spec.get_config(), "name": "spec",
                                     "class_names": None})(out)
    return with_truncation(keras.Model(z, out, name=generator.name), threshold)


# Generators saved before the spec existed (gan-pipeline 0.1) were named "<family>_generator";
# their noise was the family's and the 1-D ones were trained on N(4, 1.25). Kept in this one
# place so that earlier runs still sample and evaluate.
_LEGACY_UNIFORM = ("gaussian_1d_generator", "gaussian_1d_sorted_generator")


def spec_of(generator: keras.Model, what: str = "the model") -> dict[str, Any]:
    """The sampling facts of a saved generator, or a ``UserError`` when it is not one."""
    for layer in generator.layers:
        if isinstance(layer, GeneratorSpec):
            return {"noise": layer.noise, "kind": layer.kind, "family": layer.family,
                    "data": dict(layer.data), "class_names": layer.class_names,
                    "truncation": truncation_of(generator)}
    name = getattr(generator, "name", "")
    if name.endswith("_generator") and len(generator.inputs) == 1:
        vectors = len(generator.output_shape) == 2
        data = {"dataset": "gaussian_1d", "n_points": generator.output_shape[1]} if vectors else {}
        return {"noise": "uniform" if name in _LEGACY_UNIFORM else "normal",
                "kind": "vectors" if vectors else "images",
                "family": name.removesuffix("_generator"), "data": data, "class_names": None,
                "truncation": 0.0}
    raise UserError(f"{what} is not a gan-pipeline generator: it has no GeneratorSpec layer "
                    f"(a Keras model named {name!r} with inputs {generator.input_shape}); "
                    "give a generator logged by `gan-pipeline train` (its run id, "
                    "runs:/<run id>/generator, or its generator.keras)")
