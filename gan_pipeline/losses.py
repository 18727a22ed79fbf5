"""GAN losses on discriminator logits.

Both losses train the discriminator with binary cross-entropy (real -> ``label_smoothing``, fake -> 0;
one-sided smoothing, as in Salimans et al. 2016). They differ in the generator's objective:

- ``non_saturating`` (default): maximise log D(G(z)), i.e. BCE(fake -> 1). Strong gradients early on.
- ``minimax``: minimise log(1 - D(G(z))), the original game; its gradient vanishes when D wins.
"""

from __future__ import annotations

from keras import ops

LOSSES = ("non_saturating", "minimax")


def _bce(logits, target: float):
    logits = ops.cast(logits, "float32")
    return ops.mean(ops.binary_crossentropy(ops.full_like(logits, target), logits, from_logits=True))


class GANLoss:
    """The discriminator and generator losses of one kind, with one-sided label smoothing."""

    def __init__(self, kind: str = "non_saturating", label_smoothing: float = 1.0):
        if kind not in LOSSES:
            from gan_pipeline.errors import UserError, closest

            raise UserError(f"unknown loss {kind!r}; allowed: {', '.join(LOSSES)}."
                            + closest(kind, LOSSES))
        if not 0.0 < label_smoothing <= 1.0:
            from gan_pipeline.errors import UserError

            raise UserError(f"label_smoothing = {label_smoothing!r} is out of range: "
                            "expected a number > 0 and <= 1")
        self.kind = kind
        self.label_smoothing = float(label_smoothing)

    def discriminator_loss(self, real_logits, fake_logits):
        return _bce(real_logits, self.label_smoothing) + _bce(fake_logits, 0.0)

    def generator_loss(self, fake_logits):
        if self.kind == "minimax":
            # log(1 - sigmoid(l)) == -softplus(l); minimising it pushes the fake logits up.
            return -ops.mean(ops.softplus(ops.cast(fake_logits, "float32")))
        return _bce(fake_logits, 1.0)

    def get_config(self) -> dict:
        return {"kind": self.kind, "label_smoothing": self.label_smoothing}
