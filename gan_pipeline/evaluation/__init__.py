"""Evaluation: quality figures for a generator against the data it was trained to imitate.

Each data source gives its evaluator (``source.evaluator(n, seed, collapse_max_share)``):
images are judged in the features of a classifier trained on the data
(``evaluation.images``, ``evaluation.classifier``), 1-D vectors against the exact N(mean, std)
(``gan_pipeline.data.gaussian``). An evaluator is called with a generator and returns figures;
``objective`` names the headline figure (lower is better), ``collapse`` reads mode collapse off
the figures, ``floor`` gives what real data scores, ``describe`` says what was measured.
Samples come from a fixed noise seed, so successive calls measure the generator, not the noise.
"""

from __future__ import annotations

from gan_pipeline import kinds
from gan_pipeline.errors import UserError


def check_kind(generator, kind: kinds.Kind) -> None:
    """A ``UserError`` when ``generator`` does not make samples of ``kind``."""
    made = kinds.spec_of(generator)["kind"]
    if made != kind.name:
        raise UserError(f"the generator makes {made} but this data holds {kind.name}; name its "
                        "data with --set data.dataset=... (or --config)")


def report(evaluator, generator, model: str) -> dict:
    """The full evaluation of ``generator`` (named ``model``) as one JSON-ready dict: the
    settings, the figures and the real-vs-real floor beside them."""
    return {"model": model, "n": evaluator.n, "seed": evaluator.seed, **evaluator.describe(),
            "figures": evaluator(generator), "real_vs_real_floor": evaluator.floor()}
