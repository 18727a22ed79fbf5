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

# Which way each figure is better: the tuner's objective (tune.objective) may be any of them.
DIRECTIONS = {
    **dict.fromkeys(("fd_over_recall", "frechet_distance", "kid", "intra_fd", "intra_fd_worst",
                     "ks", "wasserstein1", "abs_mean_error", "abs_std_error"), "min"),
    **dict.fromkeys(("precision", "recall", "density", "coverage", "classifier_score",
                     "label_accuracy", "label_accuracy_worst", "intra_precision",
                     "intra_recall", "intra_recall_worst"), "max"),
}
# Figures made of others, as logged beside a search that ranks by them.
FORMULAS = {"fd_over_recall": "frechet_distance / max(recall, 0.05); for a conditional generator "
                              "frechet_distance / max(intra_recall, 0.05), intra_recall the mean "
                              "over classes of the recall within the class"}
VECTOR_FIGURES = ("ks", "wasserstein1", "abs_mean_error", "abs_std_error")
CONDITIONAL_FIGURES = ("label_accuracy", "label_accuracy_worst", "intra_fd", "intra_fd_worst",
                       "intra_precision", "intra_recall", "intra_recall_worst")


def check_objective(name: str, kind: kinds.Kind, conditional: bool) -> None:
    """A ``UserError`` when models of ``kind`` (``conditional`` or not) never report ``name``."""
    vector = name in VECTOR_FIGURES
    if vector != (kind.name == "vectors") or (name in CONDITIONAL_FIGURES and not conditional):
        allowed = [f for f in DIRECTIONS if (f in VECTOR_FIGURES) == (kind.name == "vectors")
                   and (conditional or f not in CONDITIONAL_FIGURES)]
        raise UserError(f"tune.objective = {name!r} is not a figure this model reports; "
                        f"allowed: {', '.join(allowed)} (empty: the data's headline figure)")


def check_kind(generator, kind: kinds.Kind) -> None:
    """A ``UserError`` when ``generator`` does not make samples of ``kind``."""
    made = kinds.spec_of(generator)["kind"]
    if made != kind.name:
        raise UserError(f"the generator makes {made} but this data holds {kind.name}; name its "
                        "data with --set data.dataset=... (or --config)")


def report(evaluator, generator, model: str) -> dict:
    """The full evaluation of ``generator`` (named ``model``) as one JSON-ready dict: the
    settings, the figures and the real-vs-real floor beside them. A generator saved with the
    truncation trick is judged as saved (``figures``) and without it
    (``figures_without_truncation``)."""
    spec = kinds.spec_of(generator)
    floor = evaluator.floor(labelled=True) if spec["class_names"] is not None else evaluator.floor()
    result = {"model": model, "n": evaluator.n, "seed": evaluator.seed, **evaluator.describe(),
              "truncation": spec["truncation"], "figures": evaluator(generator)}
    if spec["truncation"]:  # the same generator and noise, the truncation trick off
        result["figures_without_truncation"] = evaluator(kinds.with_truncation(generator, 0))
    result["real_vs_real_floor"] = floor
    return result
