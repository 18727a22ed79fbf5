"""GAN losses as objects, and the penalties that may be added to the discriminator's loss.

A loss gives the discriminator's loss on real and fake logits, the generator's loss on fake
logits, and the step metrics that make sense for it. ``GAN.compile(loss=...)`` takes one;
``train.loss`` names one in ``LOSSES``. To add a loss, write a class here and add it to
``LOSSES``: the config's choices, the factory and the GAN read it from there.

- ``non_saturating`` (default): D by binary cross-entropy (real -> ``label_smoothing``, fake ->
  0; one-sided smoothing, Salimans et al. 2016); G maximises log D(G(z)). Strong early gradients.
- ``minimax``: the same D; G minimises log(1 - D(G(z))), the original game, whose gradient
  vanishes when D wins.
- ``hinge`` (Lim & Ye 2017; Miyato et al. 2018): D minimises E relu(1 - D(x)) + E relu(1 +
  D(G(z))), G minimises -E D(G(z)).
- ``least_squares`` (Mao et al. 2017): D regresses real to 1 and fake to 0, G its fakes to 1.
- ``wasserstein`` (Arjovsky et al. 2017): D (a critic) maximises E D(x) - E D(G(z)), G
  maximises E D(G(z)); it needs a Lipschitz critic, so ``train.gp_weight`` must be > 0 with it
  (the gradient penalty of Gulrajani et al. 2017).
- ``relativistic`` (the relativistic pairing loss, Jolicoeur-Martineau 2019; R3GAN, Huang et
  al. 2024): each real sample is paired with a fake one, D minimises E softplus(D(G(z)) - D(x))
  and G E softplus(D(x) - D(G(z))); G's loss reads D's scores of the real batch too
  (``needs_real``). R3GAN trains it with zero-centred R1 and R2 (``train.r1_gamma``,
  ``train.r2_gamma``).

A penalty is called inside D's gradient tape with the ``DiscriminatorPass`` of that step, and
returns a scalar added to D's loss. ``R1`` (Mescheder et al. 2018) is gamma/2 E |grad_x D(x)|^2
at real samples (lazily, every k-th step, with ``train.r1_every``); ``R2`` the same at the fake
samples D judges (Roth et al. 2017; R3GAN). ``GradientPenalty`` is weight * E (|grad D(x_hat)| - 1)^2 at random points
x_hat between real and fake samples.

A generator penalty is called inside G's gradient tape with the ``GeneratorPass`` of that step
and returns a scalar added to G's loss. ``ModeSeeking`` (Mao et al. 2019) rewards G for making
different samples from different noise: the step's batch comes in two halves with the same
labels (conditional) and fresh noise, and the penalty is weight / (mean |G(z1) - G(z2)| /
mean |z1 - z2| + 1e-5) over those pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import tensorflow as tf
from keras import ops


def _f32(x):
    return ops.cast(x, "float32")


def _bce(logits, target: float):
    logits = _f32(logits)
    return ops.mean(ops.binary_crossentropy(ops.full_like(logits, target), logits, from_logits=True))


class GANLoss:
    """The discriminator's and generator's losses of one kind (logits in, float32 out)."""

    name = ""
    settings: tuple[str, ...] = ()  # the `train.*` settings its constructor takes
    metric_names: tuple[str, ...] = ()  # extra step metrics (``metrics``)
    needs: dict[str, str] = {}  # `train.*` settings that must be > 0 with it, and why
    needs_real = False  # whether ``generator`` reads D's scores of a real batch

    def discriminator(self, real_logits, fake_logits):
        raise NotImplementedError

    def generator(self, fake_logits, real_logits=None):
        raise NotImplementedError

    def metrics(self, real_logits, fake_logits) -> dict:
        return {}

    def get_config(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.settings}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class SigmoidLoss(GANLoss):
    """D by binary cross-entropy on logits, with one-sided label smoothing on real samples.
    Its step metrics ``d_real``/``d_fake`` are D's mean outputs as probabilities."""

    settings = ("label_smoothing",)
    metric_names = ("d_real", "d_fake")

    def __init__(self, label_smoothing: float = 1.0):
        if not 0.0 < label_smoothing <= 1.0:
            raise ValueError(f"label_smoothing = {label_smoothing!r} is out of range: expected "
                             "a number > 0 and <= 1")
        self.label_smoothing = float(label_smoothing)

    def discriminator(self, real_logits, fake_logits):
        return _bce(real_logits, self.label_smoothing) + _bce(fake_logits, 0.0)

    def metrics(self, real_logits, fake_logits) -> dict:
        return {"d_real": ops.mean(ops.sigmoid(_f32(real_logits))),
                "d_fake": ops.mean(ops.sigmoid(_f32(fake_logits)))}


@keras.saving.register_keras_serializable(package="gan_pipeline")
class NonSaturating(SigmoidLoss):
    name = "non_saturating"

    def generator(self, fake_logits, real_logits=None):
        return _bce(fake_logits, 1.0)


@keras.saving.register_keras_serializable(package="gan_pipeline")
class Minimax(SigmoidLoss):
    name = "minimax"

    def generator(self, fake_logits, real_logits=None):
        # log(1 - sigmoid(l)) == -softplus(l); minimising it pushes the fake logits up.
        return -ops.mean(ops.softplus(_f32(fake_logits)))


class ScoreLoss(GANLoss):
    """A loss on D's raw scores. Its step metrics ``score_real``/``score_fake`` are D's mean
    scores on the real and fake batch."""

    metric_names = ("score_real", "score_fake")

    def metrics(self, real_logits, fake_logits) -> dict:
        return {"score_real": ops.mean(_f32(real_logits)),
                "score_fake": ops.mean(_f32(fake_logits))}


@keras.saving.register_keras_serializable(package="gan_pipeline")
class Hinge(ScoreLoss):
    name = "hinge"

    def discriminator(self, real_logits, fake_logits):
        return (ops.mean(ops.relu(1.0 - _f32(real_logits)))
                + ops.mean(ops.relu(1.0 + _f32(fake_logits))))

    def generator(self, fake_logits, real_logits=None):
        return -ops.mean(_f32(fake_logits))


@keras.saving.register_keras_serializable(package="gan_pipeline")
class LeastSquares(ScoreLoss):
    name = "least_squares"

    def discriminator(self, real_logits, fake_logits):
        return 0.5 * (ops.mean(ops.square(_f32(real_logits) - 1.0))
                      + ops.mean(ops.square(_f32(fake_logits))))

    def generator(self, fake_logits, real_logits=None):
        return 0.5 * ops.mean(ops.square(_f32(fake_logits) - 1.0))


@keras.saving.register_keras_serializable(package="gan_pipeline")
class Wasserstein(ScoreLoss):
    """The critic's loss is E D(G(z)) - E D(x), minus the Wasserstein-1 estimate it reports as
    ``w_distance``."""

    name = "wasserstein"
    metric_names = ScoreLoss.metric_names + ("w_distance",)
    needs = {"gp_weight": "the critic must be kept Lipschitz by the gradient penalty "
                          "(10 is the usual weight)"}

    def discriminator(self, real_logits, fake_logits):
        return ops.mean(_f32(fake_logits)) - ops.mean(_f32(real_logits))

    def generator(self, fake_logits, real_logits=None):
        return -ops.mean(_f32(fake_logits))

    def metrics(self, real_logits, fake_logits) -> dict:
        values = super().metrics(real_logits, fake_logits)
        return {**values, "w_distance": values["score_real"] - values["score_fake"]}


@keras.saving.register_keras_serializable(package="gan_pipeline")
class Relativistic(ScoreLoss):
    """The relativistic pairing loss: sample i of the real batch against sample i of the fake
    one, D wants D(x) above D(G(z)), G the reverse (softplus(-t) = -log sigmoid(t))."""

    name = "relativistic"
    needs_real = True

    def discriminator(self, real_logits, fake_logits):
        return ops.mean(ops.softplus(_f32(fake_logits) - _f32(real_logits)))

    def generator(self, fake_logits, real_logits=None):
        if real_logits is None:
            raise ValueError("the relativistic loss's generator term needs D's scores of a "
                             "real batch")
        return ops.mean(ops.softplus(_f32(real_logits) - _f32(fake_logits)))


LOSSES: dict[str, type[GANLoss]] = {
    cls.name: cls for cls in (NonSaturating, Minimax, Hinge, LeastSquares, Wasserstein,
                              Relativistic)}


def make_loss(name: str, **settings: Any) -> GANLoss:
    """The loss ``name`` with the settings it takes picked from ``settings`` (``train.*``)."""
    cls = LOSSES[name]
    return cls(**{k: settings[k] for k in cls.settings if k in settings})


# -- penalties ---------------------------------------------------------------------------------

@dataclass
class DiscriminatorPass:
    """What one D step computed, for penalties. ``real_gradients()`` is D's input gradient at the
    real batch; it is only computed (and traced) when a penalty asks for it. ``judge(samples,
    labels)`` calls D (with the labels, for a conditional GAN) inside the step's tape;
    ``new_seed()`` gives a fresh stateless seed for a penalty's own random draws (it advances
    the GAN's seed stream, so only penalties that draw call it)."""

    discriminator: keras.Model
    real: Any
    fake: Any
    real_logits: Any
    fake_logits: Any
    input_tape: tf.GradientTape
    labels: Any = None  # the real batch's labels (conditional), else None
    judge: Any = None
    new_seed: Any = None
    iteration: Any = 0  # D's optimizer's updates before this one
    _real_gradients: Any = field(default=None, repr=False)
    _fake_gradients: Any = field(default=None, repr=False)

    def real_gradients(self):
        if self._real_gradients is None:  # (a non-scalar target: the gradient of its sum)
            self._real_gradients = self.input_tape.gradient(self.real_logits, self.real)
        return self._real_gradients

    def fake_gradients(self):
        """D's input gradient at the fake batch (G's weights untouched: ``fake`` is a constant
        of D's step)."""
        if self._fake_gradients is None:
            self._fake_gradients = self.input_tape.gradient(self.fake_logits, self.fake)
        return self._fake_gradients


def _mean_squared_norm(grads):
    grads = _f32(grads)
    grads = ops.reshape(grads, (ops.shape(grads)[0], -1))
    return ops.mean(ops.sum(ops.square(grads), axis=1))


@keras.saving.register_keras_serializable(package="gan_pipeline")
class R1:
    """gamma/2 * E |grad_x D(x)|^2 on real samples: damps the oscillation of the two networks
    around the equilibrium instead of letting it persist (Mescheder et al. 2018).

    ``every = k`` > 1 is lazy R1 (Karras et al. 2020): the penalty, times k, only on every k-th
    D step (those where D's optimizer has made a multiple of k updates), which saves the input
    gradient's cost on the others."""

    def __init__(self, gamma: float, every: int = 1):
        if not gamma > 0:
            raise ValueError(f"R1 gamma must be > 0, got {gamma!r}")
        if int(every) < 1:
            raise ValueError(f"R1 every must be >= 1, got {every!r}")
        self.gamma, self.every = float(gamma), int(every)

    def penalty(self, step: DiscriminatorPass):
        return 0.5 * self.gamma * _mean_squared_norm(step.real_gradients())

    def __call__(self, step: DiscriminatorPass):
        if self.every == 1:
            return self.penalty(step)
        return tf.cond(tf.equal(step.iteration % self.every, 0),
                       lambda: float(self.every) * self.penalty(step),
                       lambda: tf.constant(0.0, tf.float32))

    def get_config(self):
        return {"gamma": self.gamma, "every": self.every}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="gan_pipeline")
class R2:
    """gamma/2 * E |grad_x D(x)|^2 at the fake samples of D's step: with R1, the zero-centred
    pair R3GAN trains its relativistic loss with (Huang et al. 2024)."""

    def __init__(self, gamma: float):
        if not gamma > 0:
            raise ValueError(f"R2 gamma must be > 0, got {gamma!r}")
        self.gamma = float(gamma)

    def __call__(self, step: DiscriminatorPass):
        return 0.5 * self.gamma * _mean_squared_norm(step.fake_gradients())

    def get_config(self):
        return {"gamma": self.gamma}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="gan_pipeline")
class GradientPenalty:
    """weight * E (|grad D(x_hat)|_2 - 1)^2, x_hat = e x + (1 - e) G(z) with e ~ U[0, 1] per
    sample (Gulrajani et al. 2017); the norm is sqrt(sum g^2 + 1e-12), so its gradient stays
    finite where g = 0. A conditional D judges x_hat with the real batch's labels."""

    def __init__(self, weight: float):
        if not weight > 0:
            raise ValueError(f"gradient penalty weight must be > 0, got {weight!r}")
        self.weight = float(weight)

    def __call__(self, step: DiscriminatorPass):
        real, fake = _f32(step.real), _f32(step.fake)
        batch = ops.shape(real)[0]
        shape = (batch,) + (1,) * (len(real.shape) - 1)
        e = tf.random.stateless_uniform(shape, step.new_seed(), 0.0, 1.0)
        between = e * real + (1.0 - e) * fake
        with tf.GradientTape() as tape:
            tape.watch(between)
            scores = step.judge(ops.cast(between, step.real.dtype), step.labels)
        grads = ops.reshape(_f32(tape.gradient(scores, between)), (batch, -1))
        norms = ops.sqrt(ops.sum(ops.square(grads), axis=1) + 1e-12)
        return self.weight * ops.mean(ops.square(norms - 1.0))

    def get_config(self):
        return {"weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@dataclass
class GeneratorPass:
    """What one G step computed, for generator penalties: its ``inputs`` (z, or ``[z,
    labels]``) and the ``generated`` batch. When a penalty is ``paired``, row ``i`` and row
    ``batch // 2 + i`` share their label (conditional) and differ in their noise."""

    inputs: Any
    generated: Any


@keras.saving.register_keras_serializable(package="gan_pipeline")
class ModeSeeking:
    """weight / (mean |G(z1) - G(z2)| / mean |z1 - z2| + 1e-5) over the step's pairs: falls as
    G's samples spread out with their noise, so G cannot map all its noise onto a few modes
    (Mao et al. 2019, "Mode Seeking GANs"; their weight for images is 1). A conditional G is
    compared with itself on the same label, the case it was made for: a G that reads the
    label and ignores its noise."""

    paired = True

    def __init__(self, weight: float):
        if not weight > 0:
            raise ValueError(f"mode-seeking weight must be > 0, got {weight!r}")
        self.weight = float(weight)

    @staticmethod
    def spread(step: GeneratorPass):
        """mean |G(z1) - G(z2)| / mean |z1 - z2| over the pairs (rows i and half + i)."""
        z = step.inputs[0] if isinstance(step.inputs, (list, tuple)) else step.inputs
        z, x = _f32(z), _f32(step.generated)
        half = ops.shape(x)[0] // 2
        dx = ops.mean(ops.abs(x[:half] - x[half:2 * half]))
        dz = ops.mean(ops.abs(z[:half] - z[half:2 * half]))
        return dx / (dz + 1e-12)

    def __call__(self, step: GeneratorPass):
        return self.weight / (self.spread(step) + 1e-5)

    def get_config(self):
        return {"weight": self.weight}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def generator_penalties_from(train) -> list:
    """The generator penalties the ``[train]`` settings switch on."""
    return [ModeSeeking(train.mode_seeking)] if train.mode_seeking > 0 else []


def penalties_from(train) -> list:
    """The penalties the ``[train]`` settings switch on."""
    penalties = [R1(train.r1_gamma, train.r1_every)] if train.r1_gamma > 0 else []
    if train.r2_gamma > 0:
        penalties.append(R2(train.r2_gamma))
    if train.gp_weight > 0:
        penalties.append(GradientPenalty(train.gp_weight))
    return penalties
