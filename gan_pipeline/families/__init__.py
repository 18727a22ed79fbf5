"""Model families, the unit of extension for models.

A family is one ``Family`` object: its builder (``(shape, hp) -> (generator, discriminator)``),
its hyperparameters with their defaults (which become its ``model.*`` settings), the noise its
generator takes, and the kind of samples it makes (``gan_pipeline.kinds``: how they are pictured,
which data sources it fits). Generators map noise ``z`` to samples; discriminators output one
logit per sample (no sigmoid). A *conditional* family's networks also take an integer class
label, shape ``(batch, 1)``: G maps ``[z, label]`` to a sample of that class, D judges
``[x, label]``; its builder gets the number of classes as a fourth argument. A family that
*mixes classes* trains that way, on labelled data, but saves an unconditional generator that
draws the class from its own noise: labels help training, and the result samples from noise.

To add a family: write a module beside these that defines its builder and ``FAMILIES``, and add
the module to ``_MODULES`` below. Nothing else in the package changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import keras

from gan_pipeline import kinds
from gan_pipeline.errors import UserError, closest


@dataclass(frozen=True)
class Family:
    """Everything about one kind of model."""

    name: str
    build_fn: Callable[[tuple[int, ...], dict[str, Any], str], tuple[keras.Model, keras.Model]]
    defaults: dict[str, Any] = field(default_factory=dict)
    noise: str = "normal"  # the distribution of z: "normal" N(0, 1) or "uniform" U(0, 1)
    kind: kinds.Kind = kinds.IMAGES
    summary: str = ""  # one line for the docs and error messages
    conditional: bool = False  # G and D take the class label too (labelled data only)
    # Trained conditionally, saved unconditional: the saved generator draws its class from
    # its noise (``kinds.class_mixture``), so it samples without labels, every class by its share.
    mixes_classes: bool = False
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # string hyperparameters

    def fields(self):
        """The ``model.*`` settings of this family (typed and bounded from the defaults)."""
        from gan_pipeline.config.schema import hyperparameter_fields  # (config imports us)

        return hyperparameter_fields(self.defaults, self.choices)

    def build(self, shape: tuple[int, ...], num_classes: int = 0,
              **hyperparameters) -> tuple[keras.Model, keras.Model]:
        """``(generator, discriminator)`` for samples of ``shape`` (and ``num_classes`` labels,
        for a conditional family); hyperparameters not given take the defaults, unknown ones
        are an error."""
        unknown = set(hyperparameters) - set(self.defaults)
        if unknown:
            key = sorted(unknown)[0]
            raise UserError(f"unknown hyperparameter {key!r} for model {self.name!r}; allowed: "
                            f"{', '.join(sorted(self.defaults))}." + closest(key, self.defaults))
        shape = tuple(int(d) for d in shape)
        self.kind.check_shape(shape, f"model {self.name!r}: the data")
        hp = {**self.defaults, **hyperparameters}
        for key, allowed in self.choices.items():
            if hp[key] not in allowed:
                raise UserError(f"model {self.name!r}: {key} must be one of "
                                f"{', '.join(map(repr, allowed))}, got {hp[key]!r}")
        if not self.conditional:
            return self.build_fn(shape, hp, self.name)
        if num_classes < 2:
            raise UserError(f"model {self.name!r} is conditional: it needs data with at least "
                            f"two classes, got {num_classes}")
        return self.build_fn(shape, hp, self.name, int(num_classes))

    @property
    def samples_by_class(self) -> bool:
        """Whether its saved generator takes a class label (and is judged per class)."""
        return self.conditional and not self.mixes_classes


def _registry() -> dict[str, Family]:
    from gan_pipeline.families import conditional, dcgan, gaussian_1d, gaussian_1d_pure, mlp

    _MODULES = (gaussian_1d, gaussian_1d_pure, mlp, dcgan, conditional)
    return {family.name: family for module in _MODULES for family in module.FAMILIES}


FAMILIES: dict[str, Family] = _registry()


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise UserError(f"unknown model {name!r}; allowed: {', '.join(sorted(FAMILIES))}."
                        + closest(name, FAMILIES))
    return FAMILIES[name]


def build(name: str, shape: tuple[int, ...], num_classes: int = 0,
          **hyperparameters) -> tuple[keras.Model, keras.Model]:
    """Build ``(generator, discriminator)`` of family ``name`` for samples of ``shape``."""
    return get(name).build(shape, num_classes, **hyperparameters)
