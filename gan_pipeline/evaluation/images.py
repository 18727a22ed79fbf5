"""Judging image generators in the features of the data's evaluation classifier.

Generated samples are compared with the source's reference images (TFDS: the test split):
``frechet_distance`` and ``kid`` use all of them; ``precision``/``recall`` and
``density``/``coverage`` use an equally sized random subset (the k-NN metrics assume equal
counts). With classes, the predicted-class histogram shows mode collapse. A conditional
generator's samples are spread evenly over its classes and also judged by label: the
``label_accuracy`` (the classifier agrees with the class asked for; overall, per class and the
worst class), the intra-class Frechet distance and the intra-class precision and recall (per
class, against the reference images of that class; their mean and the worst class). Those
samples are drawn as ``gan-pipeline sample --label L --seed L`` draws them: each class from its
own noise seed (the evaluation's seed + L), all of one label.

``fd_over_recall``, the search's default objective, is the Frechet distance over the recall
(``metrics.fd_over_recall``); for a conditional generator over the mean intra-class recall, so
that one kind of 7 for every 7 asked for does not pay either.
"""

from __future__ import annotations

import numpy as np

from gan_pipeline import evaluation, kinds, metrics, sampling
from gan_pipeline.evaluation import classifier as classifier_mod
from gan_pipeline.errors import UserError

MIN_REFERENCE = 20  # the k-NN metrics need a few neighbours on each side


class ImageEvaluator:
    objective = "frechet_distance"
    kind = kinds.IMAGES

    def __init__(self, source, n: int, seed: int = 0, collapse_max_share: float = 0.5):
        self.source, self.n, self.seed = source, n, seed
        self.collapse_max_share = collapse_max_share
        reference = len(source.reference_images())
        if reference < MIN_REFERENCE:  # before any classifier is trained for nothing
            raise UserError(f"{source.label} has {reference} reference images to evaluate "
                            f"against; the evaluation needs at least {MIN_REFERENCE} (more data, "
                            "or --set eval.every_epochs=0 to train without it)")
        self.classifier = source.classifier()
        self.real_features, self.real_probs = source.reference_features()
        # Class shares mean something only when the classifier learnt the data's classes.
        self.has_classes = source.class_names is not None

    def __call__(self, generator) -> dict:
        evaluation.check_kind(generator, self.kind)
        produced = tuple(generator.output_shape[1:])
        if produced != tuple(self.source.shape):
            raise UserError(f"the generator makes {produced} samples but {self.source.label} "
                            f"images are {tuple(self.source.shape)}; name its data with --set "
                            "data.dataset=... (or --config)")
        classes = kinds.spec_of(generator)["class_names"]
        if classes is not None and classes != self.source.class_names:
            raise UserError(f"the generator's classes {classes} are not those of "
                            f"{self.source.label} ({self.source.class_names}); name its data "
                            "with --set data.dataset=... (or --config)")
        if classes is None:
            samples, labels = sampling.sample_with_labels(generator, self.n, self.seed)
        else:  # as `sample --label L --seed L` draws them: a class, its own noise
            counts = np.bincount(sampling.spread_labels(self.n, len(classes)).reshape(-1),
                                 minlength=len(classes))
            drawn = [sampling.sample_with_labels(generator, int(n), self.seed + c, label=c)
                     for c, n in enumerate(counts) if n]
            samples = np.concatenate([d[0] for d in drawn])
            labels = np.concatenate([d[1] for d in drawn])
        return self.evaluate(samples, labels=labels)

    def evaluate(self, samples: np.ndarray, manifold: bool = True,
                 labels: np.ndarray | None = None) -> dict:
        """Figures for ``samples`` (N, H, W, C) in [-1, 1] against the reference images; with
        the ``labels`` they were made for (or are of), the per-class figures too."""
        feats, probs = self.classifier.features(samples)
        kid, kid_se = metrics.kernel_inception_distance(self.real_features, feats, seed=self.seed)
        out = {"n": int(len(samples)),
               "frechet_distance": metrics.frechet_distance(self.real_features, feats),
               "kid": kid, "kid_stderr": kid_se}
        if self.has_classes:
            hist = metrics.class_histogram(probs)
            out.update({"classifier_score": metrics.classifier_score(probs),
                        "class_min_share": float(hist.min()),
                        "class_max_share": float(hist.max()),
                        "class_histogram": [round(float(h), 5) for h in hist]})
        if labels is not None and self.has_classes:
            out.update(self.per_class(feats, probs, labels, manifold))
        if manifold:
            rng = np.random.default_rng(self.seed)
            idx = rng.choice(len(self.real_features), min(len(feats), len(self.real_features)),
                             replace=False)
            real = self.real_features[idx]
            k_pr, k_dc = min(3, len(real) - 1), min(5, len(real) - 1)
            out["precision"], out["recall"] = metrics.precision_recall(real, feats, k=k_pr)
            out["density"], out["coverage"] = metrics.density_coverage(real, feats, k=k_dc)
            out["fd_over_recall"] = metrics.fd_over_recall(
                out["frechet_distance"], out.get("intra_recall", out["recall"]))
        return out

    def per_class(self, feats: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                  manifold: bool = True) -> dict:
        """Label accuracy, intra-class Frechet distance and (``manifold``) intra-class precision
        and recall of samples made for ``labels``."""
        names = self.source.class_names
        overall, accuracy = metrics.label_accuracy(probs, labels, len(names))
        fds = metrics.intra_class_frechet(self.real_features, self.source.reference_labels(),
                                          feats, labels, len(names))
        judged = [c for c in range(len(names)) if accuracy[c] is not None]
        worst_acc = min(judged, key=lambda c: accuracy[c])
        measured = [c for c in range(len(names)) if fds[c] is not None]
        out = {"label_accuracy": overall,
               "label_accuracy_worst": accuracy[worst_acc],
               "label_accuracy_worst_class": names[worst_acc],
               "label_accuracy_per_class": {names[c]: round(accuracy[c], 5) for c in judged}}
        if measured:
            worst_fd = max(measured, key=lambda c: fds[c])
            out.update({"intra_fd": float(np.mean([fds[c] for c in measured])),
                        "intra_fd_worst": fds[worst_fd],
                        "intra_fd_worst_class": names[worst_fd],
                        "intra_fd_per_class": {names[c]: round(fds[c], 4) for c in measured}})
        if manifold:
            pr = metrics.intra_class_precision_recall(
                self.real_features, self.source.reference_labels(), feats, labels, len(names),
                seed=self.seed)
            judged = [c for c in range(len(names)) if pr[c] is not None]
            if judged:
                worst = min(judged, key=lambda c: pr[c][1])
                out.update({
                    "intra_precision": float(np.mean([pr[c][0] for c in judged])),
                    "intra_recall": float(np.mean([pr[c][1] for c in judged])),
                    "intra_recall_worst": pr[worst][1],
                    "intra_recall_worst_class": names[worst],
                    "precision_per_class": {names[c]: round(pr[c][0], 4) for c in judged},
                    "recall_per_class": {names[c]: round(pr[c][1], 4) for c in judged}})
        return out

    def collapse(self, figures: dict) -> str | None:
        """A message when one predicted class holds more than ``collapse_max_share`` of the
        samples (None without classes: nothing to judge it by)."""
        share = figures.get("class_max_share")
        if share is None or share <= self.collapse_max_share:
            return None
        top = int(np.argmax(figures["class_histogram"]))
        return (f"{share:.0%} of generated samples are classified as class "
                f"{self.classifier.class_names[top]!r} (limit {self.collapse_max_share:.0%}): "
                "mode collapse")

    def floor(self, n: int = 10_000, labelled: bool = False) -> dict:
        """The same figures for real images outside the reference: what a perfect generator
        would get (``labelled``: with their true labels, for conditional generators). Cached
        beside the classifier."""
        info = classifier_mod.read_info(self.classifier)
        key = f"floor_n{n}_seed{self.seed}" + ("_labelled" if labelled else "")
        if key not in info:
            if labelled:
                images, labels = self.source.floor_labelled(n, self.seed)
                info[key] = self.evaluate(images, labels=labels)
            else:
                info[key] = self.evaluate(self.source.floor_images(n, self.seed))
            classifier_mod.write_info(self.classifier, info)
        return info[key]

    def describe(self) -> dict:
        return {**self.source.describe(),
                "classifier": self.classifier.info | {"path": str(self.classifier.path)}}

    def prepare(self) -> dict:
        """What the prepare stage records: the classifier's accuracy."""
        return {"classifier_accuracy": self.classifier.info["test_accuracy"]}
